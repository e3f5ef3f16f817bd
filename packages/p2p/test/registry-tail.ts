// Where the tail of a registry GET from a peer goes (issue 11): the scale bench's mirror path (node 0
// holds a manifest; GETs of it by digest one after the other, round-robin through the other nodes'
// registries), traced in every worker process (cluster/timeline.ts) and, with --profile, under the
// V8 CPU profiler. Prints each phase's p50/p99 and the slowest GETs phase by phase, with the GC pauses
// and event-loop stalls of the asking and the answering process that overlap them. Nothing asserts;
// run it through the bench slot.
//   node --expose-gc packages/p2p/test/registry-tail.ts [--nodes 30] [--gets 200] [--network-key]
//     [--profile DIR] [--slow 8] [--pause S] [--warm-process N]
import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Cluster } from './cluster/harness.ts';
import type { Timeline } from './cluster/timeline.ts';
import { pct } from './scale-figures.ts';

const args = process.argv.slice(2);
const opt = (name: string, fallback: string) =>
  args.includes(name) ? (args[args.indexOf(name) + 1] as string) : fallback;
const size = Number(opt('--nodes', '30'));
const gets = Number(opt('--gets', '200'));
const slowest = Number(opt('--slow', '8'));
const profileDir = args.includes('--profile') ? opt('--profile', '') : undefined;
/** Seconds of quiet between the mesh (and the manifest findable everywhere) and the first GET. */
const pauseS = Number(opt('--pause', '0'));
/** GETs through one node of each process before the traced ones: the code is warm, other nodes are not. */
const warmProcess = Number(opt('--warm-process', '0'));
const networkKey = args.includes('--network-key') ? randomBytes(32).toString('hex') : undefined;

const workers = Math.min(10, Math.ceil(size / 5));
const c = new Cluster(workers, '127.78.8');
const common = {
  pingTimeoutMs: 30_000,
  dialTimeoutMs: 20_000,
  registry: true,
  ...(networkKey === undefined ? {} : { networkKey }),
};

type Phase = { name: string; ms: number };
const overlap = (a0: number, a1: number, b0: number, b1: number) =>
  Math.max(0, Math.min(a1, b1) - Math.max(a0, b0));

