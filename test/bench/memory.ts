/**
 * `node test/bench/memory.ts [--quick] [--sections modules,idle,growth] [--out FILE]`
 *
 * Where a Ferry agent's memory goes, and how its cost grows with the digests it holds (see README.md,
 * "Memory"). Three sections, each a table of values with a baseline from the same run:
 *  - modules: RSS and heap after each group of modules is loaded (memory-probe.mjs, a child process),
 *    from bare Node through type stripping, the dependencies, to the whole agent; and the bundled build.
 *  - idle: a real agent (real containerd, no peers) from the TypeScript sources, from the bundle, and
 *    from the bundle with the chart's V8 flags; VmRSS and the agent's own heap figures after it settled.
 *  - growth: the production agent (bundle + V8 flags) with 20 real P2P peers (memory-peers.ts) that
 *    advertise 1k, 10k, 50k digests to it; then 10,000 digests of its own in containerd: VmRSS and
 *    CPU-seconds at each step, bytes per record.
 * Asserts nothing about time or size; fails only when something answers wrongly.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { parse as parseYaml } from 'yaml';
import { buildBundle } from '../../scripts/build.ts';
import {
  AGENT_PORTS,
  type AgentHandle,
  allocateBlock,
  type ContainerdHandle,
  parsePrometheus,
  type RegistryHandle,
  startAgent,
  startContainerd,
  startRegistry,
} from '../rig/index.ts';
import { buildManyIndex, pushManyIndex } from './fixtures.ts';
import { agentPid, exchange, keepAlive, pool, quietCtr, rssBytes } from './measure.ts';

const MiB = 1024 * 1024;
const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..', '..');
const bundle = join(root, 'packages', 'agent', 'dist', 'ferry.mjs');
/** The agent's environment in the chart: `NODE_OPTIONS` from values.yaml `nodeOptions`, and `MALLOC_ARENA_MAX`. */
const chartValues = parseYaml(
  readFileSync(join(root, 'deploy', 'charts', 'ferry', 'values.yaml'), 'utf8'),
) as {
  nodeOptions: string;
};
export const PRODUCTION_ENV: Record<string, string> = {
  NODE_OPTIONS: chartValues.nodeOptions,
  MALLOC_ARENA_MAX: '2',
};

const { values: args } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    sections: { type: 'string', default: 'modules,idle,growth' },
    out: { type: 'string' },
  },
});
const quick = args.quick ?? false;
const sections = new Set(args.sections.split(','));
const outFile =
  args.out ?? (quick ? join(tmpdir(), 'ferry-memory-quick.md') : join(here, 'results', 'memory.md'));
const started = performance.now();
const log = (msg: string) =>
  console.log(`[memory ${((performance.now() - started) / 1000).toFixed(0)}s] ${msg}`);
const mib = (b: number) => `${(b / MiB).toFixed(1)} MiB`;
const out: string[] = [];
const notes: string[] = [];

/** CPU-seconds (user + system) a process has used so far. */
function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100; // utime, stime in clock ticks (USER_HZ 100)
}

interface ProbeStep {
  step: string;
  rss: number;
  heapUsed: number;
  heapTotal: number;
  external: number;
}

function probe(bundled: boolean): ProbeStep[] {
  const text = execFileSync(
    process.execPath,
    [
      '--expose-gc',
      '--experimental-import-meta-resolve',
      join(here, 'memory-probe.mjs'),
      ...(bundled ? ['--bundle'] : []),
    ],
    { encoding: 'utf8' },
  );
  return text
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as ProbeStep);
}

function modules(): void {
  log('modules: loading module groups in a child process…');
  const steps = probe(false);
  const bundled = existsSync(bundle) ? probe(true) : [];
  const bare = steps[0]!;
  const lines = [
    '## Module load: RSS by cause (cumulative, after full GCs; baseline: bare Node in the same run)',
    '',
    '| step | RSS | Δ RSS | heap used | heap total | external |',
    '|---|---|---|---|---|---|',
  ];
  let prev = bare.rss;
  for (const s of steps) {
    lines.push(
      `| ${s.step} | ${mib(s.rss)} | +${mib(s.rss - prev)} | ${mib(s.heapUsed)} | ${mib(s.heapTotal)} | ${mib(s.external)} |`,
    );
    prev = s.rss;
  }
  if (bundled.length) {
    const b = bundled[bundled.length - 1]!;
    lines.push(
      `| **bundled build instead** (dist/ferry.mjs, all of the above but type stripping) | ${mib(b.rss)} | +${mib(b.rss - bundled[0]!.rss)} over bare | ${mib(b.heapUsed)} | ${mib(b.heapTotal)} | ${mib(b.external)} |`,
    );
  } else notes.push('No bundle (run `node scripts/build.ts`): the bundled rows are missing.');
  out.push(...lines, '');
}

