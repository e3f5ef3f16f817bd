/**
 * The five benchmark figures. Each measures Ferry and a baseline in the same run, on the same rig, and
 * returns table rows (value, baseline, ratio, target). Nothing here asserts on time: a figure only throws
 * when the system under test answers wrongly (bad status, wrong byte count), never when it is slow.
 */
import { createHash, randomBytes } from 'node:crypto';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { manifestAcceptTypes } from '@ferry/oci';
import { AGENT_PORTS, type BuiltImage, type Cluster, type ClusterNode, waitFor } from '../rig/index.ts';
import { buildManyIndex, pushManyIndex } from './fixtures.ts';
import {
  agentPid,
  exchange,
  keepAlive,
  mbps,
  median,
  percentile,
  pool,
  quietCtr,
  readFileTimed,
  rigCpuSeconds,
  rssBytes,
  syncDisks,
} from './measure.ts';

const sumCpu = (m: Map<string, number>) => [...m.values()].reduce((a, b) => a + b, 0);
const cores = () => cpus().length;

/** An image pushed to the upstream for the run. */
export interface Pushed {
  repo: string;
  tag: string;
  /** `upstream-host/repo:tag` */
  ref: string;
  image: BuiltImage;
  /** Manifest, config and layer digests. */
  digests: string[];
  /** Sum of layer sizes. */
  layerBytes: number;
}

export interface Bench {
  cluster: Cluster;
  quick: boolean;
  /** The upstream's `host:port`, the `ns` containerd sends. */
  ns: string;
  /** An empty hosts dir: `ctr --hosts-dir <it> --plain-http` talks to the upstream directly. */
  emptyHosts: string;
  images: { big1: Pushed; big4: Pushed; small4: Pushed };
  /** Extra facts for the results file (one line each). */
  notes: string[];
  log(msg: string): void;
}

export interface Row {
  id: string;
  what: string;
  value: number;
  baseline: number;
  unit: string;
  baselineName: string;
  /** value / baseline */
  ratio: number;
  target: string;
  /** Whether the target is met (informational only). */
  met: boolean;
}

const MiB = 1024 * 1024;

function row(r: Omit<Row, 'ratio'>): Row {
  return { ...r, ratio: r.value / r.baseline };
}

function nodes(b: Bench): ClusterNode[] {
  return b.cluster.nodes;
}

const blobUrl = (base: string, repo: string, digest: string, ns?: string) =>
  `${base}/v2/${repo}/blobs/${digest}${ns ? `?ns=${encodeURIComponent(ns)}` : ''}`;

/** 1. A peer's GET of a 1 GiB blob from node A vs the upstream registry vs the page cache. */
export async function blobServing(b: Bench): Promise<Row[]> {
  const a = nodes(b)[0]!;
  const { repo, image } = b.images.big1;
  const layer = image.layers[0]!;
  const file = join(a.containerd.contentPath, 'blobs', 'sha256', layer.digest.slice('sha256:'.length));
  const fromAgent = keepAlive();
  const fromUpstream = keepAlive();
  const get = async (url: string, agent: ReturnType<typeof keepAlive>, headers: Record<string, string>) => {
    const r = await exchange(url, { agent, headers });
    if (r.status !== 200 || r.bytes !== layer.size)
      throw new Error(`GET ${url}: HTTP ${r.status}, ${r.bytes} of ${layer.size} bytes`);
    return mbps(r.bytes, r.totalMs);
  };
  const peerView = () =>
    get(blobUrl(a.agent!.registryUrl, repo, layer.digest, b.ns), fromAgent, { 'x-ferry-mirrored': 'true' });
  const upstream = () => get(blobUrl(b.cluster.upstream.url, repo, layer.digest), fromUpstream, {});
  const pageCache = async () => {
    const r = await readFileTimed(file);
    if (r.bytes !== layer.size) throw new Error(`${file}: ${r.bytes} of ${layer.size} bytes`);
    return mbps(r.bytes, r.ms);
  };
  // Warm-up: every source once (page cache, connections, JIT).
  await pageCache();
  await peerView();
  await upstream();
  const reps = 3;
  const s = { agent: [] as number[], upstream: [] as number[], cache: [] as number[] };
  for (let i = 0; i < reps; i++) {
    s.agent.push(await peerView());
    s.upstream.push(await upstream());
    s.cache.push(await pageCache());
  }
  fromAgent.destroy();
  fromUpstream.destroy();
  const size = `${Math.round(layer.size / MiB)} MiB`;
  b.log(`  agent ${s.agent.map((x) => x.toFixed(0)).join(', ')} MB/s`);
  b.log(`  upstream ${s.upstream.map((x) => x.toFixed(0)).join(', ')} MB/s`);
  b.log(`  page cache ${s.cache.map((x) => x.toFixed(0)).join(', ')} MB/s`);
  const agent = median(s.agent);
  return [
    row({
      id: '1a',
      what: `Blob serving: peer GET of a ${size} blob from node A's agent (median of ${reps})`,
      value: agent,
      unit: 'MB/s',
      baseline: median(s.upstream),
      baselineName: 'docker-registry GET',
      target: '≥ 1.0×',
      met: agent / median(s.upstream) >= 1.0,
    }),
    row({
      id: '1b',
      what: `Blob serving: same, vs reading the content file (fs.createReadStream, warm)`,
      value: agent,
      unit: 'MB/s',
      baseline: median(s.cache),
      baselineName: 'page cache read',
      target: '≥ 0.7×',
      met: agent / median(s.cache) >= 0.7,
    }),
  ];
}

