// Scale figures of the p2p layer at several cluster sizes (issue 11), as one Markdown table: each
// cluster is spread over several processes (cluster/harness.ts), node i on 127.78.<n>.<i+1>. The
// smallest size is the baseline measured in the same run (ratios are against it). Nothing asserts
// on time. Figures per size:
// - mesh: seconds until every node is connected to every other (nodes started in waves);
// - DHT streams (kad + members) received per node per minute, idle (30 s) and during a rollout
//   (every node advertises the same 5 new digests at once; 30 s from its start);
// - findable: one image (4 digests) advertised on node 0, time until each other node's lookup
//   yields node 0 (polled every 50 ms);
// - lookup of that held digest and misses (random digests, ended by a 20 ms deadline as the
//   mirror's resolve timeout does), 200 each, round-robin over the nodes;
// - the registry's mirror path (every node runs Ferry's registry, content in memory, routed by its
//   node): node 0 holds 4 new manifests; GETs of one by digest through the other nodes' registries
//   (lookup, fetch from node 0's registry, digest check): 200 on a new client connection each from
//   cold nodes (the first lap apart), then 200 steady ones on kept-alive client connections (see
//   mirrorPath); and 200 misses (404 after the mirror's 20 ms resolve timeout); timed inside the
//   asking node's process;
// - 10,000 digests advertised on node 0: until every node finds the last one and 20 random ones;
// - churn: 20% of the nodes killed (node 0, a holder of the churn digest, among them; nodes 1 and
//   2 keep holding it): lookups of it at once and after the deaths are known, and how many lookups
//   dialled a dead peer after that node knew it dead;
// - restart: node 0 comes back with its identity and advertises a new digest: time until every
//   node finds it.
// `--parts idle,findable,registry,many,churn,restart` measures only those (the mesh always). On
// stderr, not in the table: per member of the restart, when node 0 connected, was identified, sent
// its first record and was found (ms after the restart began), and what each failed churn lookup
// returned.
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FERRY_ASK_PROTOCOL } from '../src/ask-peers.ts';
import { Cluster, until } from './cluster/harness.ts';
import { MIRROR_RESOLVE_TIMEOUT_MS, type NodeEvents } from './cluster/worker.ts';

const digest = () => `sha256:${randomBytes(32).toString('hex')}`;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const RESOLVE_TIMEOUT_MS = 20;
const COMMON = { pingTimeoutMs: 30_000, dialTimeoutMs: 20_000, registry: true };
/** `--parts idle,findable,registry,many,churn,restart`: measure only these (all by default). */
const PARTS = process.argv.includes('--parts')
  ? new Set((process.argv[process.argv.indexOf('--parts') + 1] ?? '').split(','))
  : undefined;
const part = (name: string) => PARTS === undefined || PARTS.has(name);

export function pct(values: number[], p: number): number {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] ?? Number.NaN;
}

type Figures = Map<string, string>;

/** Whether, at `at`, the node of `ev` held `peer` dead (its last gone/back event before was a gone). */
function heldDead(ev: NodeEvents, peer: string, at: number): boolean {
  const lastGone = Math.max(-1, ...ev.gone.filter((g) => g.peer === peer && g.at < at).map((g) => g.at));
  const lastBack = Math.max(-1, ...ev.back.filter((b) => b.peer === peer && b.at < at).map((b) => b.at));
  return lastGone > lastBack;
}

async function streamsPerNodeMinute(
  c: Cluster,
  ids: number[],
  windowMs: number,
  during?: () => Promise<unknown>,
) {
  const total = async () =>
    (await Promise.all(ids.map((i) => c.stats(i)))).reduce(
      (sum, s) => sum + Object.values(s.inboundStreams).reduce((a, b) => a + b, 0),
      0,
    );
  const before = await total();
  const t0 = Date.now();
  await during?.();
  await sleep(Math.max(0, windowMs - (Date.now() - t0)));
  return ((await total()) - before) / ids.length / ((Date.now() - t0) / 60_000);
}

/** Time (ms from `t0`) until each of `ids` finds `key` on `want` (also by node, into `byNode`). */
async function findable(
  c: Cluster,
  ids: number[],
  key: string,
  want: string,
  t0: number,
  limitMs: number,
  byNode?: Map<number, number>,
) {
  const times: number[] = [];
  await Promise.all(
    ids.map(async (i) => {
      while (Date.now() - t0 < limitMs) {
        if ((await c.lookup(i, key, 2_000, want)).found.includes(want)) {
          times.push(Date.now() - t0);
          byNode?.set(i, Date.now() - t0);
          return;
        }
        await sleep(50);
      }
    }),
  );
  return times;
}

