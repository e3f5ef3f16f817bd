/**
 * `--local-clients` on a real agent (rig: real containerd, real docker-registry, the cluster's network
 * key): the listed addresses and CIDRs are the node's own clients and are served without a peer
 * signature; every other address, loopback and the node's own address included once a list is given,
 * gets 403 with an OCI error body, and a member's signed request is still served. The rig's addresses are
 * all loopback (127.a.b.x), so without the option wired the unlisted addresses would be served too.
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
  await node.pull(cluster.ref('demo/app:v1'));
  await node.agent!.stop();
  const b = cluster.block;
  await node.startAgent([`--local-clients=${b.host(50)},${b.host(64)}/28`]);
});
after(() => cluster?.dispose());

/** GET `path` on the node's registry (as containerd asks, `?ns=<upstream>`) from the local address `from`. */
async function getAt(from: string, path: string): Promise<{ status: number; body: Buffer }> {
  const url = `${node.agent!.registryUrl}${path}?ns=${encodeURIComponent(cluster.upstream.host)}`;
  const res = await getFrom(url, from);
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

test('a member’s signed request is served from any address', async () => {
  const res = await registryRequest(node, cluster, layerPath(), { asPeer: true });
  assert.equal(res.status, 200);
  assert.equal((await res.arrayBuffer()).byteLength, app.layers[0]!.size);
});
