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
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { buildBundle } from '../../scripts/build.ts';
import {
  AGENT_PORTS,
  allocateBlock,
  type ContainerdHandle,
  chartEnv,
  imageNodeArgs,
  type RegistryHandle,
  startAgent,
  startContainerd,
  startRegistry,
} from '../rig/index.ts';
import { type AgentMemory, agentMemory, agentPid, mib, writeResults } from './measure.ts';
import { growth } from './memory-growth.ts';

const MiB = 1024 * 1024;
const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..', '..');
const bundle = join(root, 'packages', 'agent', 'dist', 'ferry.mjs');
/** The agent's environment in the chart (NODE_OPTIONS and the malloc settings, test/rig/chart-env.ts). */
export const PRODUCTION_ENV: Record<string, string> = chartEnv();
/** Node's flags in the image's ENTRYPOINT (test/rig/chart-env.ts). */
const PRODUCTION_ARGS = imageNodeArgs();

const { values: args } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    'heap-snapshot': { type: 'boolean', default: false },
    sections: { type: 'string', default: 'modules,idle,growth' },
    /** Idle rows on top of the chart's: `;`-separated, each Node flags and NAME=value env words. */
    'idle-candidate': { type: 'string', default: '' },
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
const out: string[] = [];
const notes: string[] = [];

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
  nodeArgs: string[],
): Promise<AgentMemory> {
  const agent = await startAgent({
    name,
    host,
    containerd: cd,
    dir: join(dir, name),
    args: ['--log-level=info'],
    env,
    nodeArgs,
    ...(entry ? { entry } : {}),
  });
  try {
    await sleep(quick ? 5_000 : 15_000);
    const pid = agentPid(host, AGENT_PORTS.registry);
    return await agentMemory(agent.opsUrl, pid);
  } finally {
    await agent.stop();
  }
}

async function idle(cd: ContainerdHandle, host: string, dir: string): Promise<void> {
  const variants: [string, string | undefined, Record<string, string>, string[]][] = [
    ['TypeScript sources (type stripping), Node defaults', undefined, {}, []],
    ['bundled build (dist/ferry.mjs), Node defaults', bundle, {}, []],
    [
      `bundled build + the chart's environment (${Object.entries(PRODUCTION_ENV)
        .map(([k, v]) => `${k}="${v}"`)
        .join(', ')})`,
      bundle,
      PRODUCTION_ENV,
      [],
    ],
  ];
  if (PRODUCTION_ARGS.length)
    variants.push([
      `as in production: the same + the image's \`node ${PRODUCTION_ARGS.join(' ')}\``,
      bundle,
      PRODUCTION_ENV,
      PRODUCTION_ARGS,
    ]);
  // Candidates, `;`-separated: `NAME=value` words go to the environment (over the chart's; `NAME=` drops
  // it), `--no-image-flags` leaves out the ENTRYPOINT's flags, other words go on Node's command line (V8
  // accepts only some flags in NODE_OPTIONS, not --optimize-for-size).
  for (const candidate of (args['idle-candidate'] ?? '').split(';')) {
    const words = candidate.trim().split(/\s+/).filter(Boolean);
    if (words.length === 0) continue;
    const env = { ...PRODUCTION_ENV };
    const nodeArgs: string[] = words.includes('--no-image-flags') ? [] : [...PRODUCTION_ARGS];
    for (const w of words) {
      const m = /^([A-Z_][A-Z0-9_]*)=(.*)$/.exec(w);
      if (m?.[2] === '') delete env[m[1]!];
      else if (m) env[m[1]!] = m[2]!;
      else if (w !== '--no-image-flags') nodeArgs.push(w);
    }
    variants.push([`as in production + \`${words.join(' ')}\` (candidate)`, bundle, env, nodeArgs]);
  }
  const rows: string[] = [];
  let baseline: number | undefined;
  for (const [i, [what, entry, env, nodeArgs]] of variants.entries()) {
    if (entry && !existsSync(entry)) continue;
    log(`idle: ${what}…`);
    const r = await idleAgent(cd, host, dir, `idle${i}`, entry, env, nodeArgs);
    baseline ??= r.rss;
    const code =
      (r.spaces.code ?? r.spaces.code_space ?? 0) +
      (r.spaces.code_large_object ?? r.spaces.code_large_object_space ?? 0);
    rows.push(
      `| ${what} | ${mib(r.rss)} | ${(r.rss / baseline).toFixed(2)}× | ${(r.rss / MiB / 110).toFixed(2)}× | ${mib(r.fileRss)} | ${mib(r.anonRss)} | ${mib(r.heapTotal)} | ${mib(r.heapUsed)} | ${mib(code)} | ${mib(r.external)} | ${mib(r.anonRss - r.heapTotal - r.external)} | ${r.cpu.toFixed(2)} s |`,
    );
  }
  out.push(
    `## Idle agent (real containerd, no peers, ${quick ? 5 : 15} s after start)`,
    '',
    '| agent | VmRSS | vs sources | vs target 110 MiB | file-backed (Node binary, libraries) | anonymous | of it: V8 heap total | heap used | code space used | external (buffers) | rest of anonymous (malloc, stacks, V8 outside the heap) | CPU since start |',
    '|---|---|---|---|---|---|---|---|---|---|---|---|',
    ...rows,
    '',
    "File-backed pages are the same files for every process on the node (and reclaimable); anonymous memory is the agent's own. The heap total and external memory are resident only as far as they were touched, so the rest is approximate.",
    '',
  );
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
      out.push(
        ...(await growth({
          cd: cd!,
          upstream,
          block,
          dir,
          quick,
          env: PRODUCTION_ENV,
          nodeArgs: PRODUCTION_ARGS,
          entry: bundle,
          heapSnapshot: args['heap-snapshot'] ?? false,
          log,
          notes,
        })),
      );
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
    writeResults(outFile, md, log);
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
