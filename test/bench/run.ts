/**
 * `node test/bench/run.ts [--quick] [--figures 1,2,3,4,5] [--key-cost] [--out FILE]` (or `pnpm bench`).
 *
 * Starts a 5-node rig (real docker-registry, real containerd daemons, real Ferry agents on loopback, holding
 * the cluster's network key), pushes the test images, lets node 1 ("A") pull them, then measures each figure
 * as a ratio against a baseline measured in the same run (see README.md). With `--key-cost` it first runs
 * figures 4 and 5 on a second rig whose agents have no network key, and adds rows comparing the two. Writes a Markdown table (default `test/bench/results/latest.md`
 * for a full run, a temp file for `--quick`) and prints it. Asserts nothing about time. Stops everything.
 */

import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { cpus, loadavg, tmpdir, totalmem } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { buildImage, type Cluster, pushImage, startCluster, waitFor } from '../rig/index.ts';
import {
  advertising,
  type Bench,
  blobServing,
  latency,
  mirrorPath,
  type Pushed,
  type Row,
  wholePull,
} from './figures.ts';
import { exchange, keepAlive, writeResults } from './measure.ts';

const MiB = 1024 * 1024;
const here = dirname(fileURLToPath(import.meta.url));

const { values: args } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    figures: { type: 'string', default: '1,2,3,4,5' },
    'key-cost': { type: 'boolean', default: false },
    out: { type: 'string' },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
if (args.help) {
  console.log(
    'usage: node test/bench/run.ts [--quick] [--figures 1,2,3,4,5] [--key-cost] [--out FILE]\n' +
      '  --quick    64 MiB instead of 1 GiB, 200 instead of 1000 requests, 1,000 instead of 5,000 digests\n' +
      '  --figures  which figures to run (default all; 5 always runs last)\n' +
      '  --key-cost also run figures 4 and 5 on a rig without the network key first: key on / key off rows\n' +
      '  --out      results file (default test/bench/results/latest.md; --quick: a temp file)',
  );
  process.exit(0);
}
const quick = args.quick ?? false;
const keyCost = args['key-cost'] ?? false;
const wanted = new Set(args.figures.split(',').map((s) => s.trim()));
const outFile =
  args.out ?? (quick ? join(tmpdir(), 'ferry-bench-quick.md') : join(here, 'results', 'latest.md'));

const started = performance.now();
const loadAtStart = loadavg()[0]!;
const elapsed = () => `${((performance.now() - started) / 1000).toFixed(0)}s`;
const log = (msg: string) => console.log(`[bench ${elapsed()}] ${msg}`);

function version(cmd: string, argv: string[]): string {
  try {
    return execFileSync(cmd, argv, { encoding: 'utf8' }).trim().split('\n')[0]!;
  } catch {
    return 'unknown';
  }
}

function fmt(x: number, unit: string): string {
  const digits = unit === 'MB/s' || unit === 'MiB' ? 0 : unit === 's' ? 2 : x < 10 ? 2 : 1;
  return `${x.toFixed(digits)} ${unit}`;
}

function table(rows: Row[]): string {
  const lines = [
    '| # | measurement | value | baseline | ratio | target | met |',
    '|---|---|---|---|---|---|---|',
  ];
  for (const r of rows) {
    lines.push(
      `| ${r.id} | ${r.what} | ${fmt(r.value, r.unit)} | ${fmt(r.baseline, r.unit)} (${r.baselineName}) | ${r.ratio.toFixed(2)}× | ${r.target} | ${r.met ? 'yes' : 'NO'} |`,
    );
  }
  return lines.join('\n');
}

async function pushAndPull(
  cluster: Cluster,
  repo: string,
  layers: number[],
  seed: string,
  ns: string,
): Promise<Pushed> {
  const image = await buildImage({ layers, seed });
  await pushImage(cluster.upstream.url, repo, 'v1', image);
  const digests = [image.manifest.digest, image.config.digest, ...image.layers.map((l) => l.digest)];
  return {
    repo,
    tag: 'v1',
    ref: `${ns}/${repo}:v1`,
    image,
    digests,
    layerBytes: image.layers.reduce((s, l) => s + l.size, 0),
  };
}

/** Rows a figure yields that the network key can cost (no disk or stream bound in them). */
const KEY_ROWS = ['4a', '4b', '4c', '4d', '5a'];

let cluster: Cluster | undefined;
let emptyHosts: string | undefined;
const cleanup = async () => {
  await cluster?.dispose();
  cluster = undefined;
  if (emptyHosts) rmSync(emptyHosts, { recursive: true, force: true });
  emptyHosts = undefined;
};

