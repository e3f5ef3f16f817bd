import assert from 'node:assert/strict';
import { describe, it, type TestContext } from 'node:test';
import type { Peer, TagMode, TagUpstream, UpstreamOutcome } from '@ferry/interface';
import { tagKey } from '@ferry/oci';
import {
  createMemoryContentSource,
  createMemoryRouter,
  createMemoryTagStore,
  createRefPolicy,
  createRegistryServer,
  type MemoryTagStore,
  parseTagRule,
  type RegistryServerOptions,
  type TagResolverOptions,
} from '../src/index.ts';
import { clearAuth, events, sampleImage, startPeer, startRelay, storeImage } from './helpers.ts';

const KEY = tagKey('docker.io', 'library/app', 'v1');
const URL_V1 = '/v2/library/app/manifests/v1?ns=docker.io';

describe('tag policy rules', () => {
  it('takes the first matching rule, else the default mode (verify)', () => {
    const p = createRefPolicy({
      tagPolicy: [
        { pattern: ':latest$', mode: 'upstream' },
        { pattern: '^docker\\.io/library/', mode: 'cluster' },
        { pattern: ':latest$', mode: 'cluster' },
      ],
    });
    assert.equal(p.modeFor('docker.io', 'library/nginx', 'latest'), 'upstream');
    assert.equal(p.modeFor('docker.io', 'library/nginx', '1.27'), 'cluster');
    assert.equal(p.modeFor('ghcr.io', 'a/b', '1.0'), 'verify');
    assert.equal(createRefPolicy({ defaultTagMode: 'cluster' }).modeFor('ghcr.io', 'a/b', '1'), 'cluster');
  });

  it('advertises and answers tags only in modes cluster and verify; filters still win', () => {
    const p = createRefPolicy({
      tagPolicy: [parseTagRule(':latest$=upstream')],
      registryFilters: ['^docker\\.io/private/'],
    });
    assert.equal(p.allows('docker.io', 'library/nginx', 'latest'), false);
    assert.equal(p.allows('docker.io', 'library/nginx', '1.27'), true);
    assert.equal(p.allows('docker.io', 'private/app', '1.0'), false);
    assert.equal(p.allows('docker.io', 'private/app'), false);
    assert.equal(p.allows('docker.io', 'library/nginx'), true);
  });

  it('resolveTags=false puts every tag in mode upstream, rules included; digests stay', () => {
    const p = createRefPolicy({ resolveTags: false, tagPolicy: [{ pattern: '.', mode: 'cluster' }] });
    assert.equal(p.modeFor('docker.io', 'library/nginx', '1.27'), 'upstream');
    assert.equal(p.allows('docker.io', 'library/nginx', '1.27'), false);
    assert.equal(p.allows('docker.io', 'library/nginx'), true);
  });

  it('parses pattern=mode at the last = and names what is wrong', () => {
    assert.deepEqual(parseTagRule('a=b:latest$=Verify'), { pattern: 'a=b:latest$', mode: 'verify' });
    assert.throws(() => parseTagRule(':latest$'), /expected pattern=mode/);
    assert.throws(() => parseTagRule(':latest$=always'), /mode must be one of cluster, upstream, verify/);
    assert.throws(() => parseTagRule('=cluster'), /empty pattern/);
    assert.throws(() => parseTagRule('(x=cluster'), /invalid tagPolicy pattern "\(x"/);
    assert.throws(
      () => createRefPolicy({ tagPolicy: [{ pattern: 'x', mode: 'sometimes' as TagMode }] }),
      /mode must be one of/,
    );
  });
});

/** A scripted upstream: answers with `answer()` and counts calls. */
function fakeUpstream(answer: () => UpstreamOutcome | Promise<UpstreamOutcome>, creds = false) {
  const calls: string[] = [];
  const upstream: TagUpstream = {
    async resolveTag(registry, repository, tag) {
      calls.push(`${registry}/${repository}:${tag}`);
      return answer();
    },
    hasCredentials: () => creds,
  };
  return { upstream, calls };
}

