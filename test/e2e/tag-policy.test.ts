/**
 * Scenario 3, tag policy: with `--resolve-tags=false` tag requests go to the upstream while digest pulls
 * still come from peers; with a filter `:latest$` only `latest` goes upstream.
 * Node 1 holds the image (default policy), node 2 runs `--resolve-tags=false`, node 3 `--registry-filters=:latest$`.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { type BuiltImage, buildImage, type Cluster, pushImage, startCluster } from '../rig/index.ts';
import { digestsOf, registryRequest, waitFindable } from './helpers.ts';

let cluster: Cluster;
let app: BuiltImage;

before(async () => {
  cluster = await startCluster({
    nodes: 3,
    agentArgs: (i) => [[], ['--resolve-tags=false'], ['--registry-filters=:latest$']][i] ?? [],
  });
  app = await buildImage({ layers: [600_000, 50_000] });
  await pushImage(cluster.upstream.url, 'tags/app', 'v1', app);
  await pushImage(cluster.upstream.url, 'tags/app', 'latest', app);
  const a = cluster.nodes[0]!;
  await a.pull(cluster.ref('tags/app:v1'));
  await a.pull(cluster.ref('tags/app:latest'));
  await waitFindable(cluster.nodes[1]!, cluster, 'tags/app', digestsOf(app));
  await waitFindable(cluster.nodes[2]!, cluster, 'tags/app', digestsOf(app));
});
after(() => cluster?.dispose());

async function manifestStatus(node: number, ref: string): Promise<{ status: number; code?: string }> {
  const res = await registryRequest(cluster.nodes[node]!, cluster, `/v2/tags/app/manifests/${ref}`, {
    headers: { accept: app.manifest.mediaType },
  });
  if (res.status === 200) {
    assert.equal(res.headers.get('docker-content-digest'), app.digest);
    await res.arrayBuffer();
    return { status: 200 };
  }
  return { status: res.status, code: ((await res.json()) as { errors: { code: string }[] }).errors[0]?.code };
}

test('--resolve-tags=false: tags answer 404 (containerd asks the upstream), digests come from peers', async () => {
  assert.deepEqual(await manifestStatus(1, 'v1'), { status: 404, code: 'MANIFEST_UNKNOWN' });
  assert.deepEqual(await manifestStatus(1, 'latest'), { status: 404, code: 'MANIFEST_UNKNOWN' });
  assert.deepEqual(await manifestStatus(1, app.digest), { status: 200 });
  const b = cluster.nodes[1]!.agent!;
  assert.ok((await b.metric('ferry_mirror_requests_total', { kind: 'manifests', outcome: 'filtered' })) >= 2);
});

test('a filter :latest$ sends latest upstream while other tags resolve from the cluster', async () => {
  assert.deepEqual(await manifestStatus(2, 'latest'), { status: 404, code: 'MANIFEST_UNKNOWN' });
  assert.deepEqual(await manifestStatus(2, 'v1'), { status: 200 });
  assert.deepEqual(await manifestStatus(2, app.digest), { status: 200 });
});

test('with the upstream down, a tag pull needs the upstream but a digest pull comes from peers', async () => {
  await cluster.upstream.stop();
  const b = cluster.nodes[1]!;
  await assert.rejects(b.pull(cluster.ref('tags/app:v1'), { timeoutMs: 60_000 }), (err: Error) => {
    assert.doesNotMatch(err.message, /timed out|killed|SIGTERM/i, 'the pull must fail, not hang');
    return true;
  });
  await b.pull(`${cluster.upstream.host}/tags/app@${app.digest}`);
  assert.ok((await b.containerd.client.listImages()).some((i) => i.target.digest === app.digest));
  assert.ok((await b.agent!.metric('ferry_peer_fetched_bytes_total')) >= app.layers[0]!.size);
  // Node 3 resolves v1 from the cluster, so even its tag pull works without the upstream.
  await cluster.nodes[2]!.pull(cluster.ref('tags/app:v1'));
});