/** sha256 of `bytes` in this process, 1 MiB updates: MB/s (the per-core floor of a verified relay). */
function hashRate(bytes: number): number {
  const chunk = randomBytes(MiB);
  const h = createHash('sha256');
  const t0 = performance.now();
  for (let n = 0; n < bytes; n += MiB) h.update(chunk);
  h.digest();
  return mbps(bytes, performance.now() - t0);
}

/**
 * 2. Node B streaming the blob from A through its mirror path vs A serving it directly; and the cost of
 * verification: the same relay of all but the last byte (a partial range, which B passes through without
 * hashing) vs the whole, verified blob, interleaved in the same run.
 */
export async function mirrorPath(b: Bench): Promise<Row[]> {
  const [a, nodeB] = nodes(b) as [ClusterNode, ClusterNode];
  const { repo, image } = b.images.big1;
  const layer = image.layers[0]!;
  if (await nodeB.containerd.client.info(layer.digest))
    throw new Error(`${nodeB.name} holds ${layer.digest}`);
  const toA = keepAlive();
  const toB = keepAlive();
  const get = async (
    url: string,
    agent: ReturnType<typeof keepAlive>,
    headers: Record<string, string>,
    want = layer.size,
  ) => {
    const r = await exchange(url, { agent, headers });
    if ((r.status !== 200 && r.status !== 206) || r.bytes !== want)
      throw new Error(`GET ${url}: HTTP ${r.status}, ${r.bytes} of ${want} bytes`);
    return mbps(r.bytes, r.totalMs);
  };
  const direct = () =>
    get(blobUrl(a.agent!.registryUrl, repo, layer.digest, b.ns), toA, { 'x-ferry-mirrored': 'true' });
  const viaB = () => get(blobUrl(nodeB.agent!.registryUrl, repo, layer.digest, b.ns), toB, {});
  const passB = () =>
    get(
      blobUrl(nodeB.agent!.registryUrl, repo, layer.digest, b.ns),
      toB,
      { range: `bytes=0-${layer.size - 2}` },
      layer.size - 1,
    );
  await viaB();
  await direct();
  await passB();
  const reps = 3;
  const s = { viaB: [] as number[], direct: [] as number[], pass: [] as number[] };
  // CPU-seconds of the whole rig (client included) per kind of GET: on a machine with few cores their
  // sum, not one thread, bounds the rate (the floor in the notes).
  const cpu = { viaB: 0, direct: 0, pass: 0 };
  const costly = async (kind: keyof typeof cpu, one: () => Promise<number>) => {
    const before = sumCpu(rigCpuSeconds());
    const rate = await one();
    cpu[kind] += sumCpu(rigCpuSeconds()) - before;
    s[kind].push(rate);
  };
  for (let i = 0; i < reps; i++) {
    await costly('viaB', viaB);
    await costly('direct', direct);
    await costly('pass', passB);
  }
  toA.destroy();
  toB.destroy();
  const hash = hashRate(Math.min(layer.size, 512 * MiB));
  b.log(`  via B ${s.viaB.map((x) => x.toFixed(0)).join(', ')} MB/s`);
  b.log(`  A direct ${s.direct.map((x) => x.toFixed(0)).join(', ')} MB/s`);
  b.log(`  via B unverified ${s.pass.map((x) => x.toFixed(0)).join(', ')} MB/s`);
  const perGiB = (k: keyof typeof cpu) => cpu[k] / reps / (layer.size / 1024 ** 3);
  const ceiling = (k: keyof typeof cpu) => (cores() * layer.size * reps) / cpu[k] / 1e6;
  b.notes.push(
    `Figure 2: sha256 in one Node process on this machine (1 MiB updates, after the runs): ${hash.toFixed(0)} MB/s, the ceiling of one thread hashing while the relay streams.`,
    `Figure 2, CPU: the whole rig (client, agents, containerd, registry) spent ${perGiB('direct').toFixed(2)} CPU-s per GiB on A serving directly, ${perGiB('viaB').toFixed(2)} on the verified relay through B, ${perGiB('pass').toFixed(2)} on the unverified one. With ${cores()} cores that allows at most ${ceiling('direct').toFixed(0)} / ${ceiling('viaB').toFixed(0)} / ${ceiling('pass').toFixed(0)} MB/s: a CPU floor of ${(ceiling('viaB') / ceiling('direct')).toFixed(2)}× for figure 2.`,
  );
  const v = median(s.viaB);
  const base = median(s.direct);
  const pass = median(s.pass);
  const mib = Math.round(layer.size / MiB);
  return [
    row({
      id: '2',
      what: `Mirror path: GET on node B (not holding it) streaming the ${mib} MiB blob from A, verified (median of ${reps})`,
      value: v,
      unit: 'MB/s',
      baseline: base,
      baselineName: 'A serving it directly',
      target: '≥ 0.8×',
      met: v / base >= 0.8,
    }),
    row({
      id: '2b',
      what: 'Cost of verification: the same verified relay through B (as 2)',
      value: v,
      unit: 'MB/s',
      baseline: pass,
      baselineName: 'B relaying all but the last byte, a range it passes through unhashed',
      target: '—',
      met: true,
    }),
  ];
}

