/**
 * Scenarios on a three-node rig (real docker-registry, real containerd daemons, real agents):
 *  1. node A pulls from the upstream; the upstream stops; node B pulls by tag and by digest from A.
 *  6. a two-platform index pulled on A is served to B.
 *  7. ranged blob reads through the mirror path return the exact bytes.
 *  8. malformed requests get the right 4xx with an OCI error body.
 *  2. an image no node has: the pull falls back to the upstream (running), fails cleanly (stopped).
 */
import assert from 'node:assert/strict';
import { createReadStream } from 'node:fs';
import { after, before, test } from 'node:test';
import {
  type BuiltImage,
  type BuiltIndex,
  buildImage,
  buildIndex,
  type Cluster,
  pushImage,
  startCluster,
} from '../rig/index.ts';
import { digestsOf, layerBytes, registryRequest, waitFindable } from './helpers.ts';

let cluster: Cluster;
let app: BuiltImage;
let multi: BuiltIndex;
let stray: BuiltImage;

before(async () => {
  cluster = await startCluster({ nodes: 3 });
  [app, multi, stray] = await Promise.all([
    buildImage({ layers: [3 << 20, 1 << 20, 200_000], mediaTypes: 'docker' }),
    buildIndex({ layers: [1 << 20, 300_000], mediaTypes: 'oci' }),
    buildImage({ layers: [500_000] }),
  ]);
  await pushImage(cluster.upstream.url, 'demo/app', 'v1', app);
  await pushImage(cluster.upstream.url, 'demo/multi', 'v1', multi);
  await pushImage(cluster.upstream.url, 'demo/stray', 'v1', stray);
  await Promise.all(cluster.nodes.map((n) => n.agent!.waitReady()));
});
after(() => cluster?.dispose());

test('node A pulls from the upstream, then B pulls by tag and by digest from A with the upstream down', async () => {
  const [a, b, c] = cluster.nodes as [
    (typeof cluster.nodes)[0],
    (typeof cluster.nodes)[0],
    (typeof cluster.nodes)[0],
  ];
  await a.pull(cluster.ref('demo/app:v1'));
  await a.pull(cluster.ref('demo/multi:v1'));
  await waitFindable(c, cluster, 'demo/app', digestsOf(app));
  await waitFindable(c, cluster, 'demo/multi', digestsOf(multi));

  await cluster.upstream.stop();
  const servedBefore = await a.agent!.metric('ferry_peer_served_bytes_total');
  await b.pull(cluster.ref('demo/app:v1'));
  const images = await b.containerd.client.listImages();
  assert.ok(images.some((i) => i.name === cluster.ref('demo/app:v1') && i.target.digest === app.digest));

  // The bytes came from A: B fetched the layers from a peer, A served them.
  const fetched = await b.agent!.metric('ferry_peer_fetched_bytes_total');
  assert.ok(fetched >= layerBytes(app), `B fetched ${fetched} bytes from peers, want ≥ ${layerBytes(app)}`);
  const served = (await a.agent!.metric('ferry_peer_served_bytes_total')) - servedBefore;
  assert.ok(served >= layerBytes(app), `A served ${served} bytes to peers, want ≥ ${layerBytes(app)}`);
  assert.ok(
    (await b.agent!.metric('ferry_mirror_requests_total', { kind: 'manifests', outcome: 'peer' })) >= 1,
  );

  // By digest, on a node that has nothing yet.
  await c.pull(`${cluster.upstream.host}/demo/app@${app.digest}`);
  const cImages = await c.containerd.client.listImages();
  assert.ok(cImages.some((i) => i.target.digest === app.digest));

  // The peer network's own figures: C sees both others, holds A's records, and its lookups were answered.
  assert.equal(await c.agent!.metric('ferry_p2p_members'), 2);
  assert.ok((await c.agent!.metric('ferry_p2p_provider_records')) >= digestsOf(app).length);
  assert.ok((await c.agent!.metric('ferry_p2p_lookups_total')) >= 1, 'lookups counted');
});

test('a two-platform index pulled on A is served to B', async () => {
  const b = cluster.nodes[1]!;
  await b.pull(cluster.ref('demo/multi:v1'));
  const img = (await b.containerd.client.listImages()).find((i) => i.name === cluster.ref('demo/multi:v1'));
  assert.equal(img?.target.digest, multi.digest);
  // Only this platform's layers are present, as on A.
  const own = multi.images[0]!;
  for (const l of own.layers) assert.ok(await b.containerd.client.info(l.digest), `layer ${l.digest} on B`);
  for (const l of multi.images[1]!.layers) assert.equal(await b.containerd.client.info(l.digest), undefined);
});