/** Starts an agent on the node, waits until it settled; returns its VmRSS, CPU and heap figures. */
async function idleAgent(
  cd: ContainerdHandle,
  host: string,
  dir: string,
  name: string,
  entry: string | undefined,
  env: Record<string, string>,
): Promise<{ rss: number; heapUsed: number; heapTotal: number; external: number; cpu: number }> {
  const agent = await startAgent({
    name,
    host,
    containerd: cd,
    dir: join(dir, name),
    args: ['--log-level=info'],
    env,
    ...(entry ? { entry } : {}),
  });
  try {
    await sleep(quick ? 5_000 : 15_000);
    const pid = agentPid(host, AGENT_PORTS.registry);
    const m = parsePrometheus(await (await fetch(`${agent.opsUrl}/metrics`)).text());
    return {
      rss: rssBytes(pid),
      heapUsed: m.get('nodejs_heap_size_used_bytes') ?? 0,
      heapTotal: m.get('nodejs_heap_size_total_bytes') ?? 0,
      external: m.get('nodejs_external_memory_bytes') ?? 0,
      cpu: cpuSeconds(pid),
    };
  } finally {
    await agent.stop();
  }
}

async function idle(cd: ContainerdHandle, host: string, dir: string): Promise<void> {
  const variants: [string, string | undefined, Record<string, string>][] = [
    ['TypeScript sources (type stripping), Node defaults', undefined, {}],
    ['bundled build (dist/ferry.mjs), Node defaults', bundle, {}],
    [
      `bundled build + the chart's environment (NODE_OPTIONS="${PRODUCTION_ENV.NODE_OPTIONS}", MALLOC_ARENA_MAX=2)`,
      bundle,
      PRODUCTION_ENV,
    ],
  ];
  const rows: string[] = [];
  let baseline: number | undefined;
  for (const [i, [what, entry, env]] of variants.entries()) {
    if (entry && !existsSync(entry)) continue;
    log(`idle: ${what}…`);
    const r = await idleAgent(cd, host, dir, `idle${i}`, entry, env);
    baseline ??= r.rss;
    rows.push(
      `| ${what} | ${mib(r.rss)} | ${(r.rss / baseline).toFixed(2)}× | ${(r.rss / MiB / 110).toFixed(2)}× | ${mib(r.heapUsed)} | ${mib(r.heapTotal)} | ${mib(r.external)} | ${r.cpu.toFixed(2)} s |`,
    );
  }
  out.push(
    `## Idle agent (real containerd, no peers, ${quick ? 5 : 15} s after start)`,
    '',
    '| agent | VmRSS | vs sources | vs target 110 MiB | heap used | heap total | external | CPU since start |',
    '|---|---|---|---|---|---|---|---|',
    ...rows,
    '',
  );
}

