/**
 * First-pull sharing on a four-node rig (real docker-registry behind the shaping proxy, real containerd
 * daemons, real agents with --first-pull): every blob bytes of the upstream go through one shared link.
 *  1. 4 nodes pull a new 4-layer image at the same moment: every pull succeeds, the upstream serves
 *     at most 1.2× the image.
 *  3. staggered start (node 2 one second after node 1): the upstream serves the image about once.
 *  5. the proxy cuts the fetcher's upstream connection mid-blob: every pull succeeds (Range resume).
 *  7. the upstream corrupts one blob once: no node commits it; the pulls fail naming the digest or
 *     succeed, and a retry succeeds.
 *  8. a lone node's first pull goes through its agent as a stream: one upstream GET per blob, and
 *     containerd writes a layer while the upstream still holds the rest of it (no store-then-serve).
 *  4. the fetcher's agent is killed with SIGKILL mid-blob: every other pull succeeds (last: it kills
 *     an agent). Its followers go on from another copy in flight or take over with Range
 *     (ferry_transfer_takeovers_total); which one depends on how far each copy got.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  type BuiltImage,
  buildImage,
  type Cluster,
  type ClusterNode,
  pushImage,
  startCluster,
} from '../rig/index.ts';

/** Blob bytes of an image (config and layers: what the proxy counts). */
const blobBytes = (img: BuiltImage) => img.config.size + img.layers.reduce((n, l) => n + l.size, 0);

let cluster: Cluster;

before(async () => {
  // 40 MB/s: a 4×6 MiB image takes ~0.6 s of link time once, ~2.5 s four times over.
  cluster = await startCluster({ nodes: 4, proxy: { rateBytesPerSec: 40e6 }, agentArgs: ['--first-pull'] });
  await Promise.all(cluster.nodes.map((n) => n.agent?.waitReady()));
});
after(() => cluster?.dispose());

async function newImage(repo: string, layers: number[]): Promise<BuiltImage> {
  const img = await buildImage({ layers, mediaTypes: 'oci' });
  await pushImage(cluster.upstream.url, repo, 'v1', img);
  cluster.proxy?.reset();
  return img;
}

async function holds(node: ClusterNode, img: BuiltImage): Promise<boolean> {
  for (const d of [img.config.digest, ...img.layers.map((l) => l.digest)]) {
    if ((await node.containerd.client.info(d)) === undefined) return false;
  }
  return true;
}

test('1. four nodes pull a new image at once: every pull succeeds, the upstream serves it about once', async () => {
  const img = await newImage('demo/burst', [6 << 20, 6 << 20, 6 << 20, 6 << 20]);
  await Promise.all(cluster.nodes.map((n) => n.pull(cluster.ref('demo/burst:v1'))));
  for (const n of cluster.nodes) assert.ok(await holds(n, img), `${n.name} holds the image`);
  const served = cluster.proxy?.blobBytes() ?? 0;
  assert.ok(
    served <= 1.2 * blobBytes(img),
    `upstream served ${served} bytes for a ${blobBytes(img)}-byte image`,
  );
  // The agents fetched it (not containerd), and peers streamed it while it was in flight.
  let upstream = 0;
  let shared = 0;
  for (const n of cluster.nodes) {
    upstream += (await n.agent?.metric('ferry_upstream_fetched_bytes_total')) ?? 0;
    shared += (await n.agent?.metric('ferry_inflight_shared_bytes_total')) ?? 0;
  }
  assert.ok(upstream >= blobBytes(img), `agents fetched ${upstream}`);
  assert.ok(shared >= 2 * blobBytes(img), `shared in flight ${shared}`);
});

test('3. staggered start: node 2 follows node 1 one second later; the upstream serves the image about once', async () => {
  const img = await newImage('demo/stagger', [8 << 20, 8 << 20, 4 << 20, 4 << 20]);
  const [a, b] = cluster.nodes as [ClusterNode, ClusterNode];
  const first = a.pull(cluster.ref('demo/stagger:v1'));
  await sleep(1000);
  await b.pull(cluster.ref('demo/stagger:v1'));
  await first;
  assert.ok((await holds(a, img)) && (await holds(b, img)));
  const served = cluster.proxy?.blobBytes() ?? 0;
  assert.ok(
    served <= 1.2 * blobBytes(img),
    `upstream served ${served} bytes for a ${blobBytes(img)}-byte image`,
  );
});

test('5. the proxy cuts the fetcher’s upstream connection mid-blob: every pull succeeds', async () => {
  const img = await newImage('demo/cut', [12 << 20, 1 << 20, 1 << 20, 1 << 20]);
  const big = img.layers[0]?.digest as string;
  const cut = cluster.proxy?.cutNext(big, 5 << 20);
  await Promise.all(cluster.nodes.map((n) => n.pull(cluster.ref('demo/cut:v1'))));
  assert.equal((await cut)?.bytes, 5 << 20);
  for (const n of cluster.nodes) assert.ok(await holds(n, img), `${n.name} holds the image`);
  const gets = cluster.proxy?.blobs().filter((b) => b.digest === big) ?? [];
  assert.ok(
    gets.some((g) => g.range !== undefined && g.range !== 'bytes=0-'),
    `a Range resume: ${JSON.stringify(gets)}`,
  );
  const served = cluster.proxy?.blobBytes() ?? 0;
  assert.ok(
    served <= 1.2 * blobBytes(img),
    `upstream served ${served} bytes for a ${blobBytes(img)}-byte image`,
  );
});