/**
 * Removes every image record of `p` (containerd's CRI plugin adds a `sha256:<config>` record of its own for
 * images pulled into k8s.io) with `ctr images rm --sync`, until its content is gone from the store.
 */
async function removeImage(node: ClusterNode, p: Pushed): Promise<void> {
  try {
    await waitFor(
      async () => {
        const names = (await node.containerd.client.listImages())
          .filter((i) => i.target.digest === p.image.digest)
          .map((i) => i.name);
        if (names.length) {
          await node.containerd.ctr(['images', 'rm', '--sync', ...names]);
          return false; // look again: CRI may add its record right after the pull
        }
        const left: string[] = [];
        for (const d of p.digests) if (await node.containerd.client.info(d)) left.push(d);
        // Leftovers of a failed pull have no image record: remove them by digest.
        if (left.length) await node.containerd.ctr(['content', 'rm', ...left]);
        return left.length === 0;
      },
      { timeoutMs: 30_000, what: `content of ${p.ref} gone from ${node.name}` },
    );
  } catch (err) {
    const left = [];
    for (const d of p.digests) if (await node.containerd.client.info(d)) left.push(d);
    const images = (await node.containerd.client.listImages()).map((i) => i.name);
    const leases = await node.containerd.ctr(['leases', 'ls']).catch((e: Error) => e.message);
    throw new Error(
      `${(err as Error).message}; still there: ${left.join(' ')}; images: ${images.join(' ')}; leases: ${leases}`,
    );
  }
}