/** The node under test: its own content, a router knowing `providers`, tag modes on. */
async function node(
  t: TestContext,
  providers: Record<string, Peer[]>,
  tags: Partial<TagResolverOptions> & { mode?: TagMode },
  extra: Partial<RegistryServerOptions> = {},
) {
  const ev = events();
  const source = createMemoryContentSource();
  const store = (tags.lastKnown as MemoryTagStore | undefined) ?? createMemoryTagStore();
  const mode = tags.mode ?? 'verify';
  const app = await createRegistryServer({
    source,
    router: createMemoryRouter(providers),
    observer: ev.observer,
    hedgeDelayMs: Number.POSITIVE_INFINITY,
    tags: { modeFor: () => mode, lastKnown: store, ...tags },
    ...extra,
  });
  t.after(() => app.close());
  return { app, ev, source, store };
}

/** Peer A, holding docker.io/library/app:v1 as resolved by the upstream a minute ago. */
async function holderOfV1(t: TestContext, extra: Pick<RegistryServerOptions, 'peerAuth'> = {}) {
  const img = sampleImage(1000);
  const aStore = createMemoryTagStore();
  const ref = { registry: 'docker.io', repository: 'library/app', tag: 'v1' };
  await aStore.record({
    ...ref,
    digest: img.manifestDigest,
    resolvedAt: Date.now() - 60_000,
    source: 'upstream',
  });
  const a = await startPeer(t, 'A', { ...extra, tags: { modeFor: () => 'verify', lastKnown: aStore } });
  storeImage(a.source, img);
  return { img, a };
}