test('7. the upstream corrupts a blob once: no node commits it; a failed pull names the digest, a retry succeeds', async () => {
  const img = await newImage('demo/corrupt', [4 << 20, 1 << 20, 1 << 20, 1 << 20]);
  const bad = img.layers[0]?.digest as string;
  cluster.proxy?.corruptNext(bad, 3 << 20);
  const results = await Promise.allSettled(cluster.nodes.map((n) => n.pull(cluster.ref('demo/corrupt:v1'))));
  for (const [i, r] of results.entries()) {
    const node = cluster.nodes[i] as ClusterNode;
    let outcome: PromiseSettledResult<void> = r;
    // containerd resumes a broken body into the same ingest, so an attempt after a corrupt stream can
    // fail its commit too; once ctr's lease is gone, a later attempt starts afresh (a kubelet backs off).
    for (let attempt = 0; outcome.status === 'rejected' && attempt < 4; attempt++) {
      assert.match(String(outcome.reason), new RegExp(bad.slice(7, 19)), 'the error names the digest');
      await sleep(2000);
      outcome = await node.pull(cluster.ref('demo/corrupt:v1')).then(
        () => ({ status: 'fulfilled', value: undefined }) as const,
        (reason: unknown) => ({ status: 'rejected', reason }) as const,
      );
    }
    assert.equal(
      outcome.status,
      'fulfilled',
      `${node.name}: ${outcome.status === 'rejected' ? outcome.reason : ''}`,
    );
    // containerd holds the blob only under its verified digest, with the right bytes.
    assert.ok(await holds(node, img), `${node.name} holds the image`);
  }
});

test('8. a lone node pulls through: one upstream GET per blob, and containerd streams a layer before the agent has all of it', async () => {
  const img = await newImage('demo/alone', [8 << 20, 1 << 20, 1 << 20, 1 << 20]);
  const node = cluster.nodes[0] as ClusterNode;
  const big = img.layers[0]?.digest as string;
  const fetchedBefore = (await node.agent?.metric('ferry_upstream_fetched_bytes_total')) ?? 0;
  // The upstream stops after half the big layer until released: no store-then-serve, so containerd
  // must already be writing the layer's first bytes while the rest has not left the upstream.
  const hold = cluster.proxy?.holdNext(big, 4 << 20);
  assert.ok(hold);
  const pull = node.pull(cluster.ref('demo/alone:v1'));
  try {
    await hold.reached;
    let ingest: string | undefined;
    const deadline = Date.now() + 30_000;
    while (ingest === undefined && Date.now() < deadline) {
      const active = await node.containerd.ctr(['content', 'active']);
      ingest = active.split('\n').find((l) => l.includes(big.slice(7)) && !/\s0B\s/.test(l));
      if (ingest === undefined) await sleep(100);
    }
    assert.ok(ingest, 'containerd is writing the big layer while the upstream holds its second half');
    assert.equal((await node.containerd.client.info(big)) ?? undefined, undefined, 'not committed yet');
  } finally {
    hold.release();
  }
  await pull;
  assert.ok(await holds(node, img), `${node.name} holds the image`);
  // Exactly one upstream GET per blob, made by the agent (containerd's own fetch would be a second).
  const gets = cluster.proxy?.blobs() ?? [];
  for (const d of [img.config.digest, ...img.layers.map((l) => l.digest)]) {
    assert.equal(gets.filter((g) => g.digest === d).length, 1, `one upstream GET of ${d}`);
  }
  const fetched = ((await node.agent?.metric('ferry_upstream_fetched_bytes_total')) ?? 0) - fetchedBefore;
  assert.ok(fetched >= blobBytes(img), `the agent fetched ${fetched} bytes of ${blobBytes(img)}`);
});

test('4. the fetcher is killed with SIGKILL mid-blob: every other pull succeeds', async () => {
  const img = await newImage('demo/kill', [16 << 20, 1 << 20, 1 << 20, 1 << 20]);
  const big = img.layers[0]?.digest as string;
  const pulls = cluster.nodes.map((n) =>
    n.pull(cluster.ref('demo/kill:v1')).then(
      () => 'ok',
      (err: Error) => err.message,
    ),
  );
  // The node whose agent fetches the big layer from the upstream, once it is well under way.
  let fetcher: ClusterNode | undefined;
  const deadline = Date.now() + 60_000;
  while (fetcher === undefined && Date.now() < deadline) {
    for (const n of cluster.nodes) {
      const s = (await n.agent?.status().catch(() => undefined)) as
        | { transfers?: { digest: string; source: string; written: number }[] }
        | undefined;
      const t = s?.transfers?.find((x) => x.digest === big && x.source === 'upstream');
      if (t !== undefined && t.written > 4 << 20) fetcher = n;
    }
    if (fetcher === undefined) await sleep(50);
  }
  assert.ok(fetcher, 'a node fetches the big layer from the upstream');
  await fetcher.agent?.kill();
  const outcomes = await Promise.all(pulls);
  for (const [i, n] of cluster.nodes.entries()) {
    if (n === fetcher) continue;
    assert.equal(outcomes[i], 'ok', `${n.name}'s pull`);
    assert.ok(await holds(n, img), `${n.name} holds the image`);
  }
});