/** 3. `ctr images pull` on node B from peers (upstream stopped) vs from the upstream directly. */
export async function wholePull(b: Bench): Promise<Row[]> {
  const nodeB = nodes(b)[1]!;
  const upstream = b.cluster.upstream;
  const rows: Row[] = [];
  const cases: [Pushed, number, string][] = [
    [b.images.big4, 2, '3a'],
    [b.images.small4, 5, '3b'],
  ];
  for (const [p, reps, id] of cases) {
    for (const d of p.digests)
      if (await nodeB.containerd.client.info(d)) throw new Error(`${nodeB.name} already holds ${d}`);
    const peers: number[] = [];
    const direct: number[] = [];
    const failures: string[] = [];
    const cpu = { peers: 0, direct: 0 };
    for (let i = 0; i < reps; i++) {
      // From peers: the upstream is down, containerd goes through B's hosts.toml to B's agent. A pull
      // that fails (a blob answered 404: no provider found in time, and no upstream to fall back to) is
      // counted, cleaned up and retried, at most 3 attempts per repetition.
      await upstream.stop();
      for (let attempt = 1; ; attempt++) {
        const fetchedBefore = await nodeB.agent!.metric('ferry_peer_fetched_bytes_total');
        await syncDisks();
        const t0 = performance.now();
        const cpu0 = sumCpu(rigCpuSeconds());
        try {
          await nodeB.containerd.pull(p.ref, { timeoutMs: 600_000 });
        } catch (err) {
          const why =
            (err as Error).message.split('\n').find((l) => l.includes('ctr:')) ?? (err as Error).message;
          failures.push(why.trim().slice(0, 300));
          b.log(`  peer pull failed (attempt ${attempt}): ${why.trim().slice(0, 300)}`);
          await removeImage(nodeB, p);
          if (attempt >= 3) {
            await upstream.start();
            throw err;
          }
          continue;
        }
        peers.push((performance.now() - t0) / 1000);
        cpu.peers += sumCpu(rigCpuSeconds()) - cpu0;
        const fetched = (await nodeB.agent!.metric('ferry_peer_fetched_bytes_total')) - fetchedBefore;
        if (fetched < p.layerBytes)
          throw new Error(`B fetched ${fetched} bytes from peers, want ≥ ${p.layerBytes}`);
        break;
      }
      await upstream.start();
      await removeImage(nodeB, p);
      // Directly: an empty hosts dir, so containerd talks to the upstream only.
      await syncDisks();
      const t0 = performance.now();
      const cpu0 = sumCpu(rigCpuSeconds());
      await nodeB.containerd.pull(p.ref, { hostsDir: b.emptyHosts, timeoutMs: 600_000 });
      direct.push((performance.now() - t0) / 1000);
      cpu.direct += sumCpu(rigCpuSeconds()) - cpu0;
      await removeImage(nodeB, p);
    }
    if (failures.length) {
      b.notes.push(
        `Whole pull of ${p.ref} from peers: ${failures.length} attempt(s) failed and were retried (not timed), e.g. \`${failures[0]}\`.`,
      );
    }
    b.notes.push(
      `Whole pull of ${p.ref}, CPU: the whole rig spent ${(cpu.peers / reps).toFixed(1)} CPU-s per pull from peers (${(cpu.peers / reps / cores()).toFixed(2)} s of all ${cores()} cores), ${(cpu.direct / reps).toFixed(1)} CPU-s per direct pull (${(cpu.direct / reps / cores()).toFixed(2)} s of all cores).`,
    );
    b.log(`  ${p.ref}: peers ${peers.map((x) => x.toFixed(2)).join(', ')} s`);
    b.log(`  ${p.ref}: upstream ${direct.map((x) => x.toFixed(2)).join(', ')} s`);
    const v = median(peers);
    const base = median(direct);
    const size =
      p.layerBytes >= 1000 * MiB
        ? `${(p.layerBytes / 1024 / MiB).toFixed(2)} GiB`
        : p.layerBytes >= 32 * MiB
          ? `${(p.layerBytes / MiB).toFixed(0)} MiB`
          : `${(p.layerBytes / 1e6).toFixed(0)} MB`;
    rows.push(
      row({
        id,
        what: `Whole pull on node B: ${size} image, ${p.image.layers.length} layers, from peers with the upstream stopped (median of ${reps})`,
        value: v,
        unit: 's',
        baseline: base,
        baselineName: 'ctr pull from the upstream directly',
        target: '≤ 1.15×',
        met: v / base <= 1.15,
      }),
    );
  }
  return rows;
}