const REGISTRY_GET = 'registry: manifest by digest from a peer (one holder), steady: p50 / p99 ms (200 OK)';
const REGISTRY_GET_COLD =
  'registry: the same, as run before: new client connection per GET, nodes cold: p50 / p99 ms (200 OK)';
const REGISTRY_GET_FIRST =
  'registry: first GET through each node after the mesh (its first peer fetch): p50 / max ms';

/**
 * Node 0 holds manifests; GETs of one by digest round-robin through the other nodes' registries, 200
 * at a time, one after the other. First as this bench ran them until now: each on a new client
 * connection, the first lap through nodes that never fetched from a peer (each process compiles the
 * registry's code on its first GETs, each node opens its connection to the holder). Then the steady
 * figure: 200 more on the client's kept-alive connection, as containerd keeps its connection to the
 * mirror. The first lap is reported on its own.
 */
async function mirrorPath(c: Cluster, all: number[], f: Figures): Promise<void> {
  const holder = c.nodes.get(0)?.peerId as string;
  const [manifest] = (await c.store(0, 4)) as [string];
  await findable(c, all.slice(1), manifest, holder, Date.now(), 30_000);
  const laps = async (keepAlive: boolean) => {
    const times: number[] = [];
    let ok = 0;
    for (let r = 0; r < 200; r++) {
      const { ms, status } = await c.get(all[1 + (r % (all.length - 1))] as number, manifest, keepAlive);
      times.push(ms);
      ok += status === 200 ? 1 : 0;
    }
    return { times, text: `${pct(times, 50).toFixed(1)} / ${pct(times, 99).toFixed(1)} (${ok}/200)` };
  };
  const cold = await laps(false);
  const first = cold.times.slice(0, all.length - 1);
  f.set(REGISTRY_GET_COLD, cold.text);
  f.set(REGISTRY_GET_FIRST, `${pct(first, 50).toFixed(1)} / ${Math.max(...first).toFixed(1)}`);
  f.set(REGISTRY_GET, (await laps(true)).text);
}

async function measure(size: number, net: number): Promise<Figures> {
  const f: Figures = new Map();
  const workers = Math.min(10, Math.ceil(size / 5));
  const c = new Cluster(workers, `127.78.${net}`);
  const dataDir = await mkdtemp(join(tmpdir(), 'ferry-scale-bench-'));
  try {
    const t0 = Date.now();
    const first = await c.start(0, { ...COMMON, dataDir });
    const meshed = await c.startMesh(size, COMMON, size >= 100 ? 600_000 : 300_000);
    // by index: the map holds the nodes in the order their start completed
    const all = [...c.nodes.keys()].sort((a, b) => a - b);
    f.set(
      'mesh formed: nodes with every peer / s',
      `${meshed}/${size} in ${((Date.now() - t0) / 1000).toFixed(0)} s`,
    );
    const cpuMesh = await c.cpuMs();
    f.set(
      'CPU per node, start until mesh formed (processes included), s',
      (cpuMesh / size / 1000).toFixed(2),
    );
    await sleep(3_000);
    if (part('idle')) {
      await idleFigures(c, f, all, size);
    }
    const holder = first.peerId;
    if (part('findable')) {
      await findableFigures(c, f, all, size, holder);
    }
    if (part('registry')) {
      await registryFigures(c, f, all, size);
    }
    if (part('many') && (size === 50 || process.argv.includes('--many-everywhere'))) {
      await manyFigures(c, f, all, holder);
    }
    const survivors = part('churn') ? await churnFigures(c, f, all, size) : all.filter((i) => i !== 0);
    if (part('restart')) {
      if (!part('churn')) {
        await c.stop(0);
      }
      await restartFigures(c, f, survivors, holder, dataDir);
    }
  } finally {
    await c.close();
    await rm(dataDir, { recursive: true, force: true });
  }
  return f;
}