/** One rig: set up, measure the `ids` figures in order, stop. A broken figure is noted, not thrown. */
async function rigRun(
  networkKey: boolean,
  ids: Set<string>,
  notes: string[],
): Promise<{ rows: Row[]; failed: number }> {
  const label = networkKey ? '' : ' (network key off)';
  try {
    log(`mode ${quick ? 'quick' : 'full'}; starting a 5-node rig${label}…`);
    // info, as deployed (the rig's default is debug, which logs every request).
    cluster = await startCluster({ nodes: 5, agentArgs: ['--log-level=info'], networkKey });
    emptyHosts = mkdtempSync(join(tmpdir(), 'ferry-bench-hosts-'));
    const ns = cluster.upstream.host;
    const big = quick ? 64 * MiB : 1024 * MiB;
    log(
      `building and pushing images (${big / MiB} MiB blob, ${big / MiB} MiB in 4 layers, 10 MB in 4 layers)…`,
    );
    const big1 = await pushAndPull(cluster, 'bench/big1', [big], 'ferry-bench-big1', ns);
    const big4 = await pushAndPull(
      cluster,
      'bench/big4',
      [big / 4, big / 4, big / 4, big / 4],
      'ferry-bench-big4',
      ns,
    );
    const small4 = await pushAndPull(
      cluster,
      'bench/small4',
      [4_000_000, 3_000_000, 2_000_000, 1_000_000],
      'ferry-bench-small4',
      ns,
    );
    await Promise.all(cluster.nodes.map((n) => n.agent!.waitReady()));
    const a = cluster.nodes[0]!;
    const b = cluster.nodes[1]!;
    for (const p of [big1, big4, small4]) {
      const t0 = performance.now();
      await a.pull(p.ref, { timeoutMs: 600_000 });
      notes.push(
        `Node A${label} pulled ${p.ref} from the upstream (through its agent, a miss) in ${((performance.now() - t0) / 1000).toFixed(2)} s.`,
      );
    }
    log('node A holds the images; waiting until node B finds every digest on a peer…');
    const conn = keepAlive();
    const t0 = performance.now();
    for (const p of [big1, big4, small4]) {
      for (const d of p.digests) {
        await waitFor(
          async () =>
            (
              await exchange(`${b.agent!.registryUrl}/v2/${p.repo}/blobs/${d}?ns=${encodeURIComponent(ns)}`, {
                agent: conn,
                method: 'HEAD',
              })
            ).status === 200,
          { timeoutMs: 120_000, intervalMs: 100, what: `${d} findable from node B` },
        );
      }
    }
    conn.destroy();
    notes.push(
      `After A's pulls${label}, all their digests were findable from B within ${((performance.now() - t0) / 1000).toFixed(1)} s.`,
    );

    const bench: Bench = {
      cluster,
      quick,
      ns,
      emptyHosts,
      images: { big1, big4, small4 },
      notes,
      log,
    };
    const figures: [string, string, (b: Bench) => Promise<Row[]>][] = [
      ['1', 'blob serving', blobServing],
      ['2', 'mirror path', mirrorPath],
      ['3', 'whole pull', wholePull],
      ['4', 'latency', latency],
      ['5', 'advertising', advertising],
    ];
    const rows: Row[] = [];
    let failed = 0;
    for (const [id, name, fn] of figures) {
      if (!ids.has(id)) continue;
      log(`figure ${id}${label}: ${name}…`);
      try {
        rows.push(...(await fn(bench)));
      } catch (err) {
        // One broken figure must not lose the others: note it, go on, fail the run at the end.
        failed++;
        log(`figure ${id}${label} FAILED: ${(err as Error).stack ?? err}`);
        notes.push(
          `FIGURE ${id}${label} (${name}) FAILED: ${String((err as Error).message)
            .split('\n')[0]!
            .slice(0, 400)}`,
        );
      }
    }
    return { rows, failed };
  } finally {
    log(`stopping the rig${label}…`);
    await cleanup();
  }
}

/** Key on / key off: each row of the keyed rig against the same row of the rig without the key. */
function keyRows(on: Row[], off: Row[]): Row[] {
  const out: Row[] = [];
  for (const id of KEY_ROWS) {
    const k = on.find((r) => r.id === id);
    const o = off.find((r) => r.id === id);
    if (k === undefined || o === undefined) continue;
    out.push({
      id: `${id}k`,
      what: `Network key cost of ${id}: the value above, key on vs key off`,
      value: k.value,
      baseline: o.value,
      unit: k.unit,
      baselineName: 'same figure, agents without a network key',
      ratio: k.value / o.value,
      target: '—',
      met: true,
    });
  }
  return out;
}

async function main(): Promise<void> {
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.once(sig, () => {
      console.error(`\n[bench] ${sig}: stopping everything…`);
      void cleanup().finally(() => process.exit(130));
    });
  }
  const notes: string[] = [];
  let failed = 0;
  let off: Row[] = [];
  if (keyCost) {
    const ids = new Set([...wanted].filter((id) => id === '4' || id === '5'));
    const r = await rigRun(false, ids, notes);
    off = r.rows;
    failed += r.failed;
  }
  const on = await rigRun(true, wanted, notes);
  failed += on.failed;
  const rows = [...on.rows, ...keyRows(on.rows, off)];

  const total = (performance.now() - started) / 1000;
  const cpu = cpus()[0]?.model ?? 'unknown CPU';
  const md = [
    `# Ferry benchmark (${quick ? 'quick' : 'full'} run)`,
    '',
    `${new Date().toISOString()} · ${cpus().length} × ${cpu} · ${(totalmem() / 1024 / MiB).toFixed(0)} GiB RAM · Node ${process.version} · ${version('containerd', ['--version'])} · ${version('docker-registry', ['--version'])}`,
    '',
    `Rig: upstream docker-registry + 5 nodes (containerd + Ferry agent holding the network key, log level info) on loopback; node 1 = A, node 2 = B.${keyCost ? ' Rows `…k`: the same figure on a second rig, run first, whose agents have no network key (no private network, unsigned peer requests).' : ''} Whole run ${total.toFixed(0)} s; 1-minute load average ${loadAtStart.toFixed(1)} at the start, ${loadavg()[0]!.toFixed(1)} at the end (other work on the machine skews single rows). Ratio = value / baseline. Nothing here is asserted; "met" is informational.`,
    '',
    table(rows),
    '',
    ...notes.map((n) => `- ${n}`),
    '',
  ].join('\n');
  writeResults(outFile, md, log);
  if (failed) process.exitCode = 1;
}

main().catch((err) => {
  console.error(`bench failed: ${(err as Error).stack ?? err}`);
  process.exitCode = 1;
});