/** The peers harness: N P2P nodes in a child process, driven over stdin. */
class Peers {
  private readonly child: ChildProcess;
  private readonly answers: ((v: Record<string, unknown>) => void)[] = [];
  private constructor(child: ChildProcess) {
    this.child = child;
    createInterface({ input: child.stdout! }).on('line', (l) => {
      try {
        this.answers.shift()?.(JSON.parse(l) as Record<string, unknown>);
      } catch {
        // not an answer (a library's console output)
      }
    });
  }
  static async start(bootstrap: string, hosts: string[]): Promise<Peers> {
    const child = spawn(
      process.execPath,
      [join(here, 'memory-peers.ts'), '--bootstrap', bootstrap, '--hosts', hosts.join(',')],
      { stdio: ['pipe', 'pipe', 'inherit'] },
    );
    const p = new Peers(child);
    await p.next();
    return p;
  }
  private next(): Promise<Record<string, unknown>> {
    return new Promise((resolve, reject) => {
      this.answers.push(resolve);
      this.child.once('exit', (code) => reject(new Error(`peers harness exited (${code})`)));
    });
  }
  async advertise(n: number): Promise<{ ms: number; keys: string[] }> {
    const answer = this.next();
    this.child.stdin!.write(`advertise ${n}\n`);
    const a = await answer;
    if (a.ok !== true) throw new Error(`peers: ${String(a.error)}`);
    return a as unknown as { ms: number; keys: string[] };
  }
  async stop(): Promise<void> {
    this.child.stdin!.write('quit\n');
    await new Promise((r) => this.child.once('exit', r));
  }
}

/** How many of `keys` the agent finds on a peer (HEAD through its mirror path). */
async function found(agent: AgentHandle, keys: string[]): Promise<number> {
  const conn = keepAlive(8);
  let ok = 0;
  await pool(keys, 8, async (d) => {
    const r = await exchange(`${agent.registryUrl}/v2/bench/peers/blobs/${d}?ns=peers.invalid`, {
      agent: conn,
      method: 'HEAD',
      timeoutMs: 30_000,
    }).catch(() => undefined);
    if (r?.status === 200) ok++;
  });
  conn.destroy();
  return ok;
}

