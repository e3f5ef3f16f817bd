/**
 * Trust scenario 5 on a three-node rig (real docker-registry, real containerd, real agents holding the
 * cluster's network key): four Sybil members (test/rig/adversary.ts) with the lowest of 300 fresh ids each,
 * more of them than the attempts a request gets (`mirrorResolveRetries`, 3), advertise an image that
 * nodes 1 and 3 hold; node 2 pulls it while the upstream is down.
 *  a. while they serve honestly, the peer id draws no requests: ordered by id, the lowest would be asked
 *     first every time and could choose when to fail them all;
 *  b. once they fail every request, a peer that failed is asked last, so they cost few requests an
 *     attempt and fail at most one;
 *  c. the pull succeeds with the upstream down;
 *  d. once they leave, node 2 drops their provider records within seconds, not at the records' expiry.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { tagKey } from '@ferry/oci';
import {
  type Adversary,
  type BuiltImage,
  buildImage,
  type ClusterNode,
  pushImage,
  waitFor,
} from '../rig/index.ts';
import { digestsOf, registryRequest } from './helpers.ts';
import { ACCEPT, contentOf, imageDigest, lookupFrom, trustRig } from './trust-helpers.ts';

const rig = trustRig();
const { adversary, node } = rig;

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
    const res = await registryRequest(n, rig.cluster, `/v2/trust/sybil/${kind}/${d}`, {
      method: 'HEAD',
      headers: { accept: ACCEPT },
    });
    out.push({ status: res.status, sybilAsked: asked() > before });
  }
  return out;
}

test('5. Sybil peers with the lowest of many ids, more than the attempts per request: they steer no choice, their failures cost the pull nothing while the upstream is down, their records go within seconds of leaving', async (t) => {
  const img = await buildImage({ layers: [250_000, 40_000] });
  await pushImage(rig.cluster.upstream.url, 'trust/sybil', 'v1', img);
  // Two honest holders (nodes 1 and 3) and four Sybils (mirrorResolveRetries is 3) advertising everything.
  await node(1).pull(rig.cluster.ref('trust/sybil:v1'));
  await node(3).pull(rig.cluster.ref('trust/sybil:v1'));
  const key = tagKey(rig.cluster.upstream.host, 'trust/sybil', 'v1');
  const sybils = await Promise.all(
    [50, 51, 52, 53].map((h) =>
      adversary(h, { networkKey: rig.cluster.networkKey as Uint8Array, lowestIdOf: 300 }),
    ),
  );
  for (const s of sybils) {
    s.hold(contentOf(img));
    await s.advertise([...digestsOf(img), key]);
  }
  const n = node(2);
  // Every member holds every record (mesh): once another member sees all six providers of each key, so
  // does node 2, which has asked none of them yet.
  const probe = await adversary(55, { networkKey: rig.cluster.networkKey as Uint8Array });
  for (const k of [...digestsOf(img), key])
    await waitFor(async () => (await lookupFrom(probe, k)).length >= 6, {
      timeoutMs: 30_000,
      what: `six providers of ${k}`,
    });
  await probe.stop();
  await rig.cluster.upstream.stop();
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

    // b. Now every Sybil fails every request (a signed 500 at once, each costing one of a request's
    //    three attempts). A peer that failed goes last, so each Sybil costs at most one request an
    //    attempt: of 30 HEADs in a row at most one fails (its three attempts all went to Sybils not yet
    //    seen failing) and only the first few reach a Sybil. In random order alone two in three go to a
    //    Sybil first and one in five fails outright.
    for (const s of sybils) s.failing = true;
    const failing = await headEach(n, img, sybils, 30);
    const reached = failing.filter((h) => h.sybilAsked).length;
    const missed = failing.filter((h) => h.status !== 200).length;
    t.diagnostic(
      `a: ${clean} of ${honest.length} HEADs asked no Sybil; b: ${reached} of ${failing.length} asked a failing Sybil, ${missed} failed`,
    );
    assert.ok(
      missed <= 1,
      `${missed} of ${failing.length} HEADs failed: the failing Sybils keep costing attempts`,
    );
    assert.ok(reached < 10, `${reached} of ${failing.length} HEADs went to a Sybil that had failed before`);

    // c. The pull succeeds with the upstream down (the tag is asked of every provider at once and
    //    resolves from the honest holders); a kubelet would retry once.
    let pulled: Error | undefined;
    let attempts = 0;
    for (; attempts < 2; attempts++) {
      pulled = await n.pull(rig.cluster.ref('trust/sybil:v1'), { timeoutMs: 60_000 }).then(
        () => undefined,
        (err: Error) => err,
      );
      if (pulled === undefined) break;
    }
    t.diagnostic(`c: pulled on attempt ${attempts + 1}`);
    assert.equal(pulled, undefined, `the pull failed twice while the upstream is down: ${pulled?.message}`);
    assert.equal(await imageDigest(n, rig.cluster.ref('trust/sybil:v1')), img.digest);

    // d. They leave: node 2 drops their provider records within seconds, not at the records' expiry.
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
  } finally {
    await rig.cluster.upstream.start();
  }
});
