/**
 * Issue 11 in the rig: 25 full nodes (real containerd and real agents with the network key, beyond
 * kad-dht's k = 20), the agents running the bundled build the image runs. A small image (four layers, 3.2 MB) is pulled by tag on two holders; the upstream stops;
 * one holder is SIGKILLed. Then:
 *  1. six other nodes pull it at once, by tag and by digest (three of them the farthest from the
 *     manifest's DHT key, outside its k closest): every pull succeeds, every byte comes from live peers,
 *     the live holder served them, and the dead node is asked at most once per asking node;
 *  2. once every live node has dropped the dead one, two more nodes pull it and none asks the dead node.
 * The dead node's registry address answers every connection by closing it (a killed agent's port
 * refuses it): the same failure for the asking node, but here each request is counted with the peer id
 * it is signed with.
 *
 * Opt-in, not part of the suite: FERRY_E2E_SCALE=1 runs it. FERRY_E2E_SCALE_NODES=n runs another size
 * (at least 11), FERRY_E2E_SCALE_CHART=1 runs the agents with the chart's Node and malloc settings,
 * FERRY_E2E_SCALE_DEBUG=1 prints each step with the agents' CPU seconds and, every 5 s, their peer
 * counts. On the 2-core test machine (figures in test/rig/README.md) it passed 2 of 3 runs alone, in
 * 83-96 s (122-149 CPU-s, the mesh complete after 62-82 s), with the p2p liveness rework of 3f1f5d3;
 * the third failed: two of the six pulls had a manifest GET by digest answered 404 by their own agent
 * while the live holder was up (its logs were not kept; most likely the 1 s metadata deadline giving
 * up on the only peer, a failure the 30-node bench's logs show; 02f1a3e gives that peer 2 s, 3b926dd
 * gives late tag answers a grace). Of two runs after them one passed (88 s, 124 CPU-s) and one
 * failed 3 of 6 pulls one step later: blob GETs to the one live holder, serving the six askers' 30 blob
 * GETs at once, got no headers within the 2 s peer deadline. Before that
 * rework: next to other heavy tests the mesh took minutes or did not form (live peers' connections
 * closed, their redials timed out, and they were taken for dead), and outage pulls failed (the one live
 * holder's answers missed the 1 s deadline a node gives a peer; or, with the mesh complete, 5 of 6 pulls
 * right after the kill were answered 404 by their own agent); alone with the chart's settings the mesh
 * took ~175 s and the file 336 CPU-s. The chart's settings were not run after the rework.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import {
  type BuiltImage,
  buildImage,
  type Cluster,
  type ClusterNode,
  chartEnv,
  imageNodeArgs,
  pushImage,
  startCluster,
  waitFor,
} from '../rig/index.ts';
import {
  blobBytesByPeer,
  buildTestBundle,
  agentCpu as clusterCpu,
  type DeadAddress,
  kadDistance,
  listenAsDead,
} from '../rig/scale.ts';
import { digestsOf, layerBytes, waitFindable } from './helpers.ts';

const NODES = Number(process.env.FERRY_E2E_SCALE_NODES ?? 25);
const DEBUG = process.env.FERRY_E2E_SCALE_DEBUG !== undefined;
/** Agents with the chart's NODE_OPTIONS, malloc settings and the image's V8 flags (default: Node's). */
const CHART = process.env.FERRY_E2E_SCALE_CHART !== undefined;
const SKIP = process.env.FERRY_E2E_SCALE ? false : 'opt-in: set FERRY_E2E_SCALE=1 (25 full nodes)';
const REPO = 'scale/app';

/** Nodes by role (1-based indexes); the askers are chosen once the peer ids are known. */
const DEAD = 1;
const LIVE = Math.ceil(NODES / 2);
const WITNESS = NODES;

let cluster: Cluster;
let img: BuiltImage;
let bundle: Awaited<ReturnType<typeof buildTestBundle>>;
let deadPeer: string;
let livePeer: string;
const peerIds = new Map<number, string>();
const notes: string[] = [];
const t0 = Date.now();
const note = (what: string) => {
  notes.push(`${((Date.now() - t0) / 1000).toFixed(1)} s: ${what}`);
  if (DEBUG) console.error(notes.at(-1));
};

