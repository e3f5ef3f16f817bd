/**
 * Trust scenario 5 on a three-node rig (real docker-registry, real containerd, real agents holding the
 * cluster's network key): four Sybil members (test/rig/adversary.ts) with the lowest of 300 fresh ids each,
 * more of them than the attempts a request gets (`mirrorResolveRetries`, 3), advertise an image that
 * nodes 1 and 3 hold; node 2 pulls it while the upstream is down.
 *  a. while they serve honestly, the peer id draws no requests: ordered by id, the lowest would be asked
 *     first every time and could choose when to fail them all;
 *  b. once they fail every request, the pull still succeeds (at the latest on a kubelet's retry), and
 *     peers that failed are asked last;
 *  c. once they leave, node 2 drops their provider records within seconds, not at the records' expiry.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, test } from 'node:test';
import { tagKey } from '@ferry/oci';
import {
  type Adversary,
  type BuiltImage,
  buildImage,
  type Cluster,
  type ClusterNode,
  pushImage,
  startCluster,
  waitFor,
} from '../rig/index.ts';
import { digestsOf, registryRequest } from './helpers.ts';
import { contentOf, imageDigest, lookupFrom, startMember } from './trust-helpers.ts';

let cluster: Cluster;
const node = (i: number) => cluster.nodes[i - 1] as ClusterNode;
const adversaries: Adversary[] = [];
const ACCEPT = 'application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json';

before(async () => {
  cluster = await startCluster({ nodes: 3, startAgents: false });
  const args = [`--mirrored-registries=${cluster.upstream.url}`, '--mirror-resolve-timeout=300ms'];
  await Promise.all(cluster.nodes.map((n) => n.startAgent(args)));
  await Promise.all(cluster.nodes.map((n) => n.agent!.waitReady()));
});
after(async () => {
  for (const a of adversaries) await a.stop().catch(() => undefined);
  await cluster?.dispose();
});

async function adversary(h: number, opts: Parameters<typeof startMember>[2] = {}): Promise<Adversary> {
  const a = await startMember(cluster, h, opts);
  adversaries.push(a);
  return a;
}

/**
 * HEADs the digests of `img` on node `n` one after another, `count` in all (as containerd asks, by
 * digest); per HEAD its status and whether any of `sybils` was asked while it ran.
 */
async function headEach(n: ClusterNode, img: BuiltImage, sybils: Adversary[], count: number) {
  const digests = digestsOf(img);
  const asked = () => sybils.reduce((sum, s) => sum + s.requests.length, 0);
  const out: { status: number; sybilAsked: boolean }[] = [];
  for (let i = 0; i < count; i++) {
    const d = digests[i % digests.length] as string;
    const kind = d === img.manifest.digest ? 'manifests' : 'blobs';
    const before = asked();
    const res = await registryRequest(n, cluster, `/v2/trust/sybil/${kind}/${d}`, {
      method: 'HEAD',
      headers: { accept: ACCEPT },
    });
    out.push({ status: res.status, sybilAsked: asked() > before });
  }
  return out;
}

