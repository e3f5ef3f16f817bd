import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { after, test } from 'node:test';
import {
  allocateBlock,
  buildImage,
  pushImage,
  startAuthRegistry,
  startRegistry,
} from '../../../test/rig/index.ts';
import { type ContentOutcome, createUpstreamClient, endpointsFromUrls } from '../src/index.ts';
import { serve } from './helpers.ts';

const block = allocateBlock();
after(() => block.release());

async function bytesOf(out: ContentOutcome): Promise<Buffer> {
  assert.equal(out.kind, 'content', JSON.stringify(out));
  if (out.kind !== 'content') throw new Error('unreachable');
  const chunks: Buffer[] = [];
  for await (const c of out.body) chunks.push(c);
  return Buffer.concat(chunks);
}

test('fetchContent streams blobs and manifests by digest from a real docker-registry, whole and from an offset', async (t) => {
  const reg = await startRegistry({ host: block.upstream, t });
  const image = await buildImage({ layers: [300_000], mediaTypes: 'oci' });
  await pushImage(reg.url, 'team/app', 'v1', image);
  const client = createUpstreamClient({ endpoints: endpointsFromUrls([reg.url]) });
  t.after(() => client.close());
  const layer = image.layers[0] as (typeof image.layers)[0];
  const want = await readFile(layer.path);

  const whole = await client.fetchContent(reg.host, 'team/app', 'blobs', layer.digest);
  assert.equal(whole.kind === 'content' && whole.size, layer.size);
  const got = await bytesOf(whole);
  assert.equal(`sha256:${createHash('sha256').update(got).digest('hex')}`, layer.digest);

  const rest = await client.fetchContent(reg.host, 'team/app', 'blobs', layer.digest, { offset: 123_457 });
  assert.equal(rest.kind === 'content' && rest.offset, 123_457);
  assert.equal(rest.kind === 'content' && rest.size, layer.size);
  assert.deepEqual(await bytesOf(rest), want.subarray(123_457));

  const manifest = await client.fetchContent(reg.host, 'team/app', 'manifests', image.digest);
  assert.equal(manifest.kind === 'content' && manifest.mediaType, image.manifest.mediaType);
  assert.deepEqual(await bytesOf(manifest), image.manifest.bytes);

  const absent = `sha256:${'0'.repeat(64)}`;
  assert.deepEqual(await client.fetchContent(reg.host, 'team/app', 'blobs', absent), { kind: 'not-found' });
  assert.deepEqual(await client.fetchContent(reg.host, 'team/app', 'blobs', 'sha256:nothex'), {
    kind: 'not-found',
  });
  await reg.stop();
  const down = await client.fetchContent(reg.host, 'team/app', 'blobs', layer.digest);
  assert.equal(down.kind, 'unavailable');
});

test('fetchContent uses the token flow and credentials; without them a private blob is unauthorized', async (t) => {
  const reg = await startAuthRegistry({
    host: block.host(3),
    users: { ferry: 'pull-secret' },
    auth: false,
    t,
  });
  const image = await buildImage({ layers: [4096], mediaTypes: 'oci' });
  await pushImage(reg.url, 'private/app', 'v1', image);
  await reg.start({ auth: true });
  const endpoints = { [reg.host]: reg.url };
  const layer = image.layers[0] as (typeof image.layers)[0];

  const anon = createUpstreamClient({ endpoints });
  t.after(() => anon.close());
  assert.deepEqual(await anon.fetchContent(reg.host, 'private/app', 'blobs', layer.digest), {
    kind: 'unauthorized',
    status: 401,
  });
  const client = createUpstreamClient({ endpoints, credentials: reg.dockerConfig('ferry') });
  t.after(() => client.close());
  assert.deepEqual(
    await bytesOf(await client.fetchContent(reg.host, 'private/app', 'blobs', layer.digest)),
    await readFile(layer.path),
  );
  // The tag resolution and the blob share one token.
  const out = await client.resolveTag(reg.host, 'private/app', 'v1');
  assert.equal(out.kind, 'resolved');
  assert.equal(reg.tokenRequests.filter((r) => r.account === 'ferry').length, 1);
});

test('fetchContent follows a storage redirect without credentials and drops bytes a server sent despite Range', async (t) => {
  const payload = Buffer.from('0123456789abcdefghij');
  const digest = `sha256:${createHash('sha256').update(payload).digest('hex')}`;
  const seen: { path: string; auth?: string; range?: string }[] = [];
  const storage = await serve(t, block.host(4), (req, res) => {
    seen.push({ path: req.url ?? '', auth: req.headers.authorization, range: req.headers.range });
    // Ignores Range: the whole body with 200.
    res.writeHead(200, {
      'content-length': String(payload.length),
      'content-type': 'application/octet-stream',
    });
    res.end(payload);
  });
  const registry = await serve(t, block.host(5), (req, res) => {
    if (req.headers.authorization === undefined) {
      res.writeHead(401, { 'www-authenticate': 'Basic realm="r"' });
      res.end();
      return;
    }
    res.writeHead(307, { location: `${storage.url}/blob?sig=1` });
    res.end();
  });
  const host = new URL(registry.url).host;
  const client = createUpstreamClient({
    // The storage is on a loopback address: redirects there are followed only because it is listed.
    endpoints: { [host]: registry.url, [new URL(storage.url).host]: storage.url },
    credentials: { auths: { [host]: { username: 'u', password: 'p' } } },
  });
  t.after(() => client.close());
  const out = await client.fetchContent(host, 'a/b', 'blobs', digest, { offset: 7 });
  assert.equal(out.kind === 'content' && out.size, payload.length);
  assert.deepEqual(await bytesOf(out), payload.subarray(7));
  assert.deepEqual(seen, [{ path: '/blob?sig=1', auth: undefined, range: 'bytes=7-' }]);
});

test('fetchContent: a registry that never answers is unavailable after the deadline, 5xx is unavailable', async (t) => {
  const hang = await serve(t, block.host(6), () => {});
  const fail = await serve(t, block.host(7), (_req, res) => {
    res.writeHead(503);
    res.end();
  });
  const client = createUpstreamClient({ endpoints: endpointsFromUrls([hang.url, fail.url]), timeoutMs: 200 });
  t.after(() => client.close());
  const digest = `sha256:${'a'.repeat(64)}`;
  const slow = await client.fetchContent(new URL(hang.url).host, 'a/b', 'blobs', digest);
  assert.deepEqual(slow, {
    kind: 'unavailable',
    reason: 'upstream unreachable',
    detail: 'timeout after 200 ms',
  });
  const down = await client.fetchContent(new URL(fail.url).host, 'a/b', 'blobs', digest);
  assert.deepEqual(down, { kind: 'unavailable', reason: 'content HTTP 503' });
});