async function growth(
  cd: ContainerdHandle,
  upstream: RegistryHandle,
  block: ReturnType<typeof allocateBlock>,
  dir: string,
): Promise<void> {
  const host = block.node(1);
  const agent = await startAgent({
    name: 'growth',
    host,
    containerd: cd,
    dir: join(dir, 'growth'),
    // A lookup on the busy 2-core rig can outlast the rig's 1 s resolve timeout; this only checks records.
    args: ['--log-level=info', '--mirror-resolve-timeout=5s'],
    env: PRODUCTION_ENV,
    ...(existsSync(bundle) ? { entry: bundle } : {}),
  });
  const peerHosts = Array.from({ length: 20 }, (_, i) => block.node(i + 2));
  const peers = await Peers.start(`${host}:${AGENT_PORTS.router}`, peerHosts);
  try {
    await agent.waitReady(60_000);
    const pid = agentPid(host, AGENT_PORTS.registry);
    const settleMs = quick ? 5_000 : 15_000;
    await sleep(settleMs);
    const steps = quick ? [0, 1_000, 5_000] : [0, 1_000, 10_000, 50_000];
    const rows: {
      records: number;
      own: number;
      rss: number;
      heapUsed: number;
      heapTotal: number;
      cpu: number;
      ms: number;
    }[] = [];
    const sample = async () => {
      const m = parsePrometheus(await (await fetch(`${agent.opsUrl}/metrics`)).text());
      return {
        rss: rssBytes(pid),
        heapUsed: m.get('nodejs_heap_size_used_bytes') ?? 0,
        heapTotal: m.get('nodejs_heap_size_total_bytes') ?? 0,
        cpu: cpuSeconds(pid),
      };
    };
    let held = 0;
    let sampleKeys: string[] = [];
    for (const target of steps) {
      let ms = 0;
      if (target > held) {
        log(`growth: peers advertise ${target - held} more digests…`);
        const r = await peers.advertise(target - held);
        sampleKeys = r.keys;
        ms = r.ms;
        held = target;
        await sleep(settleMs);
      }
      rows.push({ records: held, own: 0, ...(await sample()), ms });
      // After the sample (lookups cost memory too): do the records answer?
      if (sampleKeys.length) {
        const hit = await found(agent, sampleKeys);
        notes.push(
          `Growth step ${target}: ${hit} of ${sampleKeys.length} sampled peer digests found through the agent (after the sample).`,
        );
        sampleKeys = [];
      }
    }
    // Own digests: an index of tiny images fetched into containerd; the tracker advertises them.
    const foreign = quick ? 249 : 2_499;
    const many = buildManyIndex(foreign);
    log(`growth: ${many.digests.length} own digests into containerd…`);
    await pushManyIndex(upstream.url, 'bench/many', 'v1', many);
    const emptyHosts = mkdtempSync(join(tmpdir(), 'ferry-memory-hosts-'));
    const t0 = performance.now();
    await quietCtr(cd.socket, [
      'content',
      'fetch',
      '--all-platforms',
      '--plain-http',
      '--hosts-dir',
      emptyHosts,
      `${new URL(upstream.url).host}/bench/many:v1`,
    ]);
    rmSync(emptyHosts, { recursive: true, force: true });
    // Until the tracker advertised them (its counts are in the metrics), then settle.
    const deadline = Date.now() + 300_000;
    while (Date.now() < deadline) {
      const advertised = await agent.metric('ferry_advertised_keys', { kind: 'digest' }).catch(() => 0);
      if (advertised >= many.digests.length) break;
      await sleep(1_000);
    }
    const ms = performance.now() - t0;
    await sleep(settleMs);
    rows.push({ records: held, own: many.digests.length, ...(await sample()), ms });

    const base = rows[0]!;
    const lines = [
      '## Growth: the production agent vs the digests it holds (baseline: the same agent with none)',
      '',
      '| provider records from 20 peers | own digests | VmRSS | vs none | Δ RSS per record | heap used | Δ heap used per record | heap total | CPU-seconds since start | Δ CPU-s | step took |',
      '|---|---|---|---|---|---|---|---|---|---|---|',
    ];
    let prev = base;
    for (const r of rows) {
      const n = r.records + r.own - (prev.records + prev.own);
      lines.push(
        `| ${r.records.toLocaleString('en')} | ${r.own.toLocaleString('en')} | ${mib(r.rss)} | ${(r.rss / base.rss).toFixed(2)}× | ${n > 0 ? `${Math.round((r.rss - prev.rss) / n)} B` : '—'} | ${mib(r.heapUsed)} | ${n > 0 ? `${Math.round((r.heapUsed - prev.heapUsed) / n)} B` : '—'} | ${mib(r.heapTotal)} | ${r.cpu.toFixed(1)} | ${(r.cpu - prev.cpu).toFixed(1)} | ${(r.ms / 1000).toFixed(1)} s |`,
      );
      prev = r;
    }
    const last = rows[rows.length - 1]!;
    lines.push(
      '',
      `Whole: ${(last.records + last.own).toLocaleString('en')} digests held, ${mib(last.rss)} VmRSS (target ≤ 150 MiB: ${last.rss / MiB <= 150 ? 'met' : 'NOT met'}); ${Math.round((last.rss - base.rss) / (last.records + last.own))} B per digest over the idle agent.`,
      '',
    );
    out.push(...lines);
  } finally {
    await peers.stop().catch(() => undefined);
    await agent.stop();
  }
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'ferry-memory-'));
  const block = allocateBlock();
  let cd: ContainerdHandle | undefined;
  let upstream: RegistryHandle | undefined;
  try {
    log('building the bundle (scripts/build.ts)…');
    await buildBundle();
    if (sections.has('modules')) modules();
    if (sections.has('idle') || sections.has('growth')) {
      cd = await startContainerd({ name: 'node1', host: block.node(1), dir: join(dir, 'containerd') });
    }
    if (sections.has('idle')) await idle(cd!, block.node(1), dir);
    if (sections.has('growth')) {
      upstream = await startRegistry({ host: block.upstream, dir: join(dir, 'upstream') });
      await growth(cd!, upstream, block, dir);
    }
    const md = [
      `# Ferry memory benchmark (${quick ? 'quick' : 'full'} run)`,
      '',
      `${new Date().toISOString()} · Node ${process.version} · 1-minute load average ${loadavg()[0]!.toFixed(1)} at the end. Nothing here is asserted.`,
      '',
      ...out,
      ...notes.map((n) => `- ${n}`),
      '',
    ].join('\n');
    mkdirSync(dirname(outFile), { recursive: true });
    writeFileSync(outFile, md);
    console.log(`\n${md}`);
    log(`written to ${outFile}`);
  } finally {
    await upstream?.dispose().catch(() => undefined);
    await cd?.dispose().catch(() => undefined);
    block.release();
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(`memory bench failed: ${(err as Error).stack ?? err}`);
  process.exitCode = 1;
});