try {
  await c.start(0, common);
  const meshed = await c.startMesh(size, common, 300_000);
  console.log(`# registry tail: ${size} nodes in ${workers} processes, ${meshed}/${size} meshed`);
  const holder = c.nodes.get(0)?.peerId as string;
  const [manifest] = (await c.store(0, 4)) as [string];
  const all = [...c.nodes.keys()];
  for (const i of all.slice(1)) {
    for (let n = 0; n < 200 && !(await c.lookup(i, manifest, 2_000, holder)).found.includes(holder); n++) {
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  const warmed = new Set<number>();
  for (let w = 0; w < workers && warmProcess > 0; w++) {
    const node = all.find((i) => i !== 0 && c.workerOf(i) === w) as number;
    warmed.add(node);
    for (let n = 0; n < warmProcess; n++) await c.get(node, manifest);
  }
  await new Promise((r) => setTimeout(r, pauseS * 1000));
  await c.trace(true);
  if (profileDir !== undefined) await c.profile(true);
  const runs: { node: number; t0: number; ms: number; status: number }[] = [];
  for (let r = 0; r < gets; r++) {
    const node = all[1 + (r % (all.length - 1))] as number;
    const t0 = Date.now();
    const { ms, status } = await c.get(node, manifest);
    runs.push({ node, t0, ms, status });
  }
  if (profileDir !== undefined) {
    mkdirSync(profileDir, { recursive: true });
    for (const [w, p] of (await c.profile(false)).entries()) {
      writeFileSync(join(profileDir, `worker-${w}.cpuprofile`), JSON.stringify(p));
    }
  }
  const lines = (await c.trace(false)) as Timeline[];
  const holderTl = lines[c.workerOf(0)] as Timeline;
  const phases: Phase[][] = [];
  const notes: string[] = [];
  for (const run of runs) {
    const tl = lines[c.workerOf(run.node)] as Timeline;
    // the asking node's request event: the one of this node for this digest nearest the client's start
    const ask = tl.requests
      .filter((e) => e.node === run.node && !e.mirrored && e.key === manifest)
      .sort((a, b) => Math.abs(a.at - run.t0) - Math.abs(b.at - run.t0))[0];
    if (ask === undefined) {
      phases.push([{ name: 'untraced', ms: run.ms }]);
      notes.push('');
      continue;
    }
    const askEnd = ask.at + ask.durationMs;
    const f = tl.fetches.find((m) => m.path.includes(manifest) && m.created >= ask.at && m.created <= askEnd);
    const held = holderTl.requests.find(
      (e) =>
        e.node === 0 && e.mirrored && f !== undefined && e.at >= f.created && e.at <= (f.headers ?? askEnd),
    );
    const p: Phase[] = [{ name: 'client→asker handler', ms: run.ms - ask.durationMs }];
    if (f !== undefined) {
      p.push({ name: 'lookup (handler→fetch)', ms: f.created - ask.at });
      const sent = f.sent ?? f.created;
      p.push({ name: 'connect/queue (create→sent)', ms: sent - f.created });
      if (held !== undefined) {
        p.push({ name: 'to holder (sent→handler)', ms: held.at - sent });
        p.push({ name: 'holder handler', ms: held.durationMs });
        p.push({ name: 'back (holder end→headers)', ms: (f.headers ?? sent) - (held.at + held.durationMs) });
      } else {
        p.push({ name: 'sent→headers (no holder event)', ms: (f.headers ?? sent) - sent });
      }
      p.push({ name: 'body (headers→end)', ms: (f.ended ?? f.headers ?? sent) - (f.headers ?? sent) });
      p.push({ name: 'verify+reply (end→handler end)', ms: askEnd - (f.ended ?? f.headers ?? sent) });
    }
    phases.push(p);
    const a0 = run.t0 - 2;
    const a1 = run.t0 + run.ms + 2;
    const within = (xs: { at: number; ms: number }[], stall: boolean) =>
      xs
        .map((x) => (stall ? overlap(x.at - x.ms, x.at, a0, a1) : overlap(x.at, x.at + x.ms, a0, a1)))
        .filter((ms) => ms > 0)
        .reduce((s, ms) => s + ms, 0);
    const conn = tl.connects.filter((x) => x.at >= ask.at && x.at <= askEnd);
    notes.push(
      `asker gc ${within(tl.gc, false).toFixed(1)} ms, stalls ${within(tl.stalls, true).toFixed(1)} ms; ` +
        `holder gc ${within(holderTl.gc, false).toFixed(1)} ms, stalls ${within(holderTl.stalls, true).toFixed(1)} ms` +
        (conn.length > 0 ? `; new connection ${conn.map((x) => x.ms.toFixed(1)).join(', ')} ms` : ''),
    );
  }
  const totals = runs.map((r) => r.ms);
  console.log(
    `\n${gets} GETs: p50 ${pct(totals, 50).toFixed(1)} ms, p90 ${pct(totals, 90).toFixed(1)}, p99 ${pct(totals, 99).toFixed(1)}, max ${Math.max(...totals).toFixed(1)}; ` +
      `${runs.filter((r) => r.status === 200).length} answered 200`,
  );
  // cold: the first GET through its process (code not compiled yet), the first through its node
  // (its first lookup and connection to the holder); warm: the rest
  const seenWorker = new Set<number>();
  const seenNode = new Set<number>();
  const kind = runs.map((r) => {
    const w = c.workerOf(r.node);
    const k = !seenWorker.has(w)
      ? 'first in its process'
      : !seenNode.has(r.node)
        ? 'first of its node'
        : 'warm';
    seenWorker.add(w);
    seenNode.add(r.node);
    return k;
  });
  console.log('\n| GETs | n | p50 ms | p99 ms | max ms |\n| --- | --- | --- | --- | --- |');
  for (const k of ['first in its process', 'first of its node', 'warm']) {
    const v = runs.filter((_, i) => kind[i] === k).map((r) => r.ms);
    console.log(
      `| ${k} | ${v.length} | ${pct(v, 50).toFixed(1)} | ${pct(v, 99).toFixed(1)} | ${Math.max(...v).toFixed(1)} |`,
    );
  }
  const names = [...new Set(phases.flat().map((p) => p.name))];
  console.log('\n| phase | p50 ms | p90 ms | p99 ms | max ms |\n| --- | --- | --- | --- | --- |');
  for (const name of names) {
    const v = phases.flatMap((p) => p.filter((x) => x.name === name).map((x) => x.ms));
    console.log(
      `| ${name} | ${pct(v, 50).toFixed(2)} | ${pct(v, 90).toFixed(2)} | ${pct(v, 99).toFixed(2)} | ${Math.max(...v).toFixed(2)} |`,
    );
  }
  const order = runs.map((_, i) => i).sort((a, b) => (runs[b]?.ms ?? 0) - (runs[a]?.ms ?? 0));
  console.log(`\n## the ${slowest} slowest GETs\n`);
  for (const i of order.slice(0, slowest)) {
    const r = runs[i] as (typeof runs)[number];
    const p = (phases[i] ?? []).map((x) => `${x.name} ${x.ms.toFixed(1)}`).join(' · ');
    console.log(
      `- #${i} ${kind[i]}, node ${r.node} (worker ${c.workerOf(r.node)}): ${r.ms.toFixed(1)} ms = ${p}\n  ${notes[i]}`,
    );
  }
  const sum = (xs: { ms: number }[]) => xs.reduce((s, x) => s + x.ms, 0);
  console.log(
    '\n| process | GC pauses (sum ms, max ms) | loop stalls > 5 ms (n, max ms) | connections opened |',
  );
  console.log('| --- | --- | --- | --- |');
  for (const [w, tl] of lines.entries()) {
    if (tl === null) continue;
    console.log(
      `| ${w}${w === c.workerOf(0) ? ' (holder)' : ''} | ${sum(tl.gc).toFixed(0)}, ${Math.max(0, ...tl.gc.map((g) => g.ms)).toFixed(1)} | ` +
        `${tl.stalls.length}, ${Math.max(0, ...tl.stalls.map((s) => s.ms)).toFixed(1)} | ${tl.connects.length} |`,
    );
  }
} finally {
  await c.close();
}