describe('tag modes in the registry', () => {
  it('upstream: 404 at once, the upstream client is never asked', async (t) => {
    const img = sampleImage(1000);
    const { upstream, calls } = fakeUpstream(() => ({ kind: 'resolved', digest: img.manifestDigest }));
    const { app, ev, source } = await node(t, {}, { mode: 'upstream', upstream });
    storeImage(source, img, 'v1');
    const res = await app.inject({ url: URL_V1 });
    assert.equal(res.statusCode, 404);
    assert.equal(res.json().errors[0].code, 'MANIFEST_UNKNOWN');
    assert.equal(calls.length, 0);
    assert.equal(ev.list[0]?.outcome, 'filtered');
    assert.deepEqual(ev.list[0]?.tag, { mode: 'upstream', outcome: 'deferred' });
  });

  it('cluster: the local image answers, even when the upstream moved on', async (t) => {
    const old = sampleImage(1000);
    const { upstream, calls } = fakeUpstream(() => ({ kind: 'resolved', digest: 'sha256:'.padEnd(71, 'f') }));
    const { app, ev, source } = await node(t, {}, { mode: 'cluster', upstream });
    storeImage(source, old, 'v1');
    const res = await app.inject({ url: URL_V1 });
    assert.equal(res.statusCode, 200);
    assert.equal(res.headers['docker-content-digest'], old.manifestDigest);
    assert.equal(calls.length, 0);
    assert.deepEqual(ev.list[0]?.tag, { mode: 'cluster', outcome: 'cluster' });
  });

  it('verify: serves the upstream digest from a peer by digest, not the stale local image; records it first', async (t) => {
    const stale = sampleImage(1000);
    const fresh = sampleImage(1000);
    const a = await startPeer(t, 'A');
    storeImage(a.source, fresh);
    const store = createMemoryTagStore();
    let recordedBeforeAnswer = false;
    const { upstream, calls } = fakeUpstream(async () => ({
      kind: 'resolved',
      digest: fresh.manifestDigest,
      size: fresh.manifest.length,
    }));
    const { app, ev, source } = await node(
      t,
      { [fresh.manifestDigest]: [a.peer], [KEY]: [a.peer] },
      { upstream, lastKnown: store, now: () => 1_000_000 },
      {
        observer: {
          onRequest: (e) => {
            recordedBeforeAnswer = store.records.length === 1;
            ev.list.push(e);
          },
        },
      },
    );
    storeImage(source, stale, 'v1');
    const res = await app.inject({ url: URL_V1 });
    assert.equal(res.statusCode, 200);
    assert.equal(res.headers['docker-content-digest'], fresh.manifestDigest);
    assert.ok(res.rawPayload.equals(fresh.manifest));
    assert.deepEqual(calls, ['docker.io/library/app:v1']);
    assert.ok(recordedBeforeAnswer);
    assert.deepEqual(await store.get('docker.io', 'library/app', 'v1'), {
      registry: 'docker.io',
      repository: 'library/app',
      tag: 'v1',
      digest: fresh.manifestDigest,
      size: fresh.manifest.length,
      resolvedAt: 1_000_000,
      source: 'upstream',
    });
    const e = ev.list[0];
    assert.equal(e?.outcome, 'peer');
    assert.equal(e?.tag?.mode, 'verify');
    assert.equal(e?.tag?.outcome, 'upstream');
    assert.equal(e?.tag?.digest, fresh.manifestDigest);
    assert.equal(typeof e?.tag?.upstreamMs, 'number');
  });

  it('verify: the upstream digest is held locally → served locally (HEAD too)', async (t) => {
    const img = sampleImage(1000);
    const { upstream } = fakeUpstream(() => ({ kind: 'resolved', digest: img.manifestDigest }));
    const { app, source } = await node(t, {}, { upstream });
    storeImage(source, img);
    const head = await app.inject({ method: 'HEAD', url: URL_V1 });
    assert.equal(head.statusCode, 200);
    assert.equal(head.headers['docker-content-digest'], img.manifestDigest);
    assert.equal(head.headers['content-length'], String(img.manifest.length));
  });

  it('verify: the cluster lacks the upstream digest → 404 so containerd fetches it upstream', async (t) => {
    const stale = sampleImage(1000);
    const a = await startPeer(t, 'A');
    storeImage(a.source, stale, 'v1');
    const { upstream } = fakeUpstream(() => ({ kind: 'resolved', digest: `sha256:${'e'.repeat(64)}` }));
    const { app, ev } = await node(t, { [KEY]: [a.peer], [stale.manifestDigest]: [a.peer] }, { upstream });
    const res = await app.inject({ url: URL_V1 });
    assert.equal(res.statusCode, 404);
    assert.equal(ev.list[0]?.outcome, 'miss');
    assert.equal(ev.list[0]?.tag?.outcome, 'upstream');
  });

  it('verify, upstream down: the newest of a peer-learned record, local image and peers wins; a peer answer is recorded with its time', async (t) => {
    const d1 = sampleImage(1000);
    const d2 = sampleImage(1000);
    const d3 = sampleImage(1000);
    // Peer A holds D2, resolved at t=2000 (its record); peer B holds D3 as an image only (time unknown).
    const aStore = createMemoryTagStore();
    await aStore.record({
      registry: 'docker.io',
      repository: 'library/app',
      tag: 'v1',
      digest: d2.manifestDigest,
      resolvedAt: 2000,
      source: 'upstream',
    });
    const peerTags = (lastKnown: MemoryTagStore) => ({
      tags: { modeFor: () => 'verify' as const, lastKnown },
    });
    const a = await startPeer(t, 'A', peerTags(aStore));
    storeImage(a.source, d2, 'v1-old-name');
    const b = await startPeer(t, 'B', peerTags(createMemoryTagStore()));
    storeImage(b.source, d3, 'v1');
    // Our record (learned from a peer earlier) says D1 at t=1000, and our image is D1 too.
    const store = createMemoryTagStore();
    await store.record({
      ...(await aStore.get('docker.io', 'library/app', 'v1'))!,
      digest: d1.manifestDigest,
      resolvedAt: 1000,
      source: 'peer',
    });
    const { upstream } = fakeUpstream(() => ({ kind: 'unavailable', reason: 'connection refused' }));
    const { app, ev, source } = await node(
      t,
      { [KEY]: [a.peer, b.peer], [d2.manifestDigest]: [a.peer] },
      { upstream, lastKnown: store, now: () => 5000 },
    );
    storeImage(source, d1, 'v1');
    const res = await app.inject({ url: URL_V1 });
    assert.equal(res.statusCode, 200);
    assert.equal(res.headers['docker-content-digest'], d2.manifestDigest);
    assert.ok(res.rawPayload.equals(d2.manifest));
    const tag = ev.list[0]?.tag;
    assert.equal(tag?.outcome, 'last-known');
    assert.equal(tag?.source, 'peer');
    assert.equal(tag?.upstream, 'unavailable');
    assert.equal(tag?.lastKnownAgeMs, 3000);
    const rec = await store.get('docker.io', 'library/app', 'v1');
    assert.equal(rec?.digest, d2.manifestDigest);
    assert.equal(rec?.resolvedAt, 2000);
    assert.equal(rec?.source, 'peer');
  });

  it('verify, upstream down: a mirrored peer answer carries X-Ferry-Resolved-At from the newest own record', async (t) => {
    const old = sampleImage(1000);
    const fresh = sampleImage(1000);
    const store = createMemoryTagStore();
    const { app, source } = await node(t, {}, { lastKnown: store });
    storeImage(source, old, 'v1');
    storeImage(source, fresh);
    const headers = { 'x-ferry-mirrored': 'true' };
    let res = await app.inject({ method: 'HEAD', url: URL_V1, headers });
    assert.equal(res.headers['docker-content-digest'], old.manifestDigest);
    assert.equal(res.headers['x-ferry-resolved-at'], '0');
    await store.record({
      registry: 'docker.io',
      repository: 'library/app',
      tag: 'v1',
      digest: fresh.manifestDigest,
      resolvedAt: 42,
      source: 'upstream',
    });
    res = await app.inject({ url: URL_V1, headers });
    assert.equal(res.statusCode, 200);
    assert.equal(res.headers['docker-content-digest'], fresh.manifestDigest);
    assert.equal(res.headers['x-ferry-resolved-at'], '42');
    assert.ok(res.rawPayload.equals(fresh.manifest));
    // A record whose content is gone falls back to the image.
    source.remove(fresh.manifestDigest);
    res = await app.inject({ method: 'HEAD', url: URL_V1, headers });
    assert.equal(res.headers['docker-content-digest'], old.manifestDigest);
  });

  it('verify: an upstream that never answers is unavailable after upstreamTimeoutMs; the local image answers', async (t) => {
    const img = sampleImage(1000);
    const { upstream } = fakeUpstream(() => new Promise<UpstreamOutcome>(() => {}));
    const { app, ev, source } = await node(t, {}, { upstream, upstreamTimeoutMs: 50 });
    storeImage(source, img, 'v1');
    const res = await app.inject({ url: URL_V1 });
    assert.equal(res.statusCode, 200);
    assert.equal(res.headers['docker-content-digest'], img.manifestDigest);
    assert.equal(ev.list[0]?.tag?.outcome, 'last-known');
    assert.equal(ev.list[0]?.tag?.source, 'local');
    assert.equal(ev.list[0]?.tag?.lastKnownAgeMs, undefined);
  });

  it('verify, upstream down and nothing known: a fast 404 (miss) that does not describe the failure; a throwing client counts as down', async (t) => {
    const { upstream } = fakeUpstream(() => {
      throw new Error('ECONNREFUSED');
    });
    const { app, ev } = await node(t, {}, { upstream });
    const res = await app.inject({ url: URL_V1 });
    assert.equal(res.statusCode, 404);
    assert.match(res.json().errors[0].message, /upstream unavailable and no last-known digest/);
    assert.doesNotMatch(res.body, /ECONNREFUSED/);
    assert.equal(ev.list[0]?.tag?.outcome, 'miss');
  });

  it('verify: 401/403 never serves the tag (with or without credentials), even when a record exists', async (t) => {
    const img = sampleImage(1000);
    for (const creds of [false, true]) {
      const { upstream } = fakeUpstream(() => ({ kind: 'unauthorized', status: 401 }), creds);
      const store = createMemoryTagStore();
      await store.record({
        registry: 'docker.io',
        repository: 'library/app',
        tag: 'v1',
        digest: img.manifestDigest,
        resolvedAt: 1,
        source: 'upstream',
      });
      const { app, ev, source } = await node(t, {}, { upstream, lastKnown: store });
      storeImage(source, img, 'v1');
      const res = await app.inject({ url: URL_V1 });
      assert.equal(res.statusCode, 404, `credentials: ${creds}`);
      assert.match(res.json().errors[0].message, creds ? /refused the configured/ : /none are configured/);
      assert.equal(ev.list[0]?.tag?.outcome, 'deferred');
    }
  });

  it('verify: an unknown tag upstream is a 404 miss; no upstream client defers', async (t) => {
    const img = sampleImage(1000);
    const { upstream } = fakeUpstream(() => ({ kind: 'not-found' }));
    const n1 = await node(t, {}, { upstream });
    storeImage(n1.source, img, 'v1');
    assert.equal((await n1.app.inject({ url: URL_V1 })).statusCode, 404);
    assert.equal(n1.ev.list[0]?.tag?.outcome, 'miss');
    const n2 = await node(t, {}, {});
    storeImage(n2.source, img, 'v1');
    assert.equal((await n2.app.inject({ url: URL_V1 })).statusCode, 404);
    assert.equal(n2.ev.list[0]?.tag?.outcome, 'deferred');
  });

  it('digest requests are untouched by tag modes', async (t) => {
    const img = sampleImage(1000);
    const { upstream, calls } = fakeUpstream(() => ({ kind: 'not-found' }));
    const { app, ev, source } = await node(t, {}, { upstream, mode: 'upstream' });
    storeImage(source, img);
    const res = await app.inject({ url: `/v2/library/app/manifests/${img.manifestDigest}?ns=docker.io` });
    assert.equal(res.statusCode, 200);
    assert.equal(calls.length, 0);
    assert.equal(ev.list[0]?.tag, undefined);
  });
});