async function idleFigures(c: Cluster, f: Figures, all: number[], size: number): Promise<void> {
  const cpuIdle0 = await c.cpuMs();
  const tIdle0 = Date.now();
  const idleStats0 = await Promise.all(all.map((i) => c.stats(i)));
  f.set('DHT streams in per node per minute, idle', (await streamsPerNodeMinute(c, all, 30_000)).toFixed(1));
  const idleS = (Date.now() - tIdle0) / 1000;
  const idleCpu = ((await c.cpuMs()) - cpuIdle0) / size / idleS;
  const idleStats1 = await Promise.all(all.map((i) => c.stats(i)));
  f.set(
    'CPU per node while idle, ms per s (per peer)',
    `${idleCpu.toFixed(1)} (${(idleCpu / (size - 1)).toFixed(2)})`,
  );
  const pings =
    idleStats1.reduce((a, s) => a + s.liveness.pings, 0) -
    idleStats0.reduce((a, s) => a + s.liveness.pings, 0);
  f.set('liveness pings sent per node per minute, idle', (pings / size / (idleS / 60)).toFixed(1));
  f.set(
    'connections per node, idle (one per peer)',
    (idleStats1.reduce((a, s) => a + s.connections, 0) / size).toFixed(2),
  );
  const rollout = Array.from({ length: 5 }, digest);
  const rolloutRate = await streamsPerNodeMinute(c, all, 30_000, () =>
    Promise.all(all.map((i) => c.advertise(i, rollout))),
  );
  f.set('DHT streams in per node per minute, rollout (5 digests on every node)', rolloutRate.toFixed(1));
}

async function findableFigures(c: Cluster, f: Figures, all: number[], size: number, holder: string) {
  const image = Array.from({ length: 4 }, digest);
  const tAdv = Date.now();
  await c.advertise(0, image);
  const times = await findable(c, all.slice(1), image[0] as string, holder, tAdv, 60_000);
  f.set(
    'findable, one image from node 0: p50 / p99 / max ms (nodes)',
    `${pct(times, 50)} / ${pct(times, 99)} / ${Math.max(...times)} (${times.length}/${size - 1})`,
  );
  const hits: number[] = [];
  const misses: number[] = [];
  let ok = 0;
  for (let r = 0; r < 200; r++) {
    const i = 1 + (r % (size - 1));
    const h = await c.lookup(i, image[0] as string, 2_000, holder);
    hits.push(h.ms);
    ok += h.found.includes(holder) ? 1 : 0;
    misses.push((await c.lookup(i, digest(), RESOLVE_TIMEOUT_MS)).ms);
  }
  f.set(
    'lookup of a held digest: p50 / p99 ms (found)',
    `${pct(hits, 50).toFixed(1)} / ${pct(hits, 99).toFixed(1)} (${ok}/200)`,
  );
  f.set(
    `miss, ${RESOLVE_TIMEOUT_MS} ms deadline: p50 / p99 ms`,
    `${pct(misses, 50).toFixed(1)} / ${pct(misses, 99).toFixed(1)}`,
  );
}

async function registryFigures(c: Cluster, f: Figures, all: number[], size: number): Promise<void> {
  await mirrorPath(c, all, f).catch((err: unknown) => f.set(REGISTRY_GET, `failed: ${String(err)}`));
  const regMisses: number[] = [];
  try {
    for (let r = 0; r < 200; r++) {
      regMisses.push((await c.get(1 + (r % (size - 1)), digest())).ms);
    }
  } catch {}
  f.set(
    `registry: miss, ${MIRROR_RESOLVE_TIMEOUT_MS} ms resolve timeout: p50 / p99 ms (answered)`,
    `${pct(regMisses, 50).toFixed(1)} / ${pct(regMisses, 99).toFixed(1)} (${regMisses.length}/200)`,
  );
}

async function manyFigures(c: Cluster, f: Figures, all: number[], holder: string): Promise<void> {
  const many = Array.from({ length: 10_000 }, digest);
  const tMany = Date.now();
  await c.advertise(0, many);
  const probes = [
    many[many.length - 1] as string,
    ...Array.from({ length: 20 }, () => many[Math.floor(Math.random() * many.length)] as string),
  ];
  let manyS = 'not within 120 s';
  await until(
    '10,000 digests findable',
    async () => {
      const res = await Promise.all(
        all.slice(1).flatMap((i) => probes.map((k) => c.lookup(i, k, 2_000, holder))),
      );
      return res.every((r) => r.found.includes(holder));
    },
    120_000,
  )
    .then(() => {
      manyS = ((Date.now() - tMany) / 1000).toFixed(1);
    })
    .catch(() => {});
  f.set('10,000 digests from node 0 findable on every node, s', manyS);
}

