// CPU profile of a p2p test cluster (issue 11): where mesh formation and the idle mesh spend their
// CPU. Starts N nodes over several processes (cluster/harness.ts) as the scale bench does, runs the
// V8 profiler in every worker process during mesh formation and then during an idle window, and
// prints per phase the CPU per node, the top functions by self time and the self time per package,
// summed over the processes. Nothing asserts; run it through the bench slot.
//   node packages/p2p/test/scale-profile.ts [--nodes 30] [--idle-s 30] [--many N] [--restart] [--top 25] [--dir DIR]
import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Cluster, until } from './cluster/harness.ts';

const args = process.argv.slice(2);
const opt = (name: string, fallback: string) =>
  args.includes(name) ? (args[args.indexOf(name) + 1] as string) : fallback;
const size = Number(opt('--nodes', '30'));
const idleMs = Number(opt('--idle-s', '30')) * 1000;
const top = Number(opt('--top', '25'));
const dir = args.includes('--dir') ? opt('--dir', '') : undefined;
/** With --many N: then N digests advertised on node 0, profiled until every node finds them. */
const many = Number(opt('--many', '0'));
/** With --restart: then node 0 stops and comes back with its identity, profiled until every node finds its new digest. */
const restart = args.includes('--restart');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
}
interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

/** Self time (ms) per function and per package, summed over `profiles`. */
function selfTimes(profiles: Profile[]) {
  const byFn = new Map<string, number>();
  const byPkg = new Map<string, number>();
  let total = 0;
  for (const p of profiles) {
    const frames = new Map(p.nodes.map((n) => [n.id, n.callFrame]));
    for (const [i, sample] of p.samples.entries()) {
      const ms = (p.timeDeltas[i] ?? 0) / 1000;
      const f = frames.get(sample);
      if (f === undefined) {
        continue;
      }
      total += ms;
      const file = f.url
        .replace(/^.*node_modules\/\.pnpm\/[^/]+\/node_modules\//, '')
        .replace(/^file:\/\/.*\/packages\//, '');
      const fn = `${f.functionName || '(anonymous)'} ${file}:${f.lineNumber + 1}`;
      byFn.set(fn, (byFn.get(fn) ?? 0) + ms);
      const pkg = f.url === '' ? f.functionName : (file.match(/^(@[^/]+\/[^/]+|[^/]+)/)?.[1] ?? file);
      byPkg.set(pkg, (byPkg.get(pkg) ?? 0) + ms);
    }
  }
  const sorted = (m: Map<string, number>) => [...m].sort((a, b) => b[1] - a[1]).slice(0, top);
  return { total, fns: sorted(byFn), pkgs: sorted(byPkg) };
}

function report(phase: string, profiles: Profile[], cpuMs: number, wallMs: number): void {
  const { total, fns, pkgs } = selfTimes(profiles);
  const pct = (ms: number) => `${((100 * ms) / total).toFixed(1)}%`;
  console.log(`\n## ${phase}: ${size} nodes, ${(wallMs / 1000).toFixed(1)} s`);
  console.log(
    `CPU per node ${(cpuMs / size).toFixed(0)} ms (${(cpuMs / size / (wallMs / 1000)).toFixed(2)} ms/s; ` +
      `${(cpuMs / size / (wallMs / 1000) / (size - 1)).toFixed(3)} ms/s per peer); profiled ${(total / 1000).toFixed(1)} s\n`,
  );
  console.log('| self % | function |\n| --- | --- |');
  for (const [fn, ms] of fns) {
    console.log(`| ${pct(ms)} | ${fn.replaceAll('|', '\\|')} |`);
  }
  console.log('\n| self % | package |\n| --- | --- |');
  for (const [pkg, ms] of pkgs) {
    console.log(`| ${pct(ms)} | ${pkg} |`);
  }
  if (dir !== undefined) {
    mkdirSync(dir, { recursive: true });
    for (const [i, p] of profiles.entries()) {
      writeFileSync(join(dir, `${phase}-${i}.cpuprofile`), JSON.stringify(p));
    }
  }
}

const workers = Math.min(10, Math.ceil(size / 5));
const c = new Cluster(workers, '127.78.9');
const dataDir = await mkdtemp(join(tmpdir(), 'ferry-scale-profile-'));
try {
  const common = { pingTimeoutMs: 30_000, dialTimeoutMs: 20_000 };
  const first = await c.start(0, { ...common, dataDir });
  await c.profile(true);
  const cpu0 = await c.cpuMs();
  const t0 = Date.now();
  if ((await c.startMesh(size, common, 300_000)) < size) {
    throw new Error('the mesh did not form within 300 s');
  }
  const all = [...c.nodes.keys()];
  const meshCpu = (await c.cpuMs()) - cpu0;
  report('mesh', (await c.profile(false)) as Profile[], meshCpu, Date.now() - t0);
  await sleep(5_000);
  // idle CPU without the profiler, then the profile of the same idle state
  const stats0 = await Promise.all(all.map((i) => c.stats(i)));
  const cpu1 = await c.cpuMs();
  const t1 = Date.now();
  await sleep(idleMs);
  const idleCpu = (await c.cpuMs()) - cpu1;
  const idleWall = Date.now() - t1;
  const stats1 = await Promise.all(all.map((i) => c.stats(i)));
  const perS = idleCpu / size / (idleWall / 1000);
  const sum = (s: typeof stats0, f: (x: (typeof stats0)[number]) => number) =>
    s.reduce((a, x) => a + f(x), 0);
  console.log(
    `\n## idle without the profiler: ${(idleWall / 1000).toFixed(1)} s\nCPU per node ${perS.toFixed(2)} ms/s, ` +
      `${(perS / (size - 1)).toFixed(3)} ms/s per peer; connections per node ` +
      `${(sum(stats1, (x) => x.connections) / size).toFixed(2)}; liveness pings sent per node per s ` +
      `${((sum(stats1, (x) => x.liveness.pings) - sum(stats0, (x) => x.liveness.pings)) / size / (idleWall / 1000)).toFixed(2)}; ` +
      `duplicate connections closed ${sum(stats1, (x) => x.liveness.duplicatesClosed)}`,
  );
  await c.profile(true);
  const cpu2 = await c.cpuMs();
  const t2 = Date.now();
  await sleep(idleMs);
  const profiledCpu = (await c.cpuMs()) - cpu2;
  report('idle', (await c.profile(false)) as Profile[], profiledCpu, Date.now() - t2);
  if (many > 0) {
    const keys = Array.from({ length: many }, () => `sha256:${randomBytes(32).toString('hex')}`);
    const holder = first.peerId;
    const probes = [
      keys[keys.length - 1] as string,
      ...Array.from({ length: 5 }, (_, n) => keys[n * 97] as string),
    ];
    await c.profile(true);
    const cpu3 = await c.cpuMs();
    const t3 = Date.now();
    await c.advertise(0, keys);
    const advertised = Date.now() - t3;
    await until(
      `${many} digests findable`,
      async () =>
        (
          await Promise.all(all.slice(1).flatMap((i) => probes.map((k) => c.lookup(i, k, 2_000, holder))))
        ).every((r) => r.found.includes(holder)),
      120_000,
    );
    const manyWall = Date.now() - t3;
    console.log(
      `\n${many} digests from node 0: advertise() resolved after ${advertised} ms, findable on every node after ${manyWall} ms`,
    );
    report('many', (await c.profile(false)) as Profile[], (await c.cpuMs()) - cpu3, manyWall);
  }
  if (restart) {
    await c.stop(0);
    const survivors = all.filter((i) => i !== 0);
    await until(
      'node 0 gone everywhere',
      async () => (await Promise.all(survivors.map((i) => c.peers(i)))).every((n) => n === size - 2),
      60_000,
    );
    const via = c.nodes.get(1)?.addresses[0] as string;
    const fresh = `sha256:${randomBytes(32).toString('hex')}`;
    await c.profile(true);
    const cpu4 = await c.cpuMs();
    const t4 = Date.now();
    await c.start(0, { ...common, dataDir, bootstrap: [via] });
    await c.advertise(0, [fresh]);
    await until(
      'the restarted node findable',
      async () =>
        (await Promise.all(survivors.map((i) => c.lookup(i, fresh, 2_000, first.peerId)))).every((r) =>
          r.found.includes(first.peerId),
        ),
      120_000,
    );
    const restartWall = Date.now() - t4;
    console.log(`\nrestart: node 0's new digest findable on every node after ${restartWall} ms`);
    report('restart', (await c.profile(false)) as Profile[], (await c.cpuMs()) - cpu4, restartWall);
  }
} finally {
  await c.close();
  await rm(dataDir, { recursive: true, force: true });
}
