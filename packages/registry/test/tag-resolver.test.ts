import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Peer, UpstreamOutcome } from '@ferry/interface';
import { createMemoryContentSource, createMemoryTagStore } from '../src/index.ts';
import { createTagResolver, type TagResolverOptions } from '../src/tag-resolver.ts';
import type { PeerTagAnswer } from '../src/tags.ts';
import { sampleImage, storeImage } from './helpers.ts';

const REF = { registry: 'docker.io', repository: 'library/app', tag: 'v1' };
const log = { warn() {} };
const NOW = 1_800_000_000_000;
const peer = (id: string): Peer => ({ id, host: '127.0.0.1', port: 1 });

function setup(
  upstream: () => UpstreamOutcome,
  answers: PeerTagAnswer[] = [],
  extra: Partial<TagResolverOptions> = {},
) {
  const source = createMemoryContentSource();
  const store = createMemoryTagStore();
  const asked: string[] = [];
  const resolver = createTagResolver(
    {
      modeFor: () => 'verify',
      upstream: { resolveTag: async () => upstream(), hasCredentials: () => false },
      lastKnown: store,
      now: () => NOW,
      ...extra,
    },
    {
      source,
      askPeers: async (q) => {
        asked.push(q.key);
        return answers;
      },
    },
  );
  return { resolver, source, store, asked };
}

describe('createTagResolver', () => {
  it('verify: records the upstream answer with the time of asking and never asks peers', async () => {
    const digest = `sha256:${'a'.repeat(64)}`;
    const { resolver, store, asked } = setup(() => ({ kind: 'resolved', digest }));
    const v = await resolver.verify(REF, new AbortController().signal, log);
    assert.ok(v.ok);
    assert.equal(v.resolution.digest, digest);
    assert.deepEqual(v.event, {
      mode: 'verify',
      outcome: 'upstream',
      digest,
      source: 'upstream',
      upstream: 'resolved',
      upstreamMs: v.event.upstreamMs,
    });
    assert.deepEqual(
      store.records.map((r) => [r.digest, r.resolvedAt, r.source]),
      [[digest, NOW, 'upstream']],
    );
    assert.deepEqual(asked, []);
  });

  it('verify, upstream unavailable: the newest of record, local image and peers; the peers holding it come along', async () => {
    const img = sampleImage(10);
    const newer = `sha256:${'b'.repeat(64)}`;
    const { resolver, source, store } = setup(
      () => ({ kind: 'unavailable', reason: 'x' }),
      [
        { peer: peer('p1'), digest: newer, resolvedAt: NOW - 1000 },
        { peer: peer('p2'), digest: img.manifestDigest, resolvedAt: NOW - 5000 },
      ],
    );
    storeImage(source, img, 'v1');
    await store.record({ ...REF, digest: img.manifestDigest, resolvedAt: NOW - 9000, source: 'peer' });
    const v = await resolver.verify(REF, new AbortController().signal, log);
    assert.ok(v.ok);
    assert.equal(v.resolution.digest, newer);
    assert.deepEqual(
      v.holders.map((p) => p.id),
      ['p1'],
    );
    assert.equal(v.event.outcome, 'last-known');
    assert.equal(v.event.lastKnownAgeMs, 1000);
  });

  it('verify, not-found and unauthorized are 404 reasons, never a last-known digest', async () => {
    for (const outcome of [
      { kind: 'not-found' },
      { kind: 'unauthorized', status: 401 },
    ] as UpstreamOutcome[]) {
      const { resolver, store } = setup(() => outcome);
      await store.record({
        ...REF,
        digest: `sha256:${'c'.repeat(64)}`,
        resolvedAt: NOW - 1,
        source: 'upstream',
      });
      const v = await resolver.verify(REF, new AbortController().signal, log);
      assert.equal(v.ok, false);
    }
  });

  it('an upstream that never answers is unavailable after the deadline', async () => {
    const source = createMemoryContentSource();
    const resolver = createTagResolver(
      {
        modeFor: () => 'verify',
        upstream: { resolveTag: () => new Promise(() => {}), hasCredentials: () => false },
        upstreamTimeoutMs: 20,
      },
      { source, askPeers: async () => [] },
    );
    const v = await resolver.verify(REF, new AbortController().signal, log);
    assert.equal(v.ok, false);
    assert.equal(v.event.upstream, 'unavailable');
  });

  it('ownAnswer: a record whose content is gone is skipped for the local image', async () => {
    const img = sampleImage(10);
    const { resolver, source, store } = setup(() => ({ kind: 'not-found' }));
    await store.record({ ...REF, digest: `sha256:${'d'.repeat(64)}`, resolvedAt: NOW, source: 'upstream' });
    assert.equal(await resolver.ownAnswer(REF, log), undefined);
    storeImage(source, img, 'v1');
    const own = await resolver.ownAnswer(REF, log);
    assert.equal(own?.digest, img.manifestDigest);
    assert.equal(own?.source, 'local');
  });
});