/** 4. Latency on 5 nodes: 404 for unknown digests, and time to first byte of a manifest found on a peer. */
export async function latency(b: Bench): Promise<Row[]> {
  const all = nodes(b);
  const n = b.quick ? 200 : 1000;
  const warm = 20;
  const small = b.images.small4;
  const a = all[0]!;
  const others = all.slice(1);
  for (const node of others)
    if (await node.containerd.client.info(small.image.digest))
      throw new Error(`${node.name} holds ${small.image.digest}`);
  const agents = new Map(all.map((node) => [node.name, keepAlive()]));
  const toUpstream = keepAlive();
  const accept = { accept: manifestAcceptTypes.join(', ') };
  const randomDigest = () => `sha256:${randomBytes(32).toString('hex')}`;

  const series = async (
    what: string,
    count: number,
    one: (i: number) => Promise<{ status: number; ms: number }>,
    status: number,
    tolerated?: number,
  ): Promise<number[]> => {
    const out: number[] = [];
    let other = 0;
    for (let i = 0; i < count + warm; i++) {
      const r = await one(i);
      if (r.status === tolerated) {
        if (i >= warm) other++;
        continue;
      }
      if (r.status !== status) throw new Error(`${what} #${i}: HTTP ${r.status}, want ${status}`);
      if (i >= warm) out.push(r.ms);
    }
    if (other) {
      b.notes.push(
        `Latency, ${what}: ${other} of ${count} requests answered ${tolerated} instead of ${status} (not found in time); their times are left out of the percentiles.`,
      );
    }
    return out;
  };
  const miss = await series(
    'miss',
    n,
    async (i) => {
      const node = all[i % all.length]!;
      const r = await exchange(blobUrl(node.agent!.registryUrl, 'bench/none', randomDigest(), b.ns), {
        agent: agents.get(node.name)!,
      });
      return { status: r.status, ms: r.totalMs };
    },
    404,
  );
  const upstream404 = await series(
    'upstream 404',
    n,
    async () => {
      const r = await exchange(blobUrl(b.cluster.upstream.url, small.repo, randomDigest()), {
        agent: toUpstream,
      });
      return { status: r.status, ms: r.totalMs };
    },
    404,
  );
  const manifestUrl = (node: ClusterNode) =>
    `${node.agent!.registryUrl}/v2/${small.repo}/manifests/${small.image.digest}?ns=${encodeURIComponent(b.ns)}`;
  const peer = await series(
    'peer manifest',
    n,
    async (i) => {
      const node = others[i % others.length]!;
      const r = await exchange(manifestUrl(node), { agent: agents.get(node.name)!, headers: accept });
      return { status: r.status, ms: r.ttfbMs };
    },
    200,
    404,
  );
  const local = await series(
    'local manifest',
    n,
    async () => {
      const r = await exchange(manifestUrl(a), { agent: agents.get(a.name)!, headers: accept });
      return { status: r.status, ms: r.ttfbMs };
    },
    200,
  );
  for (const ag of agents.values()) ag.destroy();
  toUpstream.destroy();
  const ms = (xs: number[], p: number) => percentile(xs, p);
  const missP99 = ms(miss, 99);
  return [
    row({
      id: '4a',
      what: `Miss: GET blob of an unknown digest, round-robin over ${all.length} nodes, p50 (${n} sequential, keep-alive)`,
      value: ms(miss, 50),
      unit: 'ms',
      baseline: ms(upstream404, 50),
      baselineName: 'docker-registry 404 p50',
      target: '—',
      met: true,
    }),
    row({
      id: '4b',
      what: 'Miss: same, p99',
      value: missP99,
      unit: 'ms',
      baseline: ms(upstream404, 99),
      baselineName: 'docker-registry 404 p99',
      target: 'value < 30 ms',
      met: missP99 < 30,
    }),
    row({
      id: '4c',
      what: `Manifest by digest found on a peer: time to first byte on nodes 2–${all.length} (held by node 1 only), p50`,
      value: ms(peer, 50),
      unit: 'ms',
      baseline: ms(local, 50),
      baselineName: 'node 1 answering from its own content, p50',
      target: '—',
      met: true,
    }),
    row({
      id: '4d',
      what: 'Manifest found on a peer: same, p99',
      value: ms(peer, 99),
      unit: 'ms',
      baseline: ms(local, 99),
      baselineName: 'node 1 answering locally, p99',
      target: '—',
      met: true,
    }),
  ];
}