test('ranged blob reads through the mirror path return the exact bytes', async () => {
  const c = cluster.nodes[2]!;
  const layer = multi.images[0]!.layers[0]!; // held by A and B, not by C
  assert.equal(await c.containerd.client.info(layer.digest), undefined);
  const expected = Buffer.concat(
    await Array.fromAsync(createReadStream(layer.path) as AsyncIterable<Buffer>),
  );
  const cases: [string, number, number][] = [
    ['bytes=0-99', 0, 99],
    ['bytes=1000-', 1000, layer.size - 1],
    ['bytes=-4096', layer.size - 4096, layer.size - 1],
    [`bytes=${layer.size - 10}-${layer.size + 100}`, layer.size - 10, layer.size - 1],
  ];
  for (const [range, start, end] of cases) {
    const res = await registryRequest(c, cluster, `/v2/demo/multi/blobs/${layer.digest}`, {
      headers: { range },
    });
    assert.equal(res.status, 206, range);
    assert.equal(res.headers.get('content-range'), `bytes ${start}-${end}/${layer.size}`, range);
    const body = Buffer.from(await res.arrayBuffer());
    assert.ok(body.equals(expected.subarray(start, end + 1)), `bytes of ${range}`);
  }
  const whole = await registryRequest(c, cluster, `/v2/demo/multi/blobs/${layer.digest}`);
  assert.equal(whole.status, 200);
  assert.equal(whole.headers.get('docker-content-digest'), layer.digest);
  assert.ok(Buffer.from(await whole.arrayBuffer()).equals(expected));
});

test('malformed requests get the right 4xx with an OCI error body', async () => {
  const c = cluster.nodes[2]!;
  const layer = multi.images[0]!.layers[0]!;
  const cases: [string, Record<string, string>, number, string][] = [
    ['/v2/Demo/App/manifests/v1', {}, 400, 'NAME_INVALID'],
    ['/v2/demo/app/manifests/sha256:abc', {}, 400, 'DIGEST_INVALID'],
    ['/v2/demo/app/blobs/v1', {}, 400, 'DIGEST_INVALID'],
    ['/v2/demo/app/manifests/bad!tag', {}, 400, 'TAG_INVALID'],
    ['/v2/demo/app/tags/list', {}, 404, 'NAME_UNKNOWN'],
    [`/v2/demo/multi/blobs/${layer.digest}`, { range: 'bytes=5-2' }, 416, 'RANGE_INVALID'],
    [`/v2/demo/multi/blobs/${layer.digest}`, { range: 'bytes=0-1,5-6' }, 416, 'RANGE_INVALID'],
    [`/v2/demo/multi/blobs/${layer.digest}`, { range: `bytes=${layer.size}-` }, 416, 'RANGE_INVALID'],
  ];
  for (const [path, headers, status, code] of cases) {
    const res = await registryRequest(c, cluster, path, { headers });
    assert.equal(res.status, status, `${path} ${JSON.stringify(headers)}`);
    const body = (await res.json()) as { errors: { code: string; message: string }[] };
    assert.equal(body.errors[0]?.code, code, path);
    assert.ok(body.errors[0]?.message);
  }
  // The agent is still healthy after all of that.
  assert.equal((await fetch(`${c.agent!.opsUrl}/healthz`)).status, 200);
});

test('a CRI PullImage (as a kubelet pulls) finds the mirror through config_path and pulls from peers', async () => {
  const c = cluster.nodes[2]!;
  const before = await c.agent!.metric('ferry_mirror_requests_total', { outcome: 'peer' });
  await c.containerd.criPull(cluster.ref('demo/multi:v1'));
  const cImg = (await c.containerd.client.listImages()).find((i) => i.name === cluster.ref('demo/multi:v1'));
  assert.equal(cImg?.target.digest, multi.digest);
  assert.ok((await c.agent!.metric('ferry_mirror_requests_total', { outcome: 'peer' })) > before);
});

test('an image no node has falls back to the upstream at once, and fails cleanly when it is down', async () => {
  const b = cluster.nodes[1]!;
  // Upstream down (from the first test): nobody has demo/stray, the pull fails with an error, no hang.
  const missesBefore = await b.agent!.metric('ferry_mirror_requests_total', { outcome: 'miss' });
  await assert.rejects(b.pull(cluster.ref('demo/stray:v1'), { timeoutMs: 60_000 }), (err: Error) => {
    assert.doesNotMatch(err.message, /timed out|killed|SIGTERM/i, 'the pull must fail, not hang');
    return true;
  });
  assert.ok((await b.agent!.metric('ferry_mirror_requests_total', { outcome: 'miss' })) > missesBefore);

  // Upstream up: the agent answers 404 and containerd gets the image from the upstream.
  await cluster.upstream.start();
  await b.pull(cluster.ref('demo/stray:v1'));
  const img = (await b.containerd.client.listImages()).find((i) => i.name === cluster.ref('demo/stray:v1'));
  assert.equal(img?.target.digest, stray.digest);
});
