// Issue 11's figures on N full agents: the rig's real containerd daemons and agents running the bundled
// build the image runs (network key on, log level debug as in the rig's tests, the rig's 1 s mirror
// resolve timeout), every agent bootstrapped from all others, started at once. Per size, on a fresh
// cluster: start (ready, full mesh, CPU); an image pulled on node 1 findable from every other node
// (manifest HEAD by digest answered 200); manifest HEAD and GET by digest from a peer and misses
// (unknown digests), spread over the nodes; outage pulls (upstream stopped: a real `ctr images pull`
// through containerd on every other node); churn (20% of the agents SIGKILLed at once, node 1 among
// them, another node holding the image: pulls on survivors right after the kill, then again once every
// survivor dropped the dead; requests at the dead nodes' addresses counted by a listener there); the
// restart of node 1's agent (an image only it holds, findable from every survivor; the duplicate
// connections closed meanwhile). Before the kill, the live peers some agent declared gone are counted
// from the agents' logs. Nothing asserts on time: the run fails only on a broken set-up.
// FERRY_RIG_KEEP=1 keeps the agents' logs.
//   node test/bench/agents.ts [--sizes 5,30] [--out FILE]
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { registryRequest } from '../e2e/helpers.ts';
import type { BuiltImage, Cluster, ClusterNode } from '../rig/index.ts';
import { buildImage, pushImage, startCluster } from '../rig/index.ts';
import { agentCpu, buildTestBundle, connectedPeers, type DeadAddress, listenAsDead } from '../rig/scale.ts';
import { percentile, pool } from './measure.ts';

const args = process.argv.slice(2);
const opt = (name: string) => (args.includes(name) ? args[args.indexOf(name) + 1] : undefined);
const sizes = (opt('--sizes') ?? opt('--nodes') ?? '30').split(',').map(Number);
const out = opt('--out');
const REPO = 'scale/bench';
/** ctr pulls in flight at once (each is a process; 2 cores). */
const PULLS_AT_ONCE = 6;
const t0 = Date.now();
const log = (msg: string) => console.error(`${((Date.now() - t0) / 1000).toFixed(1)} s: ${msg}`);

const ms = (xs: number[]) =>
  xs.length === 0
    ? '—'
    : `${percentile(xs, 50).toFixed(1)} / ${percentile(xs, 99).toFixed(1)} / ${Math.max(...xs).toFixed(1)}`;
const secs = (xs: number[]) =>
  xs.length === 0 ? '—' : `${percentile(xs, 50).toFixed(2)} / ${Math.max(...xs).toFixed(2)}`;

/** Times one registry request on `node` (body read); its status. */
async function timed(node: ClusterNode, cluster: Cluster, path: string, method: 'HEAD' | 'GET') {
  const start = performance.now();
  const res = await registryRequest(node, cluster, path, { method });
  await res.arrayBuffer();
  return { status: res.status, ms: performance.now() - start };
}

/** Until each of `from` answers a manifest HEAD of `digest` with 200: seconds since `since` (or none). */
async function findable(
  cluster: Cluster,
  from: ClusterNode[],
  digest: string,
  since: number,
  limitMs: number,
) {
  const times: number[] = [];
  await Promise.all(
    from.map(async (node) => {
      while (Date.now() - since < limitMs) {
        const r = await timed(node, cluster, `/v2/${REPO}/manifests/${digest}`, 'HEAD').catch(
          () => undefined,
        );
        if (r?.status === 200) {
          times.push((Date.now() - since) / 1000);
          return;
        }
        await sleep(100);
      }
    }),
  );
  return times;
}

/** Real pulls through containerd on `nodes`, alternately by tag and by digest: failures as text. */
async function pulls(cluster: Cluster, nodes: ClusterNode[], img: BuiltImage, tag: string) {
  const failures: string[] = [];
  await pool(nodes, PULLS_AT_ONCE, async (node, k) => {
    const ref =
      k % 2 === 0 ? cluster.ref(`${REPO}:${tag}`) : `${cluster.upstream.host}/${REPO}@${img.digest}`;
    try {
      await node.pull(ref, { timeoutMs: 60_000 });
      const images = await node.containerd.client.listImages();
      if (!images.some((i) => i.target.digest === img.digest)) throw new Error('image not in containerd');
    } catch (err) {
      failures.push(
        `${node.name} ${ref}: ${String((err as Error).message)
          .split('\n')
          .slice(-3)
          .join(' ')}`,
      );
    }
  });
  return { ok: nodes.length - failures.length, of: nodes.length, failures };
}

/** Duplicate connections the agents closed since they started (their p2p metrics). */
async function duplicatesClosed(nodes: ClusterNode[]): Promise<number> {
  const counts = await Promise.all(
    nodes.map((nd) => nd.agent!.metric('ferry_p2p_liveness_total', { event: 'duplicate_closed' })),
  );
  return counts.reduce((a, n) => a + n, 0);
}

