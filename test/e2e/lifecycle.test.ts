/**
 * Scenarios on a two-node rig:
 *  4. an image present in containerd before its agent starts is advertised and served.
 *  5. an image deleted on A is withdrawn and no longer served by A.
 *  +  SIGTERM stops an agent cleanly with exit code 0; a restarted agent serves again.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { type BuiltImage, buildImage, type Cluster, pushImage, startCluster, waitFor } from '../rig/index.ts';
import { digestsOf, registryRequest, waitFindable } from './helpers.ts';

let cluster: Cluster;
let app: BuiltImage;
let other: BuiltImage;

before(async () => {
  cluster = await startCluster({ nodes: 2, startAgents: false });
  [app, other] = await Promise.all([
    buildImage({ layers: [1 << 20, 100_000] }),
    buildImage({ layers: [400_000], mediaTypes: 'docker' }),
  ]);
  await pushImage(cluster.upstream.url, 'pre/app', 'v1', app);
  await pushImage(cluster.upstream.url, 'pre/other', 'v1', other);
});
after(() => cluster?.dispose());

test('an image present before the agent starts is advertised and served', async () => {
  const [a, b] = cluster.nodes as [(typeof cluster.nodes)[0], (typeof cluster.nodes)[0]];
  // No agent yet: the mirror in hosts.toml refuses connections and containerd goes to the upstream.
  await a.pull(cluster.ref('pre/app:v1'));
  await a.pull(cluster.ref('pre/other:v1'));
  await Promise.all([a.startAgent(), b.startAgent()]);
  await Promise.all([a.agent!.waitReady(), b.agent!.waitReady()]);
  await waitFindable(b, cluster, 'pre/app', digestsOf(app));

  await cluster.upstream.stop();
  await b.pull(cluster.ref('pre/app:v1'));
  assert.ok((await b.containerd.client.listImages()).some((i) => i.target.digest === app.digest));
  assert.ok((await b.agent!.metric('ferry_peer_fetched_bytes_total')) > 0);
});

test('an image deleted on A is withdrawn and no longer served by A', async () => {
  const [a, b] = cluster.nodes as [(typeof cluster.nodes)[0], (typeof cluster.nodes)[0]];
  const layer = other.layers[0]!.digest;
  await waitFindable(b, cluster, 'pre/other', [layer]);
  const advertised = () => a.agent!.metric('ferry_advertised_keys', { kind: 'digest' });
  const before = await advertised();

  // Remove every name of the image; containerd's GC then drops the blobs (no event for that).
  for (const img of await a.containerd.client.listImages()) {
    if (img.target.digest === other.digest) await a.containerd.ctr(['images', 'rm', '--sync', img.name]);
  }
  await waitFor(async () => (await advertised()) <= before - digestsOf(other).length, {
    timeoutMs: 30_000,
    what: 'A withdraws the deleted image',
  });
  // A answers its peers 404 for the layer now...
  const direct = await fetch(
    `${a.agent!.registryUrl}/v2/pre/other/blobs/${layer}?ns=${cluster.upstream.host}`,
    {
      headers: { 'x-ferry-mirrored': 'true' },
    },
  );
  assert.equal(direct.status, 404);
  assert.equal(((await direct.json()) as { errors: { code: string }[] }).errors[0]?.code, 'BLOB_UNKNOWN');
  // ...so B's mirror path misses (a stale DHT record costs one failed attempt at most), fast.
  const res = await registryRequest(b, cluster, `/v2/pre/other/blobs/${layer}`);
  assert.equal(res.status, 404);
  // The shared, still-present image stays advertised and served.
  const kept = await registryRequest(b, cluster, `/v2/pre/app/blobs/${app.layers[0]!.digest}`, {
    method: 'HEAD',
  });
  assert.equal(kept.status, 200);
});

test('SIGTERM stops the agent with exit code 0, and a restarted agent serves again', async () => {
  const a = cluster.nodes[0]!;
  await a.agent!.stop();
  assert.equal(a.agent!.running(), false);
  assert.equal(a.agent!.exitCode(), 0, a.agent!.logs());
  await a.agent!.start();
  await a.agent!.waitReady();
  const res = await fetch(
    `${a.agent!.registryUrl}/v2/pre/app/manifests/${app.digest}?ns=${cluster.upstream.host}`,
    {
      headers: { 'x-ferry-mirrored': 'true' },
    },
  );
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('docker-content-digest'), app.digest);
});
