import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createMemoryLastKnownStore, type LastKnownStore, type UpstreamOutcome } from '@ferry/resolver';
import { createTagResolver } from '../src/index.ts';
import { D1, D2, fakeUpstream, serve } from './helpers.ts';

const ref = { registry: 'r.example:5000', repository: 'team/app', tag: 'v1' };
const KEY = 'r.example:5000/team/app:v1';
const long = () => AbortSignal.timeout(10_000);

describe('tag resolver', () => {
  it('records the upstream answer before returning it, and reuses it while fresh', async (t) => {
    let clock = 1_000_000;
    const up = fakeUpstream({ [KEY]: { kind: 'resolved', digest: D1 } });
    const store = createMemoryLastKnownStore();
    const r = createTagResolver({ upstream: up.client, store, freshForMs: 5000, now: () => clock });
    t.after(() => r.close());
    assert.deepEqual(await r.resolve(ref, { signal: long() }), {
      kind: 'pinned',
      digest: D1,
      source: 'upstream',
      resolvedAt: clock,
    });
    assert.equal((await store.get(ref.registry, ref.repository, ref.tag))?.digest, D1);
    up.answers[KEY] = { kind: 'resolved', digest: D2 };
    clock += 4000;
    assert.equal(
      ((await r.resolve(ref, { signal: long() })) as { digest: string }).digest,
      D1,
      'fresh: reused',
    );
    assert.equal(up.calls.length, 1);
    clock += 2000;
    assert.equal(
      ((await r.resolve(ref, { signal: long() })) as { digest: string }).digest,
      D2,
      'stale: asked again',
    );
    assert.equal(up.calls.length, 2);
  });

  it('concurrent resolutions of one tag ask the upstream once', async (t) => {
    let release!: (o: UpstreamOutcome) => void;
    const gate = new Promise<UpstreamOutcome>((resolve) => {
      release = resolve;
    });
    const up = fakeUpstream({ [KEY]: () => gate });
    const r = createTagResolver({ upstream: up.client, store: createMemoryLastKnownStore() });
    t.after(() => r.close());
    const all = Promise.all(Array.from({ length: 20 }, () => r.resolve(ref, { signal: long() })));
    release({ kind: 'resolved', digest: D1 });
    const answers = await all;
    assert.ok(answers.every((a) => a.kind === 'pinned' && a.digest === D1));
    assert.equal(up.calls.length, 1);
  });

  it('a hanging upstream is cut at upstreamTimeoutMs, then the last-known digest answers', async (t) => {
    const up = fakeUpstream({ [KEY]: () => new Promise<UpstreamOutcome>(() => {}) });
    const store = createMemoryLastKnownStore();
    await store.record({ ...ref, digest: D2, resolvedAt: 42, source: 'upstream' });
    const r = createTagResolver({ upstream: up.client, store, upstreamTimeoutMs: 50 });
    t.after(() => r.close());
    assert.deepEqual(await r.resolve(ref, { signal: long() }), {
      kind: 'pinned',
      digest: D2,
      source: 'last-known',
      resolvedAt: 42,
    });
  });

  it('not-found is final: no last-known fallback', async (t) => {
    const up = fakeUpstream({ [KEY]: { kind: 'not-found' } });
    const store = createMemoryLastKnownStore();
    await store.record({ ...ref, digest: D2, resolvedAt: 42, source: 'upstream' });
    const r = createTagResolver({ upstream: up.client, store });
    t.after(() => r.close());
    const a = await r.resolve(ref, { signal: long() });
    assert.equal(a.kind, 'unresolved');
  });

  it('asks the cluster registry (HEAD with ?ns=) last, and records its answer', async (t) => {
    const seen: string[] = [];
    const cluster = await serve(t, '127.0.0.1', (req, res) => {
      seen.push(`${req.method} ${req.url} ${req.headers.accept?.includes('index') ? 'index-ok' : ''}`);
      if (req.url?.startsWith('/v2/team/app/manifests/v1?')) {
        res.writeHead(200, { 'docker-content-digest': D1, 'x-ferry-resolved-at': '777' });
      } else res.writeHead(404);
      res.end();
    });
    const store = createMemoryLastKnownStore();
    const r = createTagResolver({ upstream: fakeUpstream().client, store, clusterUrl: cluster.url });
    t.after(() => r.close());
    assert.deepEqual(await r.resolve(ref, { signal: long() }), {
      kind: 'pinned',
      digest: D1,
      source: 'cluster',
      resolvedAt: 777,
    });
    assert.deepEqual(seen, ['HEAD /v2/team/app/manifests/v1?ns=r.example%3A5000 index-ok']);
    assert.equal((await store.get(ref.registry, ref.repository, ref.tag))?.source, 'peer');
    const miss = await r.resolve({ ...ref, tag: 'v2' }, { signal: long() });
    assert.equal(miss.kind, 'unresolved');
    assert.match((miss as { reason: string }).reason, /HTTP 404/);
  });

  it('does not pin a cluster answer dated in the future (peer data is evidence)', async (t) => {
    const cluster = await serve(t, '127.0.0.1', (_req, res) => {
      res.writeHead(200, {
        'docker-content-digest': D2,
        'x-ferry-resolved-at': String(Date.now() + 3_600_000),
      });
      res.end();
    });
    const store = createMemoryLastKnownStore();
    const errors: string[] = [];
    const r = createTagResolver({
      upstream: fakeUpstream().client,
      store,
      clusterUrl: cluster.url,
      onError: (reason) => errors.push(reason),
    });
    t.after(() => r.close());
    const a = await r.resolve(ref, { signal: long() });
    assert.equal(a.kind, 'unresolved');
    assert.match((a as { reason: string }).reason, /in the future/);
    assert.ok(errors.includes('cluster-implausible'));
    assert.equal(await store.get(ref.registry, ref.repository, ref.tag), undefined);
  });

  it('the admission deadline bounds a cluster that never answers', async (t) => {
    const cluster = await serve(t, '127.0.0.1', () => {});
    const r = createTagResolver({
      upstream: fakeUpstream().client,
      store: createMemoryLastKnownStore(),
      clusterUrl: cluster.url,
    });
    t.after(() => r.close());
    const a = await r.resolve(ref, { signal: AbortSignal.timeout(100) });
    assert.deepEqual(a, {
      kind: 'unresolved',
      reason: 'upstream unavailable (connection refused); no last-known digest; admission deadline reached',
    });
  });

  it('a dry run records nothing and leaves no cache entry; a store failure still pins', async (t) => {
    const up = fakeUpstream({ [KEY]: { kind: 'resolved', digest: D1 } });
    const store = createMemoryLastKnownStore();
    const r = createTagResolver({ upstream: up.client, store });
    t.after(() => r.close());
    assert.equal((await r.resolve(ref, { signal: long(), dryRun: true })).kind, 'pinned');
    assert.equal(await store.get(ref.registry, ref.repository, ref.tag), undefined);
    await r.resolve(ref, { signal: long() });
    assert.equal(up.calls.length, 2, 'the dry run did not fill the cache');

    const failing: LastKnownStore = {
      ...createMemoryLastKnownStore(),
      record: async () => {
        throw new Error('disk full');
      },
    };
    const errors: string[] = [];
    const r2 = createTagResolver({
      upstream: up.client,
      store: failing,
      onError: (reason) => errors.push(reason),
    });
    t.after(() => r2.close());
    assert.equal((await r2.resolve(ref, { signal: long() })).kind, 'pinned');
    assert.deepEqual(errors, ['record-failed']);
  });
});
