/**
 * Trust scenarios 1–6 on a three-node rig (real docker-registry, real containerd, real agents holding the
 * cluster's network key) with a hostile peer built from @ferry/p2p (test/rig/adversary.ts):
 *  1. without the key, or with a wrong one, it cannot connect or learn a digest or tag key (a member can);
 *  3. it serves wrong bytes: nothing wrong is committed, the peer is quarantined for that digest, and the
 *     pull succeeds (containerd 1.6 resumes a broken body with Range, so at the latest on its retry);
 *  4. it claims a 1 GiB body for a small layer: nothing past the true size reaches containerd;
 *  6. it announces another service's address: nothing connects to that service;
 *  2. with the key it lies about a tag's resolution time during an upstream outage: no hijack on a node
 *     with its own upstream record, a future time is refused, and nothing of the lie outlives the outage.
 * Scenario 5 (Sybil peers) is test/e2e/trust-sybils.test.ts.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { tagKey } from '@ferry/oci';
import { AGENT_PORTS, buildImage, type ClusterNode, pushImage, waitFor } from '../rig/index.ts';
import { digestsOf, registryRequest } from './helpers.ts';
import { ACCEPT, contentOf, imageDigest, lookupFrom, trustRig } from './trust-helpers.ts';

const rig = trustRig();
const { adversary, node } = rig;

async function headTag(n: ClusterNode, repoTag: string) {
  const [repo, tag] = repoTag.split(':') as [string, string];
  const res = await registryRequest(n, rig.cluster, `/v2/${repo}/manifests/${tag}`, {
    method: 'HEAD',
    headers: { accept: ACCEPT },
  });
  return { status: res.status, digest: res.headers.get('docker-content-digest') ?? undefined };
}

test('1. without the network key (or with a wrong one) a peer cannot connect or learn a key; a member can', async () => {
  const img = await buildImage({ layers: [200_000] });
  await pushImage(rig.cluster.upstream.url, 'trust/known', 'v1', img);
  await node(1).pull(rig.cluster.ref('trust/known:v1'));
  const key = tagKey(rig.cluster.upstream.host, 'trust/known', 'v1');

  // Control: a holder of the key learns the digest's and the tag's providers.
  const member = await adversary(40, { networkKey: rig.cluster.networkKey as Uint8Array });
  await waitFor(async () => (await lookupFrom(member, img.digest)).length > 0, {
    timeoutMs: 30_000,
    what: 'a member finds the manifest digest',
  });
  assert.ok((await lookupFrom(member, key)).length > 0, 'a member finds the tag key');
  await member.stop();

  const outsiders = [await adversary(41), await adversary(42, { networkKey: new Uint8Array(32).fill(7) })];
  // Each has dialled every node (bootstrap) and keeps retrying; give them the time a member needed, and more.
  const deadline = Date.now() + 5_000;
  while (Date.now() < deadline) {
    for (const o of outsiders) {
      assert.deepEqual(o.node.peers(), [], 'no connection to a member');
      assert.equal(o.node.ready(), false);
      for (const k of [img.digest, img.layers[0]!.digest, key])
        assert.deepEqual(await lookupFrom(o, k), [], `nothing learned about ${k}`);
    }
  }
  for (const o of outsiders) await o.stop();
});

/** The largest ingest data file containerd holds while `during` runs (sampled), in bytes. */
async function maxIngest(n: ClusterNode, during: Promise<unknown>): Promise<number> {
  const dir = join(n.containerd.contentPath, 'ingest');
  let max = 0;
  let done = false;
  const sample = () => {
    let entries: string[] = [];
    try {
      entries = readdirSync(dir);
    } catch {
      return;
    }
    for (const e of entries) {
      try {
        max = Math.max(max, statSync(join(dir, e, 'data')).size);
      } catch {
        // gone between readdir and stat
      }
    }
  };
  const sampling = (async () => {
    while (!done) {
      sample();
      await new Promise((r) => setTimeout(r, 20));
    }
  })();
  try {
    await during;
  } finally {
    done = true;
    await sampling;
  }
  return max;
}