/** Kill 20% of the nodes (node 0 among them); returns the survivors. */
async function churnFigures(c: Cluster, f: Figures, all: number[], size: number): Promise<number[]> {
  // churn: node 0 and others, 20% in all, killed; nodes 1 and 2 keep holding the churn digest
  const churnKey = digest();
  await Promise.all([0, 1, 2].map((i) => c.advertise(i, [churnKey])));
  const keepers = [c.nodes.get(1)?.peerId, c.nodes.get(2)?.peerId] as string[];
  const others = all.filter((i) => i > 2);
  await findable(c, others, churnKey, keepers[1] as string, Date.now(), 30_000);
  const killCount = Math.max(1, Math.round(size * 0.2));
  const victims = [0, ...others.sort(() => Math.random() - 0.5).slice(0, killCount - 1)];
  const deadIds = victims.map((i) => c.nodes.get(i)?.peerId as string);
  const tKill = Date.now();
  await Promise.all(victims.map((i) => c.stop(i)));
  const survivors = all.filter((i) => !victims.includes(i));
  const churnLookups = async () => {
    let good = 0;
    for (let r = 0; r < 100; r++) {
      const i = survivors[r % survivors.length] as number;
      const { found, ms } = await c.lookup(i, churnKey, 2_000);
      if (found.some((p) => keepers.includes(p)) && !found.some((p) => deadIds.includes(p))) {
        good++;
      } else {
        // what a failed lookup returned, and what its node held then: to stderr
        const s = await c.stats(i);
        const name = (p: string) =>
          keepers.includes(p) ? `keeper ${keepers.indexOf(p) + 1}` : deadIds.includes(p) ? 'dead' : p;
        process.stderr.write(
          `churn lookup failed on node ${i} after ${ms.toFixed(0)} ms: found [${found.map(name).join(', ')}]; ` +
            `members ${s.members}, settled ${s.settled}, records ${s.records}, gone ${JSON.stringify(
              (await c.events(i)).gone
                .filter((g) => keepers.includes(g.peer))
                .map((g) => `${g.at - tKill} ms: ${g.reason ?? '?'}`),
            )} after the kill for keepers\n`,
        );
      }
    }
    return good;
  };
  const atOnce = await churnLookups();
  let known = 'not within 120 s';
  await until(
    'deaths known',
    async () => {
      const ev = await Promise.all(survivors.map((i) => c.events(i)));
      return ev.every((e) => deadIds.every((d) => e.gone.some((g) => g.peer === d)));
    },
    120_000,
  )
    .then(() => {
      known = ((Date.now() - tKill) / 1000).toFixed(1);
    })
    .catch(() => {});
  const after = await churnLookups();
  const ev = await Promise.all(survivors.map((i) => c.events(i)));
  // a dial counts as late when, at its time, the node held the peer dead: its last gone/back
  // event for that peer before the dial was a gone (a peer that connected again is alive)
  const late = ev.reduce((n, e) => n + e.unreachable.filter((u) => heldDead(e, u.peer, u.at)).length, 0);
  f.set('churn (20% killed, a holder among them): deaths known everywhere, s', known);
  f.set('churn: lookups of the still-held digest right after / once known', `${atOnce}/100 / ${after}/100`);
  f.set('churn: dials to a peer after it was known dead', String(late));
  return survivors;
}