describe('tag modes with a RefPolicy', () => {
  it('a tag the policy refuses is counted as deferred, with the mode the rules give', async (t) => {
    const policy = createRefPolicy({ tagPolicy: [parseTagRule(':latest$=upstream')] });
    const ev = events();
    const app = await createRegistryServer({
      source: createMemoryContentSource(),
      router: createMemoryRouter(),
      policy,
      observer: ev.observer,
      tags: { modeFor: policy.modeFor },
    });
    t.after(() => app.close());
    const res = await app.inject({ url: '/v2/library/app/manifests/latest?ns=docker.io' });
    assert.equal(res.statusCode, 404);
    assert.equal(ev.list[0]?.outcome, 'filtered');
    assert.deepEqual(ev.list[0]?.tag, { mode: 'upstream', outcome: 'deferred' });
  });
});

describe('last-known answers from peers', () => {
  it('waits for a slow router during an outage, and fetches the manifest from the peer that answered', async (t) => {
    const img = sampleImage(1000);
    const aStore = createMemoryTagStore();
    await aStore.record({
      registry: 'docker.io',
      repository: 'library/app',
      tag: 'v1',
      digest: img.manifestDigest,
      resolvedAt: Date.now() - 60_000,
      source: 'upstream',
    });
    const a = await startPeer(t, 'A', { tags: { modeFor: () => 'verify', lastKnown: aStore } });
    storeImage(a.source, img);
    const lookups: string[] = [];
    // The tag key's provider arrives after 100 ms (slower than mirrorResolveTimeoutMs); the digest has none.
    const slowRouter = {
      async *lookup(key: string, { signal }: { signal: AbortSignal }) {
        lookups.push(key);
        if (key !== KEY) return;
        await new Promise((r) => setTimeout(r, 100));
        if (!signal.aborted) yield a.peer;
      },
    };
    const { upstream } = fakeUpstream(() => ({ kind: 'unavailable', reason: '503' }));
    const ev = events();
    const app = await createRegistryServer({
      source: createMemoryContentSource(),
      router: slowRouter,
      observer: ev.observer,
      mirrorResolveTimeoutMs: 20,
      tags: { modeFor: () => 'verify', upstream, lastKnown: createMemoryTagStore() },
    });
    t.after(() => app.close());
    const res = await app.inject({ url: URL_V1 });
    assert.equal(res.statusCode, 200);
    assert.equal(res.headers['docker-content-digest'], img.manifestDigest);
    assert.equal(ev.list[0]?.peer, 'A');
    assert.equal(ev.list[0]?.tag?.outcome, 'last-known');
  });

  /** Peer A holds v1; between the nodes, a relay that holds A's tag answer back `delayMs` (or forever). */
  async function latePeer(t: TestContext, delayMs: number) {
    const { img, a } = await holderOfV1(t);
    const via = await startRelay(t, 'A', a.peer, async (req) => {
      if (req.method !== 'HEAD') return true;
      if (!Number.isFinite(delayMs)) return false; // never answers
      await new Promise((r) => setTimeout(r, delayMs));
      return true;
    });
    const { upstream } = fakeUpstream(() => ({ kind: 'unavailable', reason: 'connection refused' }));
    return { img, via, upstream };
  }

  it('the one holder answers after the deadline: its late answer is taken within the grace', async (t) => {
    // On a loaded node the only live holder answered a tag question in more than the 1 s deadline and
    // the pull failed (30-node rig bench); here the deadline is 150 ms and the answer comes after 400.
    const { img, via, upstream } = await latePeer(t, 400);
    const providers = { [KEY]: [via], [img.manifestDigest]: [via] };
    const b = await node(t, providers, { upstream, peerAnswerTimeoutMs: 150, peerAnswerGraceMs: 2_000 });
    const res = await b.app.inject({ url: URL_V1 });
    assert.equal(res.statusCode, 200);
    assert.equal(res.headers['docker-content-digest'], img.manifestDigest);
    assert.equal(b.ev.list[0]?.tag?.outcome, 'last-known');
  });

  it('a holder that never answers holds the request no longer than deadline + grace: 404', async (t) => {
    const { img, via, upstream } = await latePeer(t, Number.POSITIVE_INFINITY);
    const providers = { [KEY]: [via], [img.manifestDigest]: [via] };
    const b = await node(t, providers, { upstream, peerAnswerTimeoutMs: 100, peerAnswerGraceMs: 200 });
    const res = await b.app.inject({ url: URL_V1 });
    assert.equal(res.statusCode, 404);
    assert.equal(b.ev.list[0]?.tag?.outcome, 'miss');
  });
});