test('3. a member serving wrong bytes: containerd never commits them, the peer is quarantined for that digest, the pull succeeds (at the latest on the retry)', async () => {
  const img = await buildImage({ layers: [400_000] });
  await pushImage(rig.cluster.upstream.url, 'trust/wrong', 'v1', img);
  // The only peer holding it: every blob by digest goes to it first.
  const liar = await adversary(43, { networkKey: rig.cluster.networkKey as Uint8Array });
  liar.hold(contentOf(img));
  liar.blobs = 'corrupt';
  await liar.advertise(digestsOf(img));
  const n = node(2);
  const layer = img.layers[0]!.digest;
  await waitFor(
    async () =>
      (await registryRequest(n, rig.cluster, `/v2/trust/wrong/blobs/${layer}`, { method: 'HEAD' })).status ===
      200,
    {
      timeoutMs: 30_000,
      what: 'node 2 finds the liar',
    },
  );
  // The relay hashes as it streams and holds the last chunk back: on the mismatch it breaks the response.
  // containerd 1.6 resumes a broken body with a Range request (which the agent, the liar quarantined, sends
  // on to the upstream), so this first pull may end in containerd's own digest check: never a wrong commit.
  const first = await n.pull(rig.cluster.ref('trust/wrong:v1')).then(
    () => undefined,
    (err: Error) => err,
  );
  const named = (err: Error) =>
    digestsOf(img).some((d) => err.message.includes(`unexpected commit digest`) && err.message.includes(d));
  if (first !== undefined) assert.ok(named(first), first.message);
  assert.ok(
    liar.requests.some((r) => r.method === 'GET' && r.path.includes('/blobs/')),
    'the liar was asked for a blob',
  );
  assert.ok((await n.agent!.metric('ferry_peer_fetch_failures_total', { reason: 'quarantined' })) >= 1);
  assert.match(readFileSync(n.agent!.logFile, 'utf8'), /peer quarantined for a digest/);
  // The liar is not asked for those digests again. containerd resumes a broken body into the same ingest,
  // so the next attempt can fail its commit too; once ctr's lease is gone a retry starts afresh (as a
  // kubelet backs off and retries), and succeeds.
  const gets = (d: string) => liar.requests.filter((r) => r.method === 'GET' && r.path.includes(d)).length;
  // The digests the agent quarantined the liar for (a body cut short by containerd is never judged).
  const quarantined = readFileSync(n.agent!.logFile, 'utf8')
    .split('\n')
    .filter((l) => l.includes('peer quarantined for a digest') && l.includes(liar.peerId))
    .map((l) => (JSON.parse(l) as { digest: string }).digest);
  assert.ok(quarantined.length > 0);
  const asked = new Map(quarantined.map((d) => [d, gets(d)] as const));
  let last = first;
  for (let attempt = 0; last !== undefined && attempt < 4; attempt++) {
    await sleep(2000);
    last = await n.pull(rig.cluster.ref('trust/wrong:v1')).then(
      () => undefined,
      (err: Error) => err,
    );
    if (last !== undefined) assert.ok(named(last), last.message);
  }
  assert.equal(last, undefined);
  assert.equal(await imageDigest(n, rig.cluster.ref('trust/wrong:v1')), img.digest);
  // A digest the liar was quarantined for is not asked of it again.
  for (const [d, n0] of asked) assert.equal(gets(d), n0, `${d} quarantined`);
});

test('4. a member claiming 1 GiB for a small layer: nothing past the true size reaches containerd; the pull succeeds', async () => {
  const img = await buildImage({ layers: [300_000] });
  await pushImage(rig.cluster.upstream.url, 'trust/big', 'v1', img);
  const liar = await adversary(44, { networkKey: rig.cluster.networkKey as Uint8Array });
  liar.hold(contentOf(img));
  liar.blobs = { claimBytes: 1 << 30 };
  await liar.advertise(digestsOf(img));
  const n = node(3);
  const layer = img.layers[0]!;
  await waitFor(
    async () =>
      (await registryRequest(n, rig.cluster, `/v2/trust/big/blobs/${layer.digest}`, { method: 'HEAD' }))
        .status === 200,
    { timeoutMs: 30_000, what: 'node 3 finds the liar' },
  );
  const ingest = await maxIngest(n, n.pull(rig.cluster.ref('trust/big:v1')));
  assert.equal(await imageDigest(n, rig.cluster.ref('trust/big:v1')), img.digest);
  assert.ok(ingest <= layer.size, `containerd's ingest grew to ${ingest} bytes; the layer has ${layer.size}`);
  assert.ok(
    liar.requests.some((r) => r.method === 'GET' && r.path.includes(layer.digest)),
    'the liar was asked',
  );
  assert.ok((await n.agent!.metric('ferry_peer_fetch_failures_total', { reason: 'quarantined' })) >= 1);
});

