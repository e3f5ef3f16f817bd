/**
 * The growth section of memory.ts: the production agent with 20 real P2P peers (memory-peers.ts, a child
 * process) that advertise 1k, 10k, 50k digests to it, then digests of its own in containerd; VmRSS, heap,
 * CPU-seconds at each step and bytes per record, as a Markdown table; optionally a heap snapshot summary.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import {
  type AddressBlock,
  AGENT_PORTS,
  type AgentHandle,
  type ContainerdHandle,
  type RegistryHandle,
  startAgent,
  waitFor,
} from '../rig/index.ts';
import { buildManyIndex, pushManyIndex } from './fixtures.ts';
import { summarise } from './heap-summary.ts';
import {
  type AgentMemory,
  agentMemory,
  agentPid,
  exchange,
  keepAlive,
  mib,
  pool,
  quietCtr,
} from './measure.ts';

const MiB = 1024 * 1024;
const here = dirname(fileURLToPath(import.meta.url));

/** One step of the growth table. */
interface Row extends AgentMemory {
  records: number;
  own: number;
  ms: number;
}

/** What the growth section needs from memory.ts. */
export interface GrowthOptions {
  cd: ContainerdHandle;
  upstream: RegistryHandle;
  block: AddressBlock;
  dir: string;
  quick: boolean;
  /** The agent's environment (the chart's). */
  env: Record<string, string>;
  /** Node's flags before the entry (the image's). */
  nodeArgs: string[];
  /** The CLI file the agent runs (the bundle when it exists). */
  entry: string;
  heapSnapshot: boolean;
  log: (msg: string) => void;
  notes: string[];
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
  static async start(bootstrap: string, hosts: string[], keyFile: string): Promise<Peers> {
    const child = spawn(
      process.execPath,
      [
        join(here, 'memory-peers.ts'),
        '--bootstrap',
        bootstrap,
        '--hosts',
        hosts.join(','),
        '--network-key-file',
        keyFile,
      ],
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
  async advertise(n: number): Promise<{ ms: number; settledMs: number; keys: string[]; unsigned: number }> {
    const answer = this.next();
    this.child.stdin!.write(`advertise ${n}\n`);
    const a = await answer;
    if (a.ok !== true) throw new Error(`peers: ${String(a.error)}`);
    return a as unknown as { ms: number; settledMs: number; keys: string[]; unsigned: number };
  }
  /** Stops the harness; at once when it already exited (it can crash under the records' traffic). */
  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise((r) => this.child.once('exit', r));
    this.child.stdin!.write('quit\n');
    await exited;
  }
}

/** Takes a heap snapshot of the agent (SIGUSR2, written to `dir`) and returns its summary as Markdown. */
async function heapSnapshot(pid: number, dir: string, log: (msg: string) => void): Promise<string[]> {
  log('heap snapshot of the agent…');
  process.kill(pid, 'SIGUSR2');
  let lastSize = -1;
  const file = await waitFor(
    () => {
      const f = readdirSync(dir).find((n) => n.endsWith('.heapsnapshot'));
      if (!f) return undefined;
      // Written once its size stops changing.
      const size = statSync(join(dir, f)).size;
      const done = size > 0 && size === lastSize;
      lastSize = size;
      return done ? join(dir, f) : undefined;
    },
    { timeoutMs: 120_000, intervalMs: 1_000, what: 'the heap snapshot' },
  );
  const s = summarise(file, 15);
  return [
    `### Heap snapshot of the agent at the last step (self sizes, ${mib(s.total)} in all)`,
    '',
    '| type / constructor | self size | count |',
    '|---|---|---|',
    ...s.byName.map(([k, size, count]) => `| ${k} | ${mib(size)} | ${count} |`),
    '',
  ];
}
/** Adds 4 × (foreign + 1) + 1 digests to the agent's containerd; the row once the tracker advertised them. */
async function ownDigests(
  o: GrowthOptions,
  agent: AgentHandle,
  foreign: number,
  held: number,
  sample: () => ReturnType<typeof agentMemory>,
  settleMs: number,
): Promise<Row> {
  const many = buildManyIndex(foreign);
  o.log(`growth: ${many.digests.length} own digests into containerd…`);
  await pushManyIndex(o.upstream.url, 'bench/many', 'v1', many);
  const emptyHosts = mkdtempSync(join(tmpdir(), 'ferry-memory-hosts-'));
  const t0 = performance.now();
  try {
    await quietCtr(
      o.cd.socket,
      [
        'content',
        'fetch',
        '--all-platforms',
        '--plain-http',
        '--hosts-dir',
        emptyHosts,
        `${new URL(o.upstream.url).host}/bench/many:v1`,
      ],
      1_800_000,
    );
  } finally {
    rmSync(emptyHosts, { recursive: true, force: true });
  }
  // Until the tracker advertised them (its counts are in the metrics), then settle.
  const deadline = Date.now() + 300_000;
  while (Date.now() < deadline) {
    const advertised = await agent.metric('ferry_advertised_keys', { kind: 'digest' }).catch(() => 0);
    if (advertised >= many.digests.length) break;
    await sleep(1_000);
  }
  const ms = performance.now() - t0;
  await sleep(settleMs);
  return { records: held, own: many.digests.length, ...(await sample()), ms };
}

/**
 * How many of `keys` the agent finds on a peer (HEAD through its mirror path, which checks the peer's
 * signed answer): a first pass, then the misses again until `deadlineMs` (the peers' process may still be
 * busy sending records among its 20 nodes); and the agent's reasons for up to three of the last misses.
 */
async function found(
  agent: AgentHandle,
  keys: string[],
  deadlineMs: number,
): Promise<{ first: number; ok: number; why: string[] }> {
  const conn = keepAlive(8);
  let missed = keys;
  let first: number | undefined;
  const until = Date.now() + deadlineMs;
  do {
    const left: string[] = [];
    await pool(missed, 8, async (d) => {
      const r = await exchange(`${agent.registryUrl}/v2/bench/peers/blobs/${d}?ns=peers.invalid`, {
        agent: conn,
        method: 'HEAD',
        timeoutMs: 30_000,
      }).catch(() => undefined);
      if (r?.status !== 200) left.push(d);
    });
    missed = left;
    first ??= keys.length - missed.length;
    if (missed.length) await sleep(2_000);
  } while (missed.length && Date.now() < until);
  conn.destroy();
  const log = agent.logs(4_000_000).split('\n');
  const why = new Set<string>();
  for (const d of missed) {
    const line = log.findLast((l) => l.includes(d) && l.includes('mirror request'));
    const error = line === undefined ? 'no log line' : /"error":"([^"]{0,200})/.exec(line)?.[1];
    if (error !== undefined)
      why.add(error.replace(/sha256:[a-f0-9]{64}/g, '<digest>').replace(/12D3\w+/g, '<peer>'));
    if (why.size >= 3) break;
  }
  return { first, ok: keys.length - missed.length, why: [...why] };
}

