// Start of N full agents (issue 11: "30 agents on this machine ready within 30 s of start"): the
// rig's N containerd daemons and N agents (network key on, as the chart runs them), every agent
// bootstrapped from every other's router address (as the rig and a DNS bootstrap name do), all
// started at once once the containerd daemons run. Measured twice in one run, each on a fresh
// cluster: the agents run the bundled build (packages/agent/dist/ferry.mjs, what the image runs),
// then the TypeScript sources (what the rig's tests run). Figures: seconds from the start until each
// agent's /readyz says ready, until every agent is connected to every other (its /status), and the
// agents' CPU seconds by then (process_cpu_seconds_total, which counts from the agent's metrics
// set-up: module loading is not in it). Nothing asserts on time.
//   node test/bench/agent-start.ts [--nodes 30] [--out FILE]
import { execFileSync } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startCluster } from '../rig/index.ts';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const bundle = join(root, 'packages', 'agent', 'dist', 'ferry.mjs');
const args = process.argv.slice(2);
const n = args.includes('--nodes') ? Number(args[args.indexOf('--nodes') + 1]) : 30;
const out = args.includes('--out') ? args[args.indexOf('--out') + 1] : undefined;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function pct(values: number[], p: number): number {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] ?? Number.NaN;
}

async function measure(entry: string | undefined): Promise<string[]> {
  const cluster = await startCluster({
    nodes: n,
    startAgents: false,
    ...(entry === undefined ? {} : { agentEntry: entry }),
  });
  try {
    const t0 = Date.now();
    const ready: number[] = [];
    await Promise.all(
      cluster.nodes.map(async (node) => {
        const agent = await node.startAgent();
        await agent.waitReady(180_000);
        ready.push((Date.now() - t0) / 1000);
      }),
    );
    const agents = cluster.nodes.map((node) => node.agent).filter((a) => a !== undefined);
    let mesh = `not within 180 s`;
    while (Date.now() - t0 < 180_000) {
      const peers = await Promise.all(
        agents.map(async (a) => ((await a.status()).peers as unknown[] | undefined)?.length ?? 0),
      );
      if (peers.every((p) => p >= n - 1)) {
        mesh = ((Date.now() - t0) / 1000).toFixed(1);
        break;
      }
      await sleep(1_000);
    }
    const cpu = await Promise.all(agents.map((a) => a.metric('process_cpu_seconds_total')));
    return [
      `${pct(ready, 50).toFixed(1)} / ${Math.max(...ready).toFixed(1)}`,
      mesh,
      `${pct(cpu, 50).toFixed(2)} / ${Math.max(...cpu).toFixed(2)}`,
    ];
  } finally {
    await cluster.dispose();
  }
}

if (!existsSync(bundle)) {
  execFileSync(process.execPath, [join(root, 'scripts', 'build.ts')], { stdio: 'inherit' });
}
const bundled = await measure(bundle);
const sources = await measure(undefined);
const names = [
  `${n} agents ready (/readyz) after a simultaneous start: p50 / max s`,
  'every agent connected to every other, s',
  'CPU seconds per agent by then, counted from its metrics set-up (module loading not in it): p50 / max',
];
const table = [
  `| figure (${n} nodes) | bundled build (the image) | TypeScript sources (the rig's tests) | target |`,
  '| --- | --- | --- | --- |',
  ...names.map(
    (name, i) => `| ${name} | ${bundled[i]} | ${sources[i]} | ${i === 0 ? 'all within 30 s' : ''} |`,
  ),
].join('\n');
console.log(table);
if (out !== undefined) writeFileSync(out, `${table}\n`);
