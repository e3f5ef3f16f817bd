import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import {
  allocateBlock,
  buildImage,
  buildIndex,
  pushImage,
  startContainerd,
  startRegistry,
  waitFor,
} from './index.ts';

test('rig: registry up, image pushed, containerd pulls through a dead mirror (falls back to upstream)', async (t) => {
  const block = allocateBlock();
  t.after(() => block.release());
  const registry = await startRegistry({ host: block.upstream, t });
  const image = await buildImage({ layers: [300_000, 5_000], mediaTypes: 'docker' });
  const pushed = await pushImage(registry.url, 'rig/app', 'v1', image, { chunkSize: 100_000 });
  assert.equal(pushed.digest, image.digest);

  // The registry serves what was pushed, byte for byte.
  const res = await fetch(`${registry.url}/v2/rig/app/blobs/${image.layers[0]!.digest}`);
  const body = Buffer.from(await res.arrayBuffer());
  assert.equal(`sha256:${createHash('sha256').update(body).digest('hex')}`, image.layers[0]!.digest);

  const node = await startContainerd({ name: 'node1', host: block.node(1), t });
  // A mirror nobody listens on, then the upstream: containerd skips the dead mirror.
  const hostDir = join(node.hostsDir, registry.host);
  mkdirSync(hostDir, { recursive: true });
  writeFileSync(
    join(hostDir, 'hosts.toml'),
    `server = "${registry.url}"\n\n[host."http://${block.node(1)}:1"]\n  capabilities = ["pull", "resolve"]\n`,
  );
  const ref = `${registry.host}/rig/app:v1`;
  await node.pull(ref);
  const images = await node.client.listImages();
  const got = images.find((i) => i.name === ref);
  assert.ok(got, `image ${ref} listed: ${images.map((i) => i.name).join(', ')}`);
  assert.equal(got.target.digest, image.digest);
  for (const l of image.layers) assert.ok(await node.client.info(l.digest), `layer ${l.digest} present`);
});

test('rig: OCI index pushed, CRI PullImage fetches the node platform through config_path', async (t) => {
  const block = allocateBlock();
  t.after(() => block.release());
  const registry = await startRegistry({ host: block.upstream, t });
  const index = await buildIndex({ layers: [64_000], seed: 'rig-test-index' });
  await pushImage(registry.url, 'rig/multi', 'v2', index);
  const node = await startContainerd({ name: 'node1', host: block.node(1), t });
  const hostDir = join(node.hostsDir, registry.host);
  mkdirSync(hostDir, { recursive: true });
  writeFileSync(join(hostDir, 'hosts.toml'), `server = "${registry.url}"\n`);
  const ref = `${registry.host}/rig/multi:v2`;
  const imageRef = await node.criPull(ref);
  assert.equal(imageRef, index.images[0]!.config.digest); // CRI returns the image id (config digest)
  const got = await waitFor(() => node.client.getImage(ref), { what: ref });
  assert.equal(got.target.digest, index.digest);
  assert.ok(await node.client.info(index.images[0]!.layers[0]!.digest), 'own-platform layer present');
  assert.equal(
    await node.client.info(index.images[1]!.layers[0]!.digest),
    undefined,
    'other platform absent',
  );
});