describe('a peer tag answer on the wire', () => {
  it('X-Ferry-Resolved-At is signed: an answer whose time was changed on the way is not taken', async (t) => {
    const { img, a } = await holderOfV1(t, { peerAuth: clearAuth('A') });
    // Between the nodes, a relay that passes everything on, with the resolution time changed when told.
    let tamper = false;
    const via = await startRelay(t, 'A', a.peer, (_req, headers) => {
      if (tamper && headers['x-ferry-resolved-at'] !== undefined)
        headers['x-ferry-resolved-at'] = String(Date.now());
      return true;
    });
    const { upstream } = fakeUpstream(() => ({ kind: 'unavailable', reason: '503' }));
    const b = await node(
      t,
      { [KEY]: [via], [img.manifestDigest]: [via] },
      { upstream },
      { peerAuth: clearAuth('B') },
    );
    const asked = await b.app.inject({ url: URL_V1 });
    assert.equal(asked.statusCode, 200, 'the untouched answer is taken');
    assert.equal(asked.headers['docker-content-digest'], img.manifestDigest);
    tamper = true;
    const c = await node(
      t,
      { [KEY]: [via], [img.manifestDigest]: [via] },
      { upstream },
      { peerAuth: clearAuth('C') },
    );
    const res = await c.app.inject({ url: URL_V1 });
    assert.equal(res.statusCode, 404, 'the changed answer is not');
    assert.equal(c.ev.list[0]?.tag?.outcome, 'miss');
  });
});