/** 5. Thousands of digests added on A: time until B finds them all, and A's agent RSS afterwards. */
export async function advertising(b: Bench): Promise<Row[]> {
  const [a, nodeB] = nodes(b) as [ClusterNode, ClusterNode];
  const foreign = b.quick ? 249 : 1249;
  const many = buildManyIndex(foreign);
  const repo = 'bench/many';
  const ref = `${b.ns}/${repo}:v1`;
  let t0 = performance.now();
  await pushManyIndex(b.cluster.upstream.url, repo, 'v1', many);
  b.notes.push(
    `Advertising fixture: an index of ${foreign + 1} tiny images (${many.digests.length} digests) pushed in ${((performance.now() - t0) / 1000).toFixed(1)} s.`,
  );
  const pid = agentPid(a.host, AGENT_PORTS.registry);
  const rssBefore = rssBytes(pid);

  // Every platform's content onto A, straight from the upstream (A's own mirror would only add misses).
  t0 = performance.now();
  await quietCtr(a.containerd.socket, [
    'content',
    'fetch',
    '--all-platforms',
    '--plain-http',
    '--hosts-dir',
    b.emptyHosts,
    ref,
  ]);
  const fetchedAt = performance.now();
  if (!(await a.containerd.client.getImage(ref))) {
    throw new Error(`ctr content fetch created no image record ${ref} on ${a.name}`);
  }
  const present = await a.containerd.client.listContent();
  const have = new Set(present.map((c) => c.digest));
  const missing = many.digests.filter((d) => !have.has(d));
  if (missing.length)
    throw new Error(`${missing.length} digests not fetched onto ${a.name}, e.g. ${missing[0]}`);
  b.notes.push(
    `ctr content fetch --all-platforms of it on node A: ${((fetchedAt - t0) / 1000).toFixed(1)} s; ${many.digests.length} digests present.`,
  );

  // Poll from B: HEAD each digest as a blob through B's mirror path (B holds none of them). First a
  // spread sample of 200 until all are found, then every digest; each digest's first success is timed.
  const conn = keepAlive(16);
  const foundAt = new Map<string, number>();
  const deadlineMs = b.quick ? 90_000 : 150_000;
  const find = async (set: string[]) => {
    while (set.some((d) => !foundAt.has(d))) {
      if (performance.now() - fetchedAt > deadlineMs) return false;
      await pool(
        set.filter((d) => !foundAt.has(d)),
        16,
        async (d) => {
          const r = await exchange(blobUrl(nodeB.agent!.registryUrl, repo, d, b.ns), {
            agent: conn,
            method: 'HEAD',
            timeoutMs: 30_000,
          }).catch(() => undefined);
          if (r?.status === 200) foundAt.set(d, performance.now());
        },
      );
      // A short pause between passes, so polling does not starve the advertising it waits for (2 cores).
      if (set.some((d) => !foundAt.has(d))) await sleep(250);
    }
    return true;
  };
  const step = Math.max(1, Math.floor(many.digests.length / 200));
  const sample = many.digests.filter((_, i) => i % step === 0).slice(0, 200);
  const sampleOk = await find(sample);
  const sampleMs = Math.max(...sample.map((d) => foundAt.get(d) ?? Number.NaN)) - fetchedAt;
  const allOk = sampleOk && (await find(many.digests));
  conn.destroy();
  const lastMs = allOk ? Math.max(...[...foundAt.values()]) - fetchedAt : deadlineMs;
  if (sampleOk)
    b.notes.push(
      `Advertising: a spread sample of ${sample.length} digests was all findable from B after ${(sampleMs / 1000).toFixed(1)} s.`,
    );
  if (!allOk)
    b.notes.push(
      `Advertising: NOT all findable from B within ${deadlineMs / 1000} s: ${foundAt.size} of ${many.digests.length} found; the figure is the deadline.`,
    );
  const rssAfter = rssBytes(pid);
  b.notes.push(
    `Node A agent (pid ${pid}) VmRSS before the fetch: ${(rssBefore / MiB).toFixed(0)} MiB, after all were found: ${(rssAfter / MiB).toFixed(0)} MiB.`,
  );
  const secs = lastMs / 1000;
  return [
    row({
      id: '5a',
      what: `Advertising: time from the end of the fetch on A until all ${many.digests.length} digests are found from B${allOk ? '' : ' (NOT all found: deadline)'}`,
      value: secs,
      unit: 's',
      baseline: 20,
      baselineName: 'target 20 s',
      target: '≤ 1.0×',
      met: allOk && secs <= 20,
    }),
    row({
      id: '5b',
      what: `Advertising: node A agent RSS (VmRSS) after that`,
      value: rssAfter / MiB,
      unit: 'MiB',
      baseline: 200,
      baselineName: 'target 200 MiB',
      target: '≤ 1.0×',
      met: rssAfter / MiB <= 200,
    }),
  ];
}