/** Lines in the running agents' logs that declare a peer gone (every one before a kill is a live peer). */
function peersDeclaredGone(cluster: Cluster): number {
  let count = 0;
  for (const nd of cluster.nodes) {
    if (nd.agent === undefined) continue;
    const text = readFileSync(nd.agent.logFile, 'utf8');
    count += text.split('peer gone: its provider records dropped').length - 1;
  }
  return count;
}

async function measure(n: number, bundle: string): Promise<{ rows: Map<string, string>; notes: string[] }> {
  const rows = new Map<string, string>();
  const notes: string[] = [];
  const cluster = await startCluster({ nodes: n, startAgents: false, agentEntry: bundle });
  const deadListeners: DeadAddress[] = [];
  const node = (i: number) => cluster.nodes[i - 1] as ClusterNode;
  try {
    // Images: A (node 1's, then everybody's), B (churn: node 1 and a second holder), C (node 1 only).
    const layers = [1_500_000, 1_000_000, 500_000, 250_000];
    const [a, b, c] = (await Promise.all(
      ['a', 'b', 'c'].map((seed) => buildImage({ layers, mediaTypes: 'oci', seed: `bench-agents-${seed}` })),
    )) as [BuiltImage, BuiltImage, BuiltImage];
    for (const [img, tag] of [
      [a, 'a'],
      [b, 'b'],
      [c, 'c'],
    ] as const)
      await pushImage(cluster.upstream.url, REPO, tag, img);

    // 1. Start.
    const start = Date.now();
    const ready: number[] = [];
    await Promise.all(
      cluster.nodes.map(async (nd) => {
        await (await nd.startAgent()).waitReady(180_000);
        ready.push((Date.now() - start) / 1000);
      }),
    );
    log(`${n} agents ready`);
    let mesh = 'not within 180 s';
    while (Date.now() - start < 180_000) {
      const peers = await connectedPeers(cluster);
      if ([...peers.values()].every((p) => p.length >= n - 1)) {
        mesh = ((Date.now() - start) / 1000).toFixed(1);
        break;
      }
      await sleep(1_000);
    }
    log(`mesh: ${mesh}`);
    rows.set('agents ready (/readyz) after a simultaneous start: p50 / max s', secs(ready));
    rows.set('every agent connected to every other, s', mesh);
    rows.set('agents CPU by then, s per agent', ((await agentCpu(cluster)) / n).toFixed(2));
    const ids = new Map<number, string>();
    for (const nd of cluster.nodes) ids.set(nd.index, (await nd.agent!.status()).peerId as string);

    // 2. Findable: node 1 pulls A; every other node polls a manifest HEAD by digest every 100 ms.
    await node(1).pull(cluster.ref(`${REPO}:a`));
    const others = cluster.nodes.filter((nd) => nd.index !== 1);
    const found = await findable(cluster, others, a.digest, Date.now(), 120_000);
    log(`A findable on ${found.length}/${others.length}`);
    rows.set(
      'findable: node 1 pulls an image, manifest HEAD by digest 200 on each other node: p50 / p99 / max ms (nodes)',
      `${ms(found.map((s) => s * 1000))} (${found.length}/${others.length})`,
    );

    // 3. Lookups and misses, spread over the other nodes, one at a time; node 1 is the one holder.
    for (const method of ['HEAD', 'GET'] as const) {
      const rs = [];
      for (let i = 0; i < 200; i++)
        rs.push(
          await timed(others[i % others.length]!, cluster, `/v2/${REPO}/manifests/${a.digest}`, method),
        );
      const ok = rs.filter((r) => r.status === 200);
      rows.set(
        `manifest ${method} by digest from a peer (one holder), 200 requests: p50 / p99 / max ms (200 OK)`,
        `${ms(ok.map((r) => r.ms))} (${ok.length}/200)`,
      );
    }
    const misses = [];
    for (let i = 0; i < 500; i++) {
      const digest = `sha256:${randomBytes(32).toString('hex')}`;
      misses.push(
        await timed(others[i % others.length]!, cluster, `/v2/${REPO}/manifests/${digest}`, 'HEAD'),
      );
    }
    rows.set(
      'miss (unknown digest), manifest HEAD, 500 requests: p50 / p99 / max ms (404)',
      `${ms(misses.map((r) => r.ms))} (${misses.filter((r) => r.status === 404).length}/500)`,
    );
    log('lookups and misses done');

    // 4. Outage: B on node 1 and a second holder, C on node 1 alone; upstream stopped; A on every other node.
    const second = Math.ceil(n / 2) + 1;
    await Promise.all([
      node(1).pull(cluster.ref(`${REPO}:b`)),
      node(second).pull(cluster.ref(`${REPO}:b`)),
      node(1).pull(cluster.ref(`${REPO}:c`)),
    ]);
    await cluster.upstream.stop();
    const outage = await pulls(cluster, others, a, 'a');
    log(`outage pulls ${outage.ok}/${outage.of}`);
    rows.set(
      'outage pulls (upstream stopped, node 1 holds it): pulls on every other node that succeed',
      `${outage.ok}/${outage.of}`,
    );
    for (const f of outage.failures) notes.push(`${n} nodes, outage pull failed: ${f}`);

    rows.set(
      'live peers declared gone by an agent before the kill (lines in the agents logs)',
      String(peersDeclaredGone(cluster)),
    );

    // 5. Churn: 20% SIGKILLed at once (node 1, a holder of B, among them; `second` holds B and lives).
    const killCount = Math.max(1, Math.round(n / 5));
    const candidates = others.map((nd) => nd.index).filter((i) => i !== second);
    const killed = [
      1,
      ...Array.from(
        { length: killCount - 1 },
        (_, k) => candidates[Math.floor(((k + 0.5) * candidates.length) / (killCount - 1))]!,
      ),
    ];
    const dead = new Map<number, DeadAddress>();
    const killedAt = Date.now();
    await Promise.all(killed.map((i) => node(i).agent!.kill()));
    for (const i of killed) {
      const l = await listenAsDead(node(i).host);
      deadListeners.push(l);
      dead.set(i, l);
    }
    const deadIds = new Set(killed.map((i) => ids.get(i)));
    const survivors = cluster.nodes.filter((nd) => !killed.includes(nd.index));
    const pullers = survivors.filter((nd) => nd.index !== second);
    const first = pullers.filter((_, k) => k % 2 === 0);
    const later = pullers.filter((_, k) => k % 2 === 1);
    let known: number | undefined;
    const knownWatch = (async () => {
      while (Date.now() - killedAt < 120_000) {
        const peers = await connectedPeers(cluster);
        if ([...peers.values()].every((p) => !p.some((id) => deadIds.has(id)))) {
          known = (Date.now() - killedAt) / 1000;
          return;
        }
        await sleep(250);
      }
    })();
    const wave1 = await pulls(cluster, first, b, 'b');
    const deadAsked1 = [...dead.values()].reduce((s, l) => s + l.connections(), 0);
    await knownWatch;
    for (const l of dead.values()) l.reset();
    const wave2 = await pulls(cluster, later, b, 'b');
    const deadAsked2 = [...dead.values()].reduce((s, l) => s + l.connections(), 0);
    log(
      `churn: ${wave1.ok}/${wave1.of} then ${wave2.ok}/${wave2.of}; dead asked ${deadAsked1}, ${deadAsked2}`,
    );
    rows.set(
      `churn: 20% of the agents SIGKILLed at once (node 1 among them): every survivor dropped every dead peer, s`,
      known?.toFixed(1) ?? 'not within 120 s',
    );
    rows.set(
      'churn: pulls on survivors right after the kill, upstream stopped (connections to dead nodes meanwhile)',
      `${wave1.ok}/${wave1.of} (${deadAsked1})`,
    );
    rows.set(
      'churn: pulls on the other survivors once every death is known (connections to dead nodes)',
      `${wave2.ok}/${wave2.of} (${deadAsked2})`,
    );
    for (const f of [...wave1.failures, ...wave2.failures]) notes.push(`${n} nodes, churn pull failed: ${f}`);

    // 6. Restart of node 1's agent: C (only node 1 holds it) findable from every survivor.
    await dead.get(1)!.close();
    const duplicatesBefore = await duplicatesClosed(survivors);
    const restartAt = Date.now();
    await node(1).agent!.start();
    await node(1).agent!.waitReady(60_000);
    const readyAfter = (Date.now() - restartAt) / 1000;
    const back = await findable(cluster, survivors, c.digest, restartAt, 120_000);
    log(`restart: ready after ${readyAfter.toFixed(1)} s, C findable on ${back.length}/${survivors.length}`);
    rows.set(
      "restart of node 1's agent: ready, s; an image only it holds findable from each survivor, s from the restart: p50 / max (nodes)",
      `${readyAfter.toFixed(1)}; ${secs(back)} (${back.length}/${survivors.length})`,
    );
    // A pair that dialled each other at once keeps one connection; the other is closed once idle for 2 s.
    await sleep(3_000);
    rows.set(
      'restart: duplicate connections closed (node 1 and a survivor dialled each other at once), all agents',
      String((await duplicatesClosed([node(1), ...survivors])) - duplicatesBefore),
    );
    return { rows, notes };
  } finally {
    await Promise.all(deadListeners.map((l) => l.close()));
    await cluster.dispose();
  }
}

const bundle = await buildTestBundle('bench-agents');
const results: { n: number; rows: Map<string, string>; notes: string[] }[] = [];
try {
  for (const n of sizes) {
    log(`--- ${n} nodes`);
    results.push({ n, ...(await measure(n, bundle.file)) });
  }
} finally {
  bundle.remove();
}
const names = [...(results[0]?.rows.keys() ?? [])];
const table = [
  `| figure | ${results.map((r) => `${r.n} nodes`).join(' | ')} |`,
  `| --- | ${results.map(() => '---').join(' | ')} |`,
  ...names.map((name) => `| ${name} | ${results.map((r) => r.rows.get(name) ?? '').join(' | ')} |`),
].join('\n');
const notes = results.flatMap((r) => r.notes).map((line) => `- ${line}`);
const text = `${table}\n${notes.length > 0 ? `\n${notes.join('\n')}\n` : ''}`;
console.log(text);
if (out !== undefined) writeFileSync(out, text);
