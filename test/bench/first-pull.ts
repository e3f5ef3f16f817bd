/**
 * `node test/bench/first-pull.ts [--sizes 256,1024] [--rate 40] [--modes off,on] [--window 1s] [--cpu-prof DIR] [--out FILE]`
 *
 * First-pull sharing figure: a 4-node rig (real docker-registry behind the shaping proxy, real containerd
 * daemons, real agents). All blob bytes of the upstream share one link at `--rate` MB/s, so the link is the
 * bottleneck. For each image size (MiB, 4 layers) and with sharing off (`--first-pull=false`, the
 * baseline) and on, a fresh image is pulled by one node alone, then another fresh image by all four at
 * once. Reported: upstream blob bytes / image bytes, and slowest of the four pulls / the single pull;
 * and (issue 10, scenario 8) the single pull through the agent's pull-through against the single pull
 * with sharing off (the agent answers 404 and containerd fetches from the upstream itself).
 * `--window` is the agents' mirror resolve timeout, which is also the first-pull election window: the rig's
 * 1 s by default (agents on a loaded test machine), `20ms` for the agent's production default.
 * `--cpu-prof DIR` runs the agents under `node --cpu-prof` and writes their profiles to DIR when they stop.
 * Writes a Markdown table (default test/bench/results/first-pull.md) and prints it. Asserts nothing.
 */
import { writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { type BuiltImage, buildImage, type Cluster, pushImage, startCluster } from '../rig/index.ts';
import { rigCpuSeconds } from './measure.ts';

const MiB = 1024 * 1024;
const here = dirname(fileURLToPath(import.meta.url));
const { values: args } = parseArgs({
  options: {
    sizes: { type: 'string', default: '256,1024' },
    rate: { type: 'string', default: '40' },
    /** Sharing off (the baseline) and/or on; one mode alone is for profiling. */
    modes: { type: 'string', default: 'off,on' },
    /** The agents' mirror resolve timeout (the election window); empty: the rig's setting. */
    window: { type: 'string', default: '' },
    /** Directory for the agents' CPU profiles (`node --cpu-prof`); empty: no profiling. */
    'cpu-prof': { type: 'string', default: '' },
    out: { type: 'string', default: join(here, 'results', 'first-pull.md') },
  },
});
const sizes = (args.sizes ?? '').split(',').map((s) => Number(s.trim()));
const rate = Number(args.rate) * 1e6;
const started = performance.now();
const log = (m: string) =>
  console.log(`[first-pull ${((performance.now() - started) / 1000).toFixed(0)}s] ${m}`);
const blobBytes = (img: BuiltImage) => img.config.size + img.layers.reduce((n, l) => n + l.size, 0);

let seq = 0;
async function fresh(cluster: Cluster, sizeMiB: number): Promise<{ img: BuiltImage; ref: string }> {
  const layer = Math.floor((sizeMiB * MiB) / 4);
  const img = await buildImage({ layers: [layer, layer, layer, layer], mediaTypes: 'oci' });
  const repo = `bench/fp${++seq}`;
  await pushImage(cluster.upstream.url, repo, 'v1', img);
  return { img, ref: cluster.ref(`${repo}:v1`) };
}

async function setSharing(cluster: Cluster, on: boolean): Promise<void> {
  for (const n of cluster.nodes) await n.agent?.stop();
  const window = args.window ? [`--mirror-resolve-timeout=${args.window}`] : [];
  await Promise.all(cluster.nodes.map((n) => n.startAgent([...window, ...(on ? ['--first-pull'] : [])])));
  await Promise.all(cluster.nodes.map((n) => n.agent?.waitReady(120_000)));
}

async function timed(p: () => Promise<void>): Promise<number> {
  const t0 = performance.now();
  await p();
  return (performance.now() - t0) / 1000;
}

/** Each agent's own CPU-seconds so far (all its threads: `process_cpu_seconds_total`), in node order. */
const agentCpu = (cluster: Cluster) =>
  Promise.all(cluster.nodes.map(async (n) => (await n.agent?.metric('process_cpu_seconds_total')) ?? 0));

/**
 * Runs `p` and gives the CPU-seconds the whole rig used meanwhile, by command name, and each agent's
 * (node order).
 */
async function costOf<T>(
  cluster: Cluster,
  p: () => Promise<T>,
): Promise<{ value: T; cpu: Map<string, number>; agents: number[] }> {
  const before = rigCpuSeconds();
  const agentsBefore = await agentCpu(cluster);
  const value = await p();
  const agentsAfter = await agentCpu(cluster);
  const after = rigCpuSeconds();
  const cpu = new Map<string, number>();
  for (const [name, s] of after) cpu.set(name, s - (before.get(name) ?? 0));
  return { value, cpu, agents: agentsAfter.map((s, i) => s - (agentsBefore[i] ?? 0)) };
}

const total = (cpu: Map<string, number>) => [...cpu.values()].reduce((a, b) => a + b, 0);
const split = (cpu: Map<string, number>) =>
  [...cpu]
    .filter(([, s]) => s >= 0.05)
    .sort((a, b) => b[1] - a[1])
    .map(([name, s]) => `${name} ${s.toFixed(1)}`)
    .join(', ');
const cores = cpus().length;
const each = (xs: number[]) => xs.map((x) => x.toFixed(1)).join(' / ');

interface Result {
  size: number;
  mode: 'off' | 'on';
  single: number;
  slowest: number;
  /** Each of the four pulls, in node order (s). */
  times: number[];
  upstreamRatio: number;
  /** CPU-seconds of the whole rig during the single pull and during the four pulls, by command name. */
  singleCpu: Map<string, number>;
  fourCpu: Map<string, number>;
  /** Each agent's CPU-seconds during the single pull (node 0 pulls) and during the four pulls. */
  singleAgents: number[];
  fourAgents: number[];
}

const profDir = args['cpu-prof'] ?? '';
const cluster = await startCluster({
  nodes: 4,
  proxy: { rateBytesPerSec: rate },
  ...(profDir === '' ? {} : { agentNodeArgs: ['--cpu-prof', `--cpu-prof-dir=${profDir}`] }),
});
const results: Result[] = [];
try {
  for (const size of sizes) {
    for (const mode of (['off', 'on'] as const).filter((m) => (args.modes ?? '').split(',').includes(m))) {
      await setSharing(cluster, mode === 'on');
      const one = await fresh(cluster, size);
      const {
        value: single,
        cpu: singleCpu,
        agents: singleAgents,
      } = await costOf(cluster, () => timed(() => cluster.nodes[0]!.pull(one.ref, { timeoutMs: 1_800_000 })));
      const four = await fresh(cluster, size);
      cluster.proxy?.reset();
      const {
        value: times,
        cpu: fourCpu,
        agents: fourAgents,
      } = await costOf(cluster, () =>
        Promise.all(cluster.nodes.map((n) => timed(() => n.pull(four.ref, { timeoutMs: 1_800_000 })))),
      );
      const r: Result = {
        size,
        mode,
        single,
        slowest: Math.max(...times),
        times,
        upstreamRatio: (cluster.proxy?.blobBytes() ?? 0) / blobBytes(four.img),
        singleCpu,
        fourCpu,
        singleAgents,
        fourAgents,
      };
      results.push(r);
      log(
        `${size} MiB sharing ${mode}: single ${single.toFixed(1)} s (CPU-s: ${split(singleCpu)}; agents ${each(singleAgents)}), 4 at once ${times.map((x) => x.toFixed(1)).join(' / ')} s (CPU-s: ${split(fourCpu)}; agents ${each(fourAgents)}), upstream ${r.upstreamRatio.toFixed(2)}×`,
      );
    }
  }
} finally {
  await cluster.dispose();
}

const lines = [
  '# First-pull sharing: 4 nodes pull a new image at once',
  '',
  `Link: all upstream blob bytes share one ${args.rate} MB/s link (shaping proxy). Image: 4 layers. ` +
    `Baseline: sharing off (\`--first-pull=false\`), same run. Election window (mirror resolve timeout): ${args.window || "the rig's 1 s"}. Load average at the end: ${loadavg()[0]?.toFixed(1)} on a 2-core VM shared with other test runs.`,
  '',
  '| image | sharing | upstream bytes / image bytes | slowest of 4 / single-node pull | single pull (s) | slowest of 4 (s) |',
  '| --- | --- | --- | --- | --- | --- |',
  ...results.map(
    (r) =>
      `| ${r.size} MiB | ${r.mode} | ${r.upstreamRatio.toFixed(2)}× | ${(r.slowest / r.single).toFixed(2)}× | ${r.single.toFixed(1)} | ${r.slowest.toFixed(1)} |`,
  ),
  '',
  '| image | single pull through the agent (sharing on) / containerd direct (sharing off) |',
  '| --- | --- |',
  ...sizes.flatMap((size) => {
    const on = results.find((r) => r.size === size && r.mode === 'on');
    const off = results.find((r) => r.size === size && r.mode === 'off');
    return on && off ? [`| ${size} MiB | ${(on.single / off.single).toFixed(2)}× |`] : [];
  }),
  '',
  `CPU floor: CPU-seconds the whole rig (agents, containerd daemons, docker-registry, the proxy and \`ctr\`) used during the pulls, over the machine's ${cores} cores; when the pulls take about that long, they wait on the CPU, not on the link.`,
  '',
  '| image | sharing | each of the 4 pulls (s) | rig CPU-s, 4 at once | CPU floor of 4 at once (s) | CPU floor / single pull | rig CPU-s, single pull | by process, 4 at once (CPU-s) |',
  '| --- | --- | --- | --- | --- | --- | --- | --- |',
  ...results.map((r) => {
    const floor = total(r.fourCpu) / cores;
    return `| ${r.size} MiB | ${r.mode} | ${each(r.times)} | ${total(r.fourCpu).toFixed(1)} | ${floor.toFixed(1)} | ${(floor / r.single).toFixed(2)}× | ${total(r.singleCpu).toFixed(1)} | ${split(r.fourCpu)} |`;
  }),
  '',
  "Each agent's own CPU-seconds (`process_cpu_seconds_total`, all its threads), nodes 1–4; node 1 makes the single pull, the others idle meanwhile.",
  '',
  '| image | sharing | agents, single pull (CPU-s) | agents, 4 at once (CPU-s) | pulling agent, single pull, per GiB pulled (CPU-s) |',
  '| --- | --- | --- | --- | --- |',
  ...results.map(
    (r) =>
      `| ${r.size} MiB | ${r.mode} | ${each(r.singleAgents)} | ${each(r.fourAgents)} | ${(((r.singleAgents[0] ?? 0) * 1024) / r.size).toFixed(1)} |`,
  ),
  '',
];
writeFileSync(args.out as string, lines.join('\n'));
console.log(lines.join('\n'));