/** Runs the growth section; returns its Markdown lines. */
export async function growth(o: GrowthOptions): Promise<string[]> {
  const { cd, block, dir, quick, log, notes } = o;
  const host = block.node(1);
  // The cluster's network key: the agent and its peers form a private network and sign peer requests.
  mkdirSync(join(dir, 'growth'), { recursive: true });
  const keyFile = join(dir, 'growth', 'network.key');
  writeFileSync(keyFile, `${randomBytes(32).toString('hex')}\n`, { mode: 0o600 });
  const agent = await startAgent({
    name: 'growth',
    host,
    containerd: cd,
    dir: join(dir, 'growth'),
    // A lookup on the busy 2-core rig can outlast the rig's 1 s resolve timeout; this only checks records.
    args: ['--log-level=info', '--mirror-resolve-timeout=5s', `--network-key-file=${keyFile}`],
    env: o.heapSnapshot
      ? {
          ...o.env,
          NODE_OPTIONS: `${o.env.NODE_OPTIONS ?? ''} --heapsnapshot-signal=SIGUSR2 --diagnostic-dir=${dir}`,
        }
      : o.env,
    nodeArgs: o.nodeArgs,
    ...(existsSync(o.entry) ? { entry: o.entry } : {}),
  });
  const peerHosts = Array.from({ length: 20 }, (_, i) => block.node(i + 2));
  const peers = await Peers.start(`${host}:${AGENT_PORTS.router}`, peerHosts, keyFile);
  try {
    await agent.waitReady(60_000);
    const pid = agentPid(host, AGENT_PORTS.registry);
    const settleMs = quick ? 5_000 : 15_000;
    await sleep(settleMs);
    const steps = quick ? [0, 1_000, 5_000] : [0, 1_000, 10_000, 50_000];
    const rows: Row[] = [];
    const sample = () => agentMemory(agent.opsUrl, pid);
    let held = 0;
    let sampleKeys: string[] = [];
    let unsigned = 0;
    for (const target of steps) {
      let ms = 0;
      if (target > held) {
        log(`growth: peers advertise ${target - held} more digests…`);
        const r = await peers.advertise(target - held);
        sampleKeys = r.keys;
        unsigned = r.unsigned;
        ms = r.ms;
        notes.push(
          `Growth step ${target}: the peers' advertise calls took ${(r.ms / 1000).toFixed(1)} s, their traffic among themselves ${(r.settledMs / 1000).toFixed(1)} s more.`,
        );
        held = target;
        await sleep(settleMs);
      }
      rows.push({ records: held, own: 0, ...(await sample()), ms });
      // After the sample (lookups cost memory too): do the records answer?
      if (sampleKeys.length) {
        const hit = await found(agent, sampleKeys, quick ? 30_000 : 90_000);
        notes.push(
          `Growth step ${target}: ${hit.ok} of ${sampleKeys.length} sampled peer digests found through the agent after the sample (${hit.first} at the first pass, the misses retried for up to ${quick ? 30 : 90} s)${hit.why.length ? `; misses: ${hit.why.join(' | ')}` : ''}; unsigned requests the peers refused: ${unsigned}.`,
        );
        sampleKeys = [];
      }
    }
    // Own digests: an index of tiny images fetched into containerd; the tracker advertises them. A failure
    // here (a fetch that outlasts its deadline on a loaded machine) is noted; the rows so far still count.
    try {
      rows.push(await ownDigests(o, agent, quick ? 249 : 2_499, held, sample, settleMs));
    } catch (err) {
      notes.push(
        `Own digests step FAILED: ${String((err as Error).message)
          .split('\n')[0]!
          .slice(0, 300)}`,
      );
    }

    const base = rows[0]!;
    const lines = [
      '## Growth: the production agent vs the digests it holds (baseline: the same agent with none)',
      '',
      '| provider records from 20 peers | own digests | VmRSS | vs none | Δ RSS per record | anonymous | Δ anonymous per record | file-backed | heap used | Δ heap used per record | heap total | external | rest of anonymous (malloc, stacks) | CPU-seconds since start | Δ CPU-s | step took |',
      '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|',
    ];
    let prev = base;
    for (const r of rows) {
      const n = r.records + r.own - (prev.records + prev.own);
      lines.push(
        `| ${r.records.toLocaleString('en')} | ${r.own.toLocaleString('en')} | ${mib(r.rss)} | ${(r.rss / base.rss).toFixed(2)}× | ${n > 0 ? `${Math.round((r.rss - prev.rss) / n)} B` : '—'} | ${mib(r.anonRss)} | ${n > 0 ? `${Math.round((r.anonRss - prev.anonRss) / n)} B` : '—'} | ${mib(r.fileRss)} | ${mib(r.heapUsed)} | ${n > 0 ? `${Math.round((r.heapUsed - prev.heapUsed) / n)} B` : '—'} | ${mib(r.heapTotal)} | ${mib(r.external)} | ${mib(r.anonRss - r.heapTotal - r.external)} | ${r.cpu.toFixed(1)} | ${(r.cpu - prev.cpu).toFixed(1)} | ${(r.ms / 1000).toFixed(1)} s |`,
      );
      prev = r;
    }
    const last = rows[rows.length - 1]!;
    lines.push(
      '',
      `Whole: ${(last.records + last.own).toLocaleString('en')} digests held, ${mib(last.rss)} VmRSS (target ≤ 150 MiB: ${last.rss / MiB <= 150 ? 'met' : 'NOT met'}); ${Math.round((last.rss - base.rss) / (last.records + last.own))} B per digest over the idle agent.`,
      '',
    );
    if (o.heapSnapshot) lines.push(...(await heapSnapshot(pid, dir, log)));
    return lines;
  } finally {
    await peers.stop().catch(() => undefined);
    await agent.stop();
  }
}