/** A listener for "another service": counts every TCP connection, answers each with an HTTP 200. */
async function sentinel(host: string, port: number): Promise<{ connections(): number; close(): void }> {
  let count = 0;
  const server: Server = createServer((socket) => {
    count++;
    socket.on('error', () => {});
    socket.end('HTTP/1.1 200 OK\r\ncontent-length: 6\r\nconnection: close\r\n\r\nsecret');
  });
  await new Promise<void>((resolve) => server.listen(port, host, resolve));
  return { connections: () => count, close: () => server.close() };
}

test("6. a member announcing another service's address: nothing connects to that service", async () => {
  const img = await buildImage({ layers: [200_000] });
  await pushImage(rig.cluster.upstream.url, 'trust/ssrf', 'v1', img);
  const other = await sentinel(rig.cluster.block.host(99), AGENT_PORTS.registry);
  after(() => other.close());
  // It holds the image and serves it honestly; it only lies about where it is.
  const liar = await adversary(45, {
    networkKey: rig.cluster.networkKey as Uint8Array,
    announceHost: rig.cluster.block.host(99),
  });
  liar.hold(contentOf(img));
  await liar.advertise(digestsOf(img));
  const n = node(1);
  await waitFor(
    async () =>
      (await registryRequest(n, rig.cluster, `/v2/trust/ssrf/manifests/${img.digest}`, { method: 'HEAD' }))
        .status === 200,
    { timeoutMs: 30_000, what: 'node 1 finds the announcer' },
  );
  await n.pull(rig.cluster.ref('trust/ssrf:v1'));
  assert.equal(await imageDigest(n, rig.cluster.ref('trust/ssrf:v1')), img.digest);
  // The node fetched from the address of the peer's authenticated connection, never the announced one.
  assert.ok(liar.requests.length > 0, 'the announcer was asked at its own address');
  assert.equal(other.connections(), 0, 'the announced service saw no connection');
});

test('a peer dies mid-blob: the pull resumes from another, and the log credits every peer that served bytes', async () => {
  const img = await buildImage({ layers: [600_000] });
  await pushImage(rig.cluster.upstream.url, 'trust/resume', 'v1', img);
  const layer = img.layers[0]!;
  // One serves the start of the layer and breaks; the other answers only the resume (Range).
  const dying = await adversary(47, { networkKey: rig.cluster.networkKey as Uint8Array });
  const taker = await adversary(48, { networkKey: rig.cluster.networkKey as Uint8Array });
  for (const a of [dying, taker]) {
    a.hold(contentOf(img));
    await a.advertise(digestsOf(img));
  }
  dying.blobs = { cutAfter: 200_000 };
  taker.blobs = 'ranges-only';
  const n = node(3);
  // Node 3 picks among the holders it knows at random: once its HEADs reached both, it knows both (the
  // resume needs the taker, and the first GET needs the dying one).
  const askedForManifest = (a: typeof dying) =>
    a.requests.some((r) => r.method === 'HEAD' && r.path.includes(img.digest));
  await waitFor(
    async () => {
      await registryRequest(n, rig.cluster, `/v2/trust/resume/manifests/${img.digest}`, { method: 'HEAD' });
      return askedForManifest(dying) && askedForManifest(taker);
    },
    { timeoutMs: 30_000, what: 'node 3 finds both' },
  );
  await n.pull(rig.cluster.ref('trust/resume:v1'));
  assert.equal(await imageDigest(n, rig.cluster.ref('trust/resume:v1')), img.digest);
  assert.ok(
    taker.requests.some((r) => r.path.includes(layer.digest)),
    'the taker resumed it',
  );
  // The request's line is written when its response ends, which may be just after containerd has the bytes.
  const creditLine = () =>
    readFileSync(n.agent!.logFile, 'utf8')
      .split('\n')
      .map((l) => {
        try {
          return JSON.parse(l) as { key?: string; peers?: { id: string; bytes: number }[] };
        } catch {
          return {};
        }
      })
      .find((e) => e.key === layer.digest && e.peers !== undefined);
  const line = await waitFor(creditLine, {
    timeoutMs: 10_000,
    what: `a log line crediting the peers of ${layer.digest}`,
  });
  assert.ok(line.peers);
  const credit = new Map(line.peers.map((p) => [p.id, p.bytes]));
  assert.ok((credit.get(dying.peerId) ?? 0) > 0, 'the peer that died is credited with what it sent');
  assert.ok((credit.get(taker.peerId) ?? 0) > 0, 'the peer that took over is credited too');
  assert.equal((credit.get(dying.peerId) ?? 0) + (credit.get(taker.peerId) ?? 0), layer.size);
});

