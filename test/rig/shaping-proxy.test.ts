import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { after, test } from 'node:test';
import { allocateBlock, buildImage, pushImage, startRegistry, startShapingProxy } from './index.ts';

const block = allocateBlock();
after(() => block.release());

async function get(
  url: string,
  headers: Record<string, string> = {},
): Promise<{ status: number; body: Buffer }> {
  const res = await fetch(url, { headers });
  return { status: res.status, body: Buffer.from(await res.arrayBuffer()) };
}

test('shaping proxy: forwards the registry, counts blob bytes on a shared link, cuts and corrupts on command', async (t) => {
  const reg = await startRegistry({ host: block.upstream, t });
  const image = await buildImage({ layers: [200_000, 100_000], mediaTypes: 'oci' });
  await pushImage(reg.url, 'demo/app', 'v1', image);
  const proxy = await startShapingProxy({ host: block.host(3), upstream: reg.url, rateBytesPerSec: 50e6, t });
  const [l0, l1] = image.layers as [(typeof image.layers)[0], (typeof image.layers)[0]];
  const want0 = await readFile(l0.path);

  // Manifests pass through uncounted; blobs (two at once, on one link) are counted.
  assert.equal(
    (await get(`${proxy.url}/v2/demo/app/manifests/v1`, { accept: image.manifest.mediaType })).status,
    200,
  );
  const [a, b] = await Promise.all([
    get(`${proxy.url}/v2/demo/app/blobs/${l0.digest}`),
    get(`${proxy.url}/v2/demo/app/blobs/${l1.digest}`),
  ]);
  assert.deepEqual(a.body, want0);
  assert.equal(createHash('sha256').update(b.body).digest('hex'), l1.digest.slice(7));
  assert.equal(proxy.blobBytes(), l0.size + l1.size);
  assert.equal(proxy.blobs().length, 2);

  // Range passes through and is recorded.
  const r = await get(`${proxy.url}/v2/demo/app/blobs/${l0.digest}`, { range: 'bytes=100-' });
  assert.equal(r.status, 206);
  assert.deepEqual(r.body, want0.subarray(100));
  assert.equal(proxy.blobs()[2]?.range, 'bytes=100-');

  // Cut: the connection dies after the given number of body bytes.
  proxy.reset();
  const cut = proxy.cutNext(l0.digest, 50_000);
  await assert.rejects(get(`${proxy.url}/v2/demo/app/blobs/${l0.digest}`));
  assert.equal((await cut).bytes, 50_000);
  assert.equal(proxy.blobs()[0]?.cut, true);

  // Corrupt once: one byte flipped, the next GET is clean.
  proxy.corruptNext(l0.digest, 1234);
  const bad = await get(`${proxy.url}/v2/demo/app/blobs/${l0.digest}`);
  assert.equal(bad.body.length, want0.length);
  assert.notEqual(bad.body[1234], want0[1234]);
  assert.equal(Buffer.compare(bad.body.subarray(1235), want0.subarray(1235)), 0);
  assert.deepEqual((await get(`${proxy.url}/v2/demo/app/blobs/${l0.digest}`)).body, want0);
});
