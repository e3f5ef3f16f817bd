/**
 * First-pull sharing, scenario 2: six nodes (real containerd daemons and agents with --first-pull, real
 * docker-registry behind the shaping proxy) pull a new 4-layer image at the same moment: every pull
 * succeeds and the upstream serves at most 1.2× the image. A smaller image than scenario 1 (this
 * machine runs six containerd daemons at once).
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { buildImage, type Cluster, pushImage, startCluster } from '../rig/index.ts';

let cluster: Cluster;

before(async () => {
  cluster = await startCluster({ nodes: 6, proxy: { rateBytesPerSec: 20e6 }, agentArgs: ['--first-pull'] });
  await Promise.all(cluster.nodes.map((n) => n.agent?.waitReady()));
});
after(() => cluster?.dispose());

test('2. six nodes pull a new image at once: every pull succeeds, the upstream serves it about once', async () => {
  const img = await buildImage({ layers: [2 << 20, 2 << 20, 2 << 20, 2 << 20], mediaTypes: 'oci' });
  await pushImage(cluster.upstream.url, 'demo/six', 'v1', img);
  cluster.proxy?.reset();
  await Promise.all(cluster.nodes.map((n) => n.pull(cluster.ref('demo/six:v1'))));
  for (const n of cluster.nodes) {
    for (const d of [img.config.digest, ...img.layers.map((l) => l.digest)]) {
      assert.ok((await n.containerd.client.info(d)) !== undefined, `${n.name} holds ${d}`);
    }
  }
  const image = img.config.size + img.layers.reduce((n, l) => n + l.size, 0);
  const served = cluster.proxy?.blobBytes() ?? 0;
  assert.ok(served <= 1.2 * image, `upstream served ${served} bytes for a ${image}-byte image`);
});