test('2. a member lying about tag times in an outage: no hijack where the node knows better, a future time is refused, nothing of the lie outlives the outage', async () => {
  const real = await buildImage({ layers: [220_000] });
  const evil = await buildImage({ layers: [230_000] });
  await pushImage(rig.cluster.upstream.url, 'trust/tag', 'v1', real);
  // Node 1 resolved v1 at the upstream itself and holds it.
  await node(1).pull(rig.cluster.ref('trust/tag:v1'));
  const upstreamAnswers = () =>
    node(1).agent!.metric('ferry_tag_resolutions_total', { mode: 'verify', outcome: 'upstream' });
  const answered = await upstreamAnswers();
  await waitFor(
    async () =>
      (await headTag(node(1), 'trust/tag:v1')).digest === real.digest && (await upstreamAnswers()) > answered,
    {
      timeoutMs: 30_000,
      what: 'node 1 records v1 from the upstream',
    },
  );
  const liar = await adversary(46, { networkKey: rig.cluster.networkKey as Uint8Array });
  liar.hold(contentOf(evil));
  const lie = (resolvedAt: number) =>
    liar.tags.set('trust/tag:v1', {
      digest: evil.digest,
      mediaType: evil.manifest.mediaType,
      size: evil.manifest.size,
      resolvedAt,
    });
  lie(Date.now() + 3600_000);
  const key = tagKey(rig.cluster.upstream.host, 'trust/tag', 'v1');
  await liar.advertise([key, ...digestsOf(evil)]);
  await waitFor(
    async () =>
      (
        await registryRequest(node(2), rig.cluster, `/v2/trust/tag/manifests/${evil.digest}`, {
          method: 'HEAD',
        })
      ).status === 200,
    { timeoutMs: 30_000, what: "node 2 finds the liar's image" },
  );
  await rig.cluster.upstream.stop();
  try {
    // A time an hour ahead is refused: node 2, knowing nothing itself, takes node 1's answer.
    await node(2).pull(rig.cluster.ref('trust/tag:v1'), { timeoutMs: 60_000 });
    assert.equal(
      await imageDigest(node(2), rig.cluster.ref('trust/tag:v1')),
      real.digest,
      'future time refused',
    );
    assert.ok(
      liar.requests.some((r) => r.method === 'HEAD' && r.path.includes('/manifests/v1')),
      'it was asked',
    );
    // A plausible time, just ahead of every honest answer.
    lie(Date.now() + 50_000);
    assert.equal((await headTag(node(1), 'trust/tag:v1')).digest, real.digest, 'own upstream record wins');
    // Node 3 knows nothing itself: the newest plausible answer wins there, for the outage (the documented bound).
    assert.equal((await headTag(node(3), 'trust/tag:v1')).digest, evil.digest);
  } finally {
    await rig.cluster.upstream.start();
  }
  // The upstream answers again: its answer replaces what node 3 learned from the liar.
  await waitFor(async () => (await headTag(node(3), 'trust/tag:v1')).digest === real.digest, {
    timeoutMs: 30_000,
    what: 'node 3 resolves v1 at the upstream again',
  });
  await liar.stop();
  // The next outage: node 3 serves the real digest, nothing of the lie is left.
  await rig.cluster.upstream.stop();
  try {
    const next = await headTag(node(3), 'trust/tag:v1');
    assert.equal(next.status, 200);
    assert.equal(next.digest, real.digest, 'the lie did not outlive the outage');
  } finally {
    await rig.cluster.upstream.start();
  }
});