test('5. Sybil peers with the lowest of many ids, more than the attempts per request: they steer no choice, their failures cost the pull nothing while the upstream is down, their records go within seconds of leaving', async (t) => {
  const img = await buildImage({ layers: [250_000, 40_000] });
  await pushImage(cluster.upstream.url, 'trust/sybil', 'v1', img);
  // Two honest holders (nodes 1 and 3) and four Sybils (mirrorResolveRetries is 3) advertising everything.
  await node(1).pull(cluster.ref('trust/sybil:v1'));
  await node(3).pull(cluster.ref('trust/sybil:v1'));
  const key = tagKey(cluster.upstream.host, 'trust/sybil', 'v1');
  const sybils = await Promise.all(
    [50, 51, 52, 53].map((h) =>
      adversary(h, { networkKey: cluster.networkKey as Uint8Array, lowestIdOf: 300 }),
    ),
  );
  for (const s of sybils) {
    s.hold(contentOf(img));
    await s.advertise([...digestsOf(img), key]);
  }
  const n = node(2);
  // Every member holds every record (mesh): once another member sees all six providers of each key, so
  // does node 2, which has asked none of them yet.
  const probe = await adversary(55, { networkKey: cluster.networkKey as Uint8Array });
  for (const k of [...digestsOf(img), key])
    await waitFor(async () => (await lookupFrom(probe, k)).length >= 6, {
      timeoutMs: 30_000,
      what: `six providers of ${k}`,
    });
  await probe.stop();
  await cluster.upstream.stop();
  try {
    // a. While they serve honestly, no id draws the requests: ordered by id, the lowest Sybil would be
    //    asked first every time and could pick the moment to fail them all. At random (four of six
    //    providers), 40 HEADs in a row that each reach a Sybil have a chance of (2/3)^40, about 1e-7.
    const honest = await headEach(n, img, sybils, 40);
    assert.deepEqual(
      honest.filter((h) => h.status !== 200),
      [],
    );
    const clean = honest.filter((h) => !h.sybilAsked).length;
    assert.ok(clean > 0, `every one of ${honest.length} HEADs asked a Sybil: the choice follows the peer id`);

    // b. Now every Sybil fails every request (a signed 500, at once: each costs an attempt). A request
    //    fails only when its three attempts all go to Sybils not yet seen failing; those then go last,
    //    so with four Sybils the second pull attempt (a kubelet retries) finds an honest holder at the
    //    latest. The tag is asked of every provider at once, so it resolves from the honest ones.
    for (const s of sybils) s.failing = true;
    let pulled: Error | undefined;
    let attempts = 0;
    for (; attempts < 2; attempts++) {
      pulled = await n.pull(cluster.ref('trust/sybil:v1'), { timeoutMs: 60_000 }).then(
        () => undefined,
        (err: Error) => err,
      );
      if (pulled === undefined) break;
    }
    t.diagnostic(
      `a: ${clean} of ${honest.length} HEADs asked no Sybil; b: pulled on attempt ${attempts + 1}`,
    );
    assert.equal(pulled, undefined, `the pull failed twice while the upstream is down: ${pulled?.message}`);
    assert.equal(await imageDigest(n, cluster.ref('trust/sybil:v1')), img.digest);
    assert.ok(
      sybils.some((s) =>
        s.requests.some((r) => r.path.includes('/blobs/') || r.path.includes('/manifests/')),
      ),
      'the Sybils were asked',
    );
    // Having failed, they go last: further requests reach them only when both honest holders were
    // slower than the hedge delay. Without that order four of six first choices are Sybils (two in
    // three requests, and one in five fails outright).
    const after = await headEach(n, img, sybils, 30);
    assert.deepEqual(
      after.filter((h) => h.status !== 200),
      [],
      'every HEAD answered',
    );
    const reached = after.filter((h) => h.sybilAsked).length;
    t.diagnostic(`b: ${reached} of ${after.length} HEADs after the pull asked a Sybil`);
    assert.ok(reached < 10, `${reached} of ${after.length} HEADs went to a Sybil that had failed`);

    // c. They leave: node 2 drops their provider records within seconds (not at the records' expiry),
    //    and keeps serving from the honest holders.
    for (const s of sybils) await s.stop();
    const dropped = () =>
      readFileSync(n.agent!.logFile, 'utf8')
        .split('\n')
        .filter((l) => l.includes('its provider records dropped'))
        .map((l) => JSON.parse(l) as { peer?: string; records?: number });
    await waitFor(
      async () => sybils.every((s) => dropped().some((e) => e.peer === s.peerId && (e.records ?? 0) > 0)),
      { timeoutMs: 15_000, what: "node 2 drops every departed Sybil's records" },
    );
    const gone = await headEach(n, img, sybils, 10);
    assert.deepEqual(
      gone.filter((h) => h.status !== 200),
      [],
    );
  } finally {
    await cluster.upstream.start();
  }
});
