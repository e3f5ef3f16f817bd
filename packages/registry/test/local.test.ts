import assert from 'node:assert/strict';
import { describe, it, type TestContext } from 'node:test';
import { MediaTypes } from '@ferry/oci';
import {
  createMemoryContentSource,
  createMemoryRouter,
  createRefPolicy,
  createRegistryServer,
  type MemoryContentSource,
  type RegistryServerOptions,
} from '../src/index.ts';
import { events, sampleImage, storeImage, until } from './helpers.ts';

async function setup(t: TestContext, extra: Partial<RegistryServerOptions> = {}) {
  const source = createMemoryContentSource();
  const img = sampleImage(100_000);
  storeImage(source, img, '1.0');
  let opens = 0;
  const counting: MemoryContentSource = {
    ...source,
    open: (digest, range) => {
      opens++;
      return source.open(digest, range);
    },
  };
  const router = createMemoryRouter();
  const ev = events();
  const app = await createRegistryServer({ source: counting, router, observer: ev.observer, ...extra });
  t.after(() => app.close());
  return { app, img, source, router, ev, opens: () => opens };
}

describe('local serving', () => {
  it('answers /v2/ and /v2 with 200 {}', async (t) => {
    const { app } = await setup(t);
    for (const url of ['/v2/', '/v2']) {
      const res = await app.inject({ url });
      assert.equal(res.statusCode, 200);
      assert.deepEqual(res.json(), {});
    }
    assert.equal((await app.inject({ method: 'HEAD', url: '/v2/' })).statusCode, 200);
  });

  it('serves a blob with full headers and exact bytes', async (t) => {
    const { app, img, ev } = await setup(t);
    const res = await app.inject({ url: `/v2/library/app/blobs/${img.layerDigest}?ns=docker.io` });
    assert.equal(res.statusCode, 200);
    assert.equal(res.headers['content-type'], 'application/octet-stream');
    assert.equal(res.headers['content-length'], String(img.layer.length));
    assert.equal(res.headers['docker-content-digest'], img.layerDigest);
    assert.equal(res.headers['accept-ranges'], 'bytes');
    assert.equal(res.headers.etag, `"${img.layerDigest}"`);
    assert.ok(res.rawPayload.equals(img.layer));
    const e = await until(() => ev.list[0], 'observer event');
    assert.equal(e.outcome, 'local');
    assert.equal(e.kind, 'blobs');
    assert.equal(e.key, img.layerDigest);
    assert.equal(e.bytes, img.layer.length);
    assert.equal(e.status, 200);
    assert.equal(e.aborted, false);
  });

  it('HEAD gives the same headers, no body and no read', async (t) => {
    const { app, img, opens } = await setup(t);
    const res = await app.inject({ method: 'HEAD', url: `/v2/library/app/blobs/${img.layerDigest}` });
    assert.equal(res.statusCode, 200);
    assert.equal(res.headers['content-length'], String(img.layer.length));
    assert.equal(res.headers['docker-content-digest'], img.layerDigest);
    assert.equal(res.rawPayload.length, 0);
    assert.equal(opens(), 0);
  });

  it('serves ranges with 206 and rejects bad ones with 416', async (t) => {
    const { app, img } = await setup(t);
    const url = `/v2/library/app/blobs/${img.layerDigest}?ns=docker.io`;
    const res = await app.inject({ url, headers: { range: 'bytes=10-19' } });
    assert.equal(res.statusCode, 206);
    assert.equal(res.headers['content-range'], `bytes 10-19/${img.layer.length}`);
    assert.equal(res.headers['content-length'], '10');
    assert.ok(res.rawPayload.equals(img.layer.subarray(10, 20)));

    const suffix = await app.inject({ url, headers: { range: 'bytes=-5' } });
    assert.equal(suffix.statusCode, 206);
    assert.ok(suffix.rawPayload.equals(img.layer.subarray(img.layer.length - 5)));

    for (const range of [`bytes=${img.layer.length}-`, 'bytes=abc', 'bytes=0-1,4-5']) {
      const bad = await app.inject({ url, headers: { range } });
      assert.equal(bad.statusCode, 416, range);
      assert.equal(bad.headers['content-range'], `bytes */${img.layer.length}`);
      assert.equal(bad.json().errors[0].code, 'RANGE_INVALID');
    }
  });

  it('serves a manifest by tag and by digest with a fingerprinted media type', async (t) => {
    const { app, img } = await setup(t);
    for (const ref of ['1.0', img.manifestDigest]) {
      const res = await app.inject({ url: `/v2/library/app/manifests/${ref}?ns=docker.io` });
      assert.equal(res.statusCode, 200, ref);
      assert.equal(res.headers['content-type'], MediaTypes.ociManifest);
      assert.equal(res.headers['docker-content-digest'], img.manifestDigest);
      assert.equal(res.headers['content-length'], String(img.manifest.length));
      assert.ok(res.rawPayload.equals(img.manifest));
      const head = await app.inject({ method: 'HEAD', url: `/v2/library/app/manifests/${ref}?ns=docker.io` });
      assert.equal(head.statusCode, 200);
      assert.equal(head.headers['docker-content-digest'], img.manifestDigest);
      assert.equal(head.rawPayload.length, 0);
    }
  });

  it('uses ContentInfo.mediaType when the source knows it', async (t) => {
    const source = createMemoryContentSource();
    const index = source.add(
      JSON.stringify({ schemaVersion: 2, manifests: [] }),
      MediaTypes.dockerManifestList,
    );
    const app = await createRegistryServer({ source, router: createMemoryRouter() });
    t.after(() => app.close());
    const res = await app.inject({ url: `/v2/x/manifests/${index.digest}?ns=ghcr.io` });
    assert.equal(res.statusCode, 200);
    assert.equal(res.headers['content-type'], MediaTypes.dockerManifestList);
  });

  it('refuses a blob asked as a manifest but serves a manifest asked as a blob', async (t) => {
    const { app, img } = await setup(t);
    const asManifest = await app.inject({ url: `/v2/library/app/manifests/${img.layerDigest}` });
    assert.equal(asManifest.statusCode, 404);
    assert.equal(asManifest.json().errors[0].code, 'MANIFEST_UNKNOWN');
    const asBlob = await app.inject({ url: `/v2/library/app/blobs/${img.manifestDigest}` });
    assert.equal(asBlob.statusCode, 200);
    assert.equal(asBlob.headers['content-type'], 'application/octet-stream');
    assert.ok(asBlob.rawPayload.equals(img.manifest));
  });

  it('answers a mirrored request from local content only', async (t) => {
    const { app, router, ev } = await setup(t);
    router.add('sha256:'.padEnd(71, 'a'), { id: 'p', host: '127.0.0.1', port: 1 });
    const res = await app.inject({
      url: `/v2/library/app/blobs/sha256:${'a'.repeat(64)}`,
      headers: { 'x-ferry-mirrored': 'true' },
    });
    assert.equal(res.statusCode, 404);
    assert.equal(res.json().errors[0].code, 'BLOB_UNKNOWN');
    assert.deepEqual(router.lookups, []);
    const e = await until(() => ev.list[0], 'event');
    assert.equal(e.mirrored, true);
    assert.equal(e.outcome, 'miss');
  });

  it('misses with an OCI 404 when no peer has the content', async (t) => {
    const { app, router, ev } = await setup(t);
    const digest = `sha256:${'b'.repeat(64)}`;
    const res = await app.inject({ url: `/v2/library/app/blobs/${digest}?ns=docker.io` });
    assert.equal(res.statusCode, 404);
    const body = res.json();
    assert.equal(body.errors[0].code, 'BLOB_UNKNOWN');
    assert.deepEqual(body.errors[0].detail, { attempts: 0 });
    assert.deepEqual(router.lookups, [digest]);
    const tag = await app.inject({ url: '/v2/library/app/manifests/missing?ns=docker.io' });
    assert.equal(tag.statusCode, 404);
    assert.equal(tag.json().errors[0].code, 'MANIFEST_UNKNOWN');
    assert.deepEqual(router.lookups, [digest, 'docker.io/library/app:missing']);
    await until(() => ev.list.length === 2, 'events');
    assert.deepEqual(
      ev.list.map((e) => e.outcome),
      ['miss', 'miss'],
    );
  });

  it('gives up after mirrorResolveTimeout when the router yields nothing', async (t) => {
    let lookupSignal: AbortSignal | undefined;
    const router = {
      async *lookup(_key: string, { signal }: { signal: AbortSignal }) {
        lookupSignal = signal;
        await new Promise((resolve) => signal.addEventListener('abort', resolve, { once: true }));
      },
    };
    const app = await createRegistryServer({
      source: createMemoryContentSource(),
      router,
      mirrorResolveTimeoutMs: 5,
    });
    t.after(() => app.close());
    const res = await app.inject({ url: `/v2/a/blobs/sha256:${'c'.repeat(64)}` });
    assert.equal(res.statusCode, 404);
    assert.match(res.json().errors[0].message, /not available from the cluster/);
    assert.equal(lookupSignal?.aborted, true);
  });

  it('rejects malformed names, digests and paths with OCI errors', async (t) => {
    const { app, ev } = await setup(t);
    const cases: [string, number, string][] = [
      ['/v2/UPPER/manifests/latest', 400, 'NAME_INVALID'],
      ['/v2/a/manifests/sha256:xyz', 400, 'DIGEST_INVALID'],
      ['/v2/a/blobs/latest', 400, 'DIGEST_INVALID'],
      ['/v2/a/manifests/-bad-tag', 400, 'TAG_INVALID'],
      ['/v2/a/tags/list', 404, 'NAME_UNKNOWN'],
      ['/v2/a/manifests/latest?ns=not%20a%20host', 400, 'NAME_INVALID'],
    ];
    for (const [url, status, code] of cases) {
      const res = await app.inject({ url });
      assert.equal(res.statusCode, status, url);
      assert.equal(res.json().errors[0].code, code, url);
    }
    await until(() => ev.list.length === cases.length, 'events');
    assert.ok(ev.list.every((e) => e.outcome === 'invalid'));
  });

  it('serves long names (deep repositories with digests)', async (t) => {
    const { app, source } = await setup(t);
    const info = source.add('hello');
    const name = Array.from({ length: 12 }, (_, i) => `component-${i}`).join('/');
    const res = await app.inject({ url: `/v2/${name}/blobs/${info.digest}?ns=registry.example.com:5000` });
    assert.equal(res.statusCode, 200);
    assert.equal(res.payload, 'hello');
  });

  it('applies the policy before anything else', async (t) => {
    const policy = createRefPolicy({ registryFilters: [':latest$'], mirroredRegistries: ['docker.io'] });
    const { app, source, ev, router } = await setup(t, { policy });
    const img = sampleImage(10);
    storeImage(source, img, 'latest');
    const latest = await app.inject({ url: '/v2/library/app/manifests/latest?ns=docker.io' });
    assert.equal(latest.statusCode, 404);
    assert.equal(latest.json().errors[0].code, 'MANIFEST_UNKNOWN');
    const other = await app.inject({ url: `/v2/library/app/blobs/${img.layerDigest}?ns=ghcr.io` });
    assert.equal(other.statusCode, 404);
    assert.equal(other.json().errors[0].code, 'BLOB_UNKNOWN');
    const ok = await app.inject({ url: '/v2/library/app/manifests/1.0?ns=docker.io' });
    assert.equal(ok.statusCode, 200);
    await until(() => ev.list.length === 3, 'events');
    assert.deepEqual(
      ev.list.map((e) => e.outcome),
      ['filtered', 'filtered', 'local'],
    );
    assert.deepEqual(router.lookups, []);
  });
});
