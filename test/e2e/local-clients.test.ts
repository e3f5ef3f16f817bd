/**
 * `--local-clients` on a real agent (rig: real containerd, real docker-registry, the cluster's network
 * key): the listed addresses and CIDRs are the node's own clients and are served without a peer
 * signature; every other address, loopback and the node's own address included once a list is given,
 * gets 403 with an OCI error body, and a member's signed request is still served. The rig's addresses are
 * all loopback (127.a.b.x), so without the option wired the unlisted addresses would be served too.
 * `X-Ferry-Mirrored: true` without a peer signature grants nothing: an unlisted address sending it still
 * gets 403, and a listed one sending it is answered as a client (a tag kept private by `upstream` mode
 * stays deferred with 404), not as a peer.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import {
  type BuiltImage,
  buildImage,
  type Cluster,
  type ClusterNode,
  pushImage,
  startCluster,
} from '../rig/index.ts';
import { getFrom, registryRequest } from './helpers.ts';

let cluster: Cluster;
let node: ClusterNode;
let app: BuiltImage;

before(async () => {
  cluster = await startCluster({ nodes: 1, startAgents: false });
  node = cluster.nodes[0]!;
  app = await buildImage({ layers: [200_000] });
  await pushImage(cluster.upstream.url, 'demo/app', 'v1', app);
  // The node's containerd pulls through its agent while the default holds (its own address is local).
  await node.startAgent();
  await pushImage(cluster.upstream.url, 'demo/private', 'v1', app);
  await node.pull(cluster.ref('demo/app:v1'));
  await node.pull(cluster.ref('demo/private:v1'));
  await node.agent!.stop();
  const b = cluster.block;
  await node.startAgent([
    `--local-clients=${b.host(50)},${b.host(64)}/28`,
    // demo/private's tags are private: the node's clients ask the upstream for them (404 here).
    '--tag-policy=/demo/private:=upstream',
  ]);
});
after(() => cluster?.dispose());

/** GET `path` on the node's registry (as containerd asks, `?ns=<upstream>`) from the local address `from`. */
async function getAt(
  from: string,
  path: string,
  headers: Record<string, string> = {},
): Promise<{ status: number; body: Buffer }> {
  const url = `${node.agent!.registryUrl}${path}?ns=${encodeURIComponent(cluster.upstream.host)}`;
  const res = await getFrom(url, from, headers);
  return { status: res.statusCode, body: res.body };
}

const layerPath = () => `/v2/demo/app/blobs/${app.layers[0]!.digest}`;

test('a listed address and an address in a listed CIDR are served without peer auth', async () => {
  for (const from of [cluster.block.host(50), cluster.block.host(64), cluster.block.host(79)]) {
    const res = await getAt(from, layerPath());
    assert.equal(res.status, 200, `${from}: ${res.body.toString().slice(0, 200)}`);
    assert.equal(res.body.length, app.layers[0]!.size);
  }
});

test('any other address gets 403 with an OCI error, loopback and the node address included', async () => {
  for (const from of [cluster.block.host(51), cluster.block.host(80), node.host, '127.0.0.1']) {
    const res = await getAt(from, layerPath());
    assert.equal(res.status, 403, from);
    const body = JSON.parse(res.body.toString()) as { errors: { code: string; message: string }[] };
    assert.equal(body.errors[0]?.code, 'DENIED', from);
  }
});

test('X-Ferry-Mirrored without a peer signature grants nothing: 403 from an unlisted address, a private tag stays deferred for a listed one', async () => {
  const mirrored = { 'x-ferry-mirrored': 'true' };
  for (const from of [cluster.block.host(51), node.host, '127.0.0.1']) {
    const res = await getAt(from, layerPath(), mirrored);
    assert.equal(res.status, 403, from);
    assert.equal(
      (JSON.parse(res.body.toString()) as { errors: { code: string }[] }).errors[0]?.code,
      'DENIED',
      from,
    );
  }
  const accept = { accept: 'application/vnd.oci.image.manifest.v1+json' };
  // Control: the node holds demo/private:v1 and its public twin demo/app:v1 is answered.
  assert.equal((await getAt(cluster.block.host(50), '/v2/demo/app/manifests/v1', accept)).status, 200);
  for (const headers of [accept, { ...accept, ...mirrored }]) {
    const res = await getAt(cluster.block.host(50), '/v2/demo/private/manifests/v1', headers);
    assert.equal(res.status, 404, JSON.stringify(headers));
    assert.equal(
      (JSON.parse(res.body.toString()) as { errors: { code: string }[] }).errors[0]?.code,
      'MANIFEST_UNKNOWN',
    );
    assert.ok(!res.body.toString().includes(app.digest), 'the private digest is not named');
  }
});

test('a member’s signed request is served from any address', async () => {
  const res = await registryRequest(node, cluster, layerPath(), { asPeer: true });
  assert.equal(res.status, 200);
  assert.equal((await res.arrayBuffer()).byteLength, app.layers[0]!.size);
});