/** Node 0 (stopped) restarts with its identity and advertises a new digest. */
async function restartFigures(
  c: Cluster,
  f: Figures,
  survivors: number[],
  holder: string,
  dataDir: string,
): Promise<void> {
  await Promise.all(survivors.map((i) => c.watch(i, holder)));
  // lookups that asked peers, were shed, and introductions sent and received, summed over survivors
  const sums = async () => {
    const all = await Promise.all(survivors.map((i) => c.stats(i)));
    const sum = (pick: (s: (typeof all)[number]) => number) => all.reduce((a, s) => a + pick(s), 0);
    return [
      sum((s) => s.lookups.network),
      sum((s) => s.lookups.shed),
      sum((s) => s.introductions.sent),
      sum((s) => s.introductions.received),
    ];
  };
  // ask streams each survivor answered (where the asking rounds' load fell)
  const asksAnswered = async () =>
    (await Promise.all(survivors.map((i) => c.stats(i)))).map(
      (s) => s.inboundStreams[FERRY_ASK_PROTOCOL] ?? 0,
    );
  const asks0 = await asksAnswered();
  const [cpu0, sums0] = [await c.cpuMs(), await sums()];
  const fresh = digest();
  const tRestart = Date.now();
  // from any survivor that reported a listen address (the keepers first)
  const via = survivors.map((i) => c.nodes.get(i)?.addresses[0]).find((a) => a !== undefined);
  await c.start(0, { ...COMMON, dataDir, ...(via === undefined ? {} : { bootstrap: [via] }) });
  await c.advertise(0, [fresh]);
  const tStarted = Date.now() - tRestart;
  const byNode = new Map<number, number>();
  const rejoin = await findable(c, survivors, fresh, holder, tRestart, 60_000, byNode);
  f.set(
    'restart: node 0 rejoins, its new digest findable: p50 / max ms (nodes)',
    `${pct(rejoin, 50)} / ${Math.max(...rejoin)} (${rejoin.length}/${survivors.length})`,
  );
  // where the time went, per member (ms after the restart began): to stderr, not in the table
  const ms = (at: number | undefined) => (at === undefined ? '-' : String(at - tRestart));
  const lines = await Promise.all(
    survivors.map(async (i) => {
      const w = (await c.events(i)).watched;
      return { i, found: byNode.get(i) ?? Number.POSITIVE_INFINITY, w };
    }),
  );
  lines.sort((a, b) => a.found - b.found);
  const wall = Date.now() - tRestart;
  process.stderr.write(
    `restart trace: node 0 started and advertised after ${tStarted} ms; until the last found it ` +
      `${wall} ms, CPU of all processes ${(((await c.cpuMs()) - cpu0) / wall).toFixed(2)} cores, ` +
      `${(await sums()).map((n, k) => n - (sums0[k] as number)).join(' / ')} lookups asked peers / shed / ` +
      'introductions sent / received by the survivors\n',
  );
  const asked = (await asksAnswered()).map((n, k) => n - (asks0[k] as number)).sort((a, b) => b - a);
  process.stderr.write(
    `restart asks answered per survivor: max ${asked[0] ?? 0}, p50 ${pct(asked, 50)}, top 3 ` +
      `${asked.slice(0, 3).reduce((a, n) => a + n, 0)} of ${asked.reduce((a, n) => a + n, 0)}\n`,
  );
  process.stderr.write(`node 0's log: ${JSON.stringify((await c.events(0)).log)}\n`);
  process.stderr.write('node | connect (dialled by) | identify | first record | findable\n');
  for (const { i, found, w } of lines) {
    process.stderr.write(
      `${i} | ${ms(w?.connect)} (${w?.inbound === undefined ? '-' : w.inbound ? '0' : 'member'}) | ${ms(w?.identify)} | ${ms(w?.records)} | ${found}\n`,
    );
  }
}

const TARGETS: Record<string, string> = {
  'findable, one image from node 0: p50 / p99 / max ms (nodes)': 'p99 ≤ 2,000',
  'lookup of a held digest: p50 / p99 ms (found)': 'every one found',
  [`miss, ${RESOLVE_TIMEOUT_MS} ms deadline: p50 / p99 ms`]: `p99 ≤ ${RESOLVE_TIMEOUT_MS + 5}`,
  '10,000 digests from node 0 findable on every node, s': '≤ 10 at 50 nodes',
  [REGISTRY_GET]: 'p99 ≤ 20 at 30 and 50 nodes; every one 200',
  [`registry: miss, ${MIRROR_RESOLVE_TIMEOUT_MS} ms resolve timeout: p50 / p99 ms (answered)`]: `p99 ≤ ${MIRROR_RESOLVE_TIMEOUT_MS + 5}`,
  'churn: lookups of the still-held digest right after / once known': '100%',
  'churn: dials to a peer after it was known dead': '0',
  'restart: node 0 rejoins, its new digest findable: p50 / max ms (nodes)': '≤ 5,000',
  'DHT streams in per node per minute, idle': 'grows at most linearly',
  'connections per node, idle (one per peer)': 'size − 1',
  'DHT streams in per node per minute, rollout (5 digests on every node)': 'grows at most linearly',
};

/** Measure every size (the first is the baseline) and return the Markdown table. */
export async function clusterFigures(sizes: number[], onSize?: (table: string) => void): Promise<string> {
  const bySize: Figures[] = [];
  for (const [n, size] of sizes.entries()) {
    const t0 = Date.now();
    bySize.push(await measure(size, 10 + n));
    process.stderr.write(`scale-figures: ${size} nodes in ${((Date.now() - t0) / 1000).toFixed(0)} s\n`);
    onSize?.(table(sizes.slice(0, bySize.length), bySize));
  }
  return table(sizes, bySize);
}

function table(sizes: number[], bySize: Figures[]): string {
  const names = [...new Set(bySize.flatMap((f) => [...f.keys()]))];
  const lines = [
    `| figure | ${sizes.map((s) => `${s} nodes`).join(' | ')} | target |`,
    `| --- | ${sizes.map(() => '---').join(' | ')} | --- |`,
    ...names.map(
      (name) => `| ${name} | ${bySize.map((f) => f.get(name) ?? '—').join(' | ')} | ${TARGETS[name] ?? ''} |`,
    ),
  ];
  return `${lines.join('\n')}\n`;
}