describe('peer answers are evidence, not truth', () => {
  const liarDigest = `sha256:${'e'.repeat(64)}`;
  const down = (): UpstreamOutcome => ({ kind: 'unavailable', reason: 'x' });

  it('a resolution time in the future or implausibly old is rejected', async () => {
    const img = sampleImage(10);
    for (const resolvedAt of [NOW + 3_600_000, NOW - 400 * 24 * 3_600_000]) {
      const { resolver, source, store } = setup(down, [
        { peer: peer('liar'), digest: liarDigest, resolvedAt },
      ]);
      storeImage(source, img, 'v1');
      const v = await resolver.verify(REF, new AbortController().signal, log);
      assert.ok(v.ok);
      assert.equal(v.resolution.digest, img.manifestDigest, 'the local image, not the liar');
      assert.deepEqual(store.records, [], 'nothing of the liar is recorded');
    }
  });

  it("a peer's newer answer never replaces what this node got from the upstream itself", async () => {
    const own = `sha256:${'1'.repeat(64)}`;
    const { resolver, store } = setup(down, [
      { peer: peer('liar'), digest: liarDigest, resolvedAt: NOW - 1 },
    ]);
    await store.record({ ...REF, digest: own, resolvedAt: NOW - 3_600_000, source: 'upstream' });
    const v = await resolver.verify(REF, new AbortController().signal, log);
    assert.ok(v.ok);
    assert.equal(v.resolution.digest, own);
    assert.deepEqual(v.holders, []);
    assert.equal((await store.get('docker.io', 'library/app', 'v1'))?.digest, own);
  });

  it('a lie learned during an outage does not outlive it: the upstream answer replaces it', async () => {
    const real = `sha256:${'2'.repeat(64)}`;
    let upstream: UpstreamOutcome = down();
    const { resolver, store } = setup(
      () => upstream,
      [
        { peer: peer('liar'), digest: liarDigest, resolvedAt: NOW + 30_000 }, // inside the clock skew
      ],
    );
    const during = await resolver.verify(REF, new AbortController().signal, log);
    assert.ok(during.ok);
    assert.equal(during.resolution.digest, liarDigest, 'a node that knows nothing takes the only answer');
    upstream = { kind: 'resolved', digest: real };
    const back = await resolver.verify(REF, new AbortController().signal, log);
    assert.ok(back.ok);
    assert.equal(
      (await store.get('docker.io', 'library/app', 'v1'))?.digest,
      real,
      'the upstream replaced it',
    );
    upstream = down();
    const next = await resolver.verify(REF, new AbortController().signal, log);
    assert.ok(next.ok);
    assert.equal(next.resolution.digest, real, 'the next outage serves the upstream answer');
  });

  it('a record learned from a peer is not passed on to other peers', async () => {
    const { resolver, source, store } = setup(down);
    const img = sampleImage(10);
    storeImage(source, img);
    await store.record({ ...REF, digest: img.manifestDigest, resolvedAt: NOW, source: 'peer' });
    assert.equal(await resolver.ownAnswer(REF, log), undefined);
  });
});