const node = (i: number) => cluster.nodes[i - 1] as ClusterNode;
const agentCpu = () => clusterCpu(cluster);

/** Diagnostics: every 5 s, the agents' peer counts (min/median) and CPU. */
async function meshSampler() {
  while (cluster?.nodes.some((n) => n.agent?.running())) {
    try {
      const live = cluster.nodes.filter((n) => n.agent?.running());
      const peers = (
        await Promise.all(live.map(async (n) => ((await n.agent!.status()).peers as unknown[]).length))
      ).sort((a, b) => a - b);
      note(
        `peers min ${peers[0]} median ${peers[peers.length >> 1]}; ${(await agentCpu()).toFixed(1)} CPU-s`,
      );
    } catch {
      return;
    }
    await new Promise((r) => setTimeout(r, 5_000));
  }
}

async function pullAndCheck(n: ClusterNode, byDigest: boolean) {
  const ref = byDigest ? `${cluster.upstream.host}/${REPO}@${img.digest}` : cluster.ref(`${REPO}:v1`);
  await n.pull(ref);
  const images = await n.containerd.client.listImages();
  assert.ok(
    images.some((i) => i.target.digest === img.digest),
    `${n.name}: ${ref} in containerd with digest ${img.digest}`,
  );
}

describe(`${NODES} full nodes, a holder killed with the upstream down`, { skip: SKIP }, () => {
  before(async () => {
    bundle = await buildTestBundle('scale');
    note('bundle built');
    cluster = await startCluster({
      nodes: NODES,
      startAgents: false,
      agentEntry: bundle.file,
      ...(CHART ? { agentEnv: chartEnv(), agentNodeArgs: imageNodeArgs() } : {}),
    });
    note('containerd daemons up, hosts.toml written');
    await Promise.all(cluster.nodes.map((n) => n.startAgent()));
    note('agents healthy');
    await Promise.all(cluster.nodes.map((n) => n.agent!.waitReady(120_000)));
    note(`agents ready (${(await agentCpu()).toFixed(1)} CPU-s in the agents)`);
    if (DEBUG) void meshSampler();
    for (const n of cluster.nodes) peerIds.set(n.index, (await n.agent!.status()).peerId as string);
    deadPeer = peerIds.get(DEAD) as string;
    livePeer = peerIds.get(LIVE) as string;
    img = await buildImage({
      layers: [1_500_000, 1_000_000, 500_000, 250_000],
      mediaTypes: 'oci',
      seed: 'scale-25',
    });
    await pushImage(cluster.upstream.url, REPO, 'v1', img);
    note(`image pushed (${(await agentCpu()).toFixed(1)} CPU-s in the agents)`);
  });

  after(async () => {
    await cluster?.dispose();
    bundle?.remove();
  });

  let dead: DeadAddress;
  let askers: ClusterNode[];
  let later: ClusterNode[];

  test('25 nodes, upstream down, a holder SIGKILLed: six nodes pull by tag and by digest from the live holder, the dead one asked at most once each', async (t) => {
    // Two holders pull by tag while the upstream runs.
    await Promise.all([
      node(DEAD).pull(cluster.ref(`${REPO}:v1`)),
      node(LIVE).pull(cluster.ref(`${REPO}:v1`)),
    ]);
    note('holders pulled');
    await waitFindable(node(WITNESS), cluster, REPO, digestsOf(img));
    note(`findable from the witness (${(await agentCpu()).toFixed(1)} CPU-s in the agents)`);

    // Askers: the three nodes farthest from the manifest's DHT key, three more spread over the rest.
    const candidates = cluster.nodes.filter((n) => ![DEAD, LIVE, WITNESS].includes(n.index));
    const byDistance = [...candidates].sort((a, b) => {
      const da = kadDistance(peerIds.get(a.index) as string, img.digest);
      const db = kadDistance(peerIds.get(b.index) as string, img.digest);
      return da > db ? -1 : da < db ? 1 : 0;
    });
    const far = byDistance.slice(0, 3);
    const rest = candidates.filter((n) => !far.includes(n));
    const spread = [0, 1, 2, 3, 4].map((k) => rest[Math.floor((k * rest.length) / 5)] as ClusterNode);
    askers = [...far, ...spread.slice(0, 3)];
    later = spread.slice(3);
    note(
      `askers ${askers.map((n) => n.name).join(', ')} (first three farthest from the key); later ${later.map((n) => n.name).join(', ')}`,
    );

    await cluster.upstream.stop();
    await node(DEAD).agent!.kill();
    dead = await listenAsDead(node(DEAD).host);
    t.after(() => dead.close());
    const servedBefore = await node(LIVE).agent!.metric('ferry_peer_served_bytes_total');
    note('upstream stopped, holder killed');

    const results = await Promise.allSettled(askers.map((n, k) => pullAndCheck(n, k % 2 === 1)));
    note(`askers pulled (${(await agentCpu()).toFixed(1)} CPU-s in the live agents)`);
    const failed = results.flatMap((r, k) =>
      r.status === 'rejected' ? [`${askers[k]!.name}: ${r.reason}`] : [],
    );
    assert.deepEqual(failed, [], 'every pull with the upstream down succeeds');

    // Every byte from live peers, the live holder among them; each of its served bytes counted.
    const want = layerBytes(img);
    const fromPeer = new Map<string, number>();
    for (const n of askers) {
      const got = await blobBytesByPeer(n);
      const total = [...got.values()].reduce((a, b) => a + b, 0);
      assert.ok(total >= want, `${n.name} got ${total} blob bytes from peers, want ≥ ${want}`);
      for (const [id, bytes] of got) fromPeer.set(id, (fromPeer.get(id) ?? 0) + bytes);
    }
    assert.equal(fromPeer.get(deadPeer) ?? 0, 0, 'no byte from the dead holder');
    const fromLive = fromPeer.get(livePeer) ?? 0;
    assert.ok(fromLive >= want, `the live holder served ${fromLive} bytes to the askers, want ≥ ${want}`);
    const served = (await node(LIVE).agent!.metric('ferry_peer_served_bytes_total')) - servedBefore;
    assert.ok(served >= fromLive, `the live holder counts ${served} served bytes, the askers ${fromLive}`);

    // The dead node: at most the one failed request per asking node that teaches it.
    const askerIds = new Set(askers.map((n) => peerIds.get(n.index)));
    for (const [peer, count] of dead.byPeer) {
      assert.ok(askerIds.has(peer), `only askers fetch (got a request signed by ${peer})`);
      assert.ok(count <= 1, `${peer} asked the dead node ${count} times`);
    }
    assert.ok(dead.connections() <= askers.length, `${dead.connections()} connections to the dead node`);
    note(`dead node asked ${dead.connections()} times; live holder served ${served} bytes`);
    for (const line of notes) t.diagnostic(line);
  });

  test('once every live node has dropped the dead holder, two more nodes pull without asking it', async (t) => {
    assert.ok(askers?.length, 'runs after the first scenario');
    const live = cluster.nodes.filter((n) => n.index !== DEAD);
    await waitFor(
      async () => {
        for (const n of live) {
          const peers = ((await n.agent!.status()).peers as { id: string }[]).map((p) => p.id);
          if (peers.includes(deadPeer)) return false;
        }
        return true;
      },
      { timeoutMs: 60_000, intervalMs: 500, what: 'every live node dropped the dead holder' },
    );
    note('every live node dropped the dead holder');
    const before = dead.connections();
    for (const [k, n] of later.entries()) await pullAndCheck(n, k % 2 === 0);
    note('later nodes pulled');
    assert.equal(dead.connections() - before, 0, 'no connection to the dead node once it is known dead');
    t.diagnostic(notes.slice(-2).join('; '));
  });
});
