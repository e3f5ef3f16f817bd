import assert from 'node:assert/strict';
import { describe, it, type TestContext } from 'node:test';
import type { Peer } from '@ferry/interface';
import { type ByteRange, MediaTypes, tagKey } from '@ferry/oci';
import { request } from 'undici';
import {
  createMemoryContentSource,
  createMemoryRouter,
  createRegistryServer,
  type MemoryContentSource,
  type RegistryServerOptions,
} from '../src/index.ts';
import {
  events,
  loopback,
  sampleImage,
  sha256,
  startFlakyPeer,
  startPeer,
  startRawPeer,
  startRelay,
  startSilentPeer,
  storeImage,
  until,
} from './helpers.ts';

/** The node under test (empty local store) whose router knows `providers`. */
async function node(
  t: TestContext,
  providers: Record<string, Peer[]>,
  extra: Partial<RegistryServerOptions> = {},
) {
  const ev = events();
  const router = createMemoryRouter(providers);
  const app = await createRegistryServer({
    source: createMemoryContentSource(),
    router,
    observer: ev.observer,
    hedgeDelayMs: Number.POSITIVE_INFINITY,
    randomPeerOrder: false,
    ...extra,
  });
  t.after(() => app.close());
  return { app, router, ev };
}

describe('mirroring from peers', () => {
  it('streams a blob and a manifest (by digest and by tag) from a real peer', async (t) => {
    const img = sampleImage(300_000);
    const a = await startPeer(t, 'A');
    storeImage(a.source, img, '1.0');
    const { app, ev } = await node(t, {
      [img.layerDigest]: [a.peer],
      [img.manifestDigest]: [a.peer],
      [tagKey('docker.io', 'library/app', '1.0')]: [a.peer],
    });
    const blob = await app.inject({ url: `/v2/library/app/blobs/${img.layerDigest}?ns=docker.io` });
    assert.equal(blob.statusCode, 200);
    assert.equal(blob.headers['docker-content-digest'], img.layerDigest);
    assert.equal(blob.headers['content-length'], String(img.layer.length));
    assert.equal(blob.headers['accept-ranges'], 'bytes');
    assert.ok(blob.rawPayload.equals(img.layer));

    const ranged = await app.inject({
      url: `/v2/library/app/blobs/${img.layerDigest}?ns=docker.io`,
      headers: { range: 'bytes=100-199' },
    });
    assert.equal(ranged.statusCode, 206);
    assert.equal(ranged.headers['content-range'], `bytes 100-199/${img.layer.length}`);
    assert.ok(ranged.rawPayload.equals(img.layer.subarray(100, 200)));

    for (const ref of [img.manifestDigest, '1.0']) {
      const m = await app.inject({ url: `/v2/library/app/manifests/${ref}?ns=docker.io` });
      assert.equal(m.statusCode, 200, ref);
      assert.equal(m.headers['content-type'], MediaTypes.ociManifest);
      assert.equal(m.headers['docker-content-digest'], img.manifestDigest);
      assert.ok(m.rawPayload.equals(img.manifest));
      const head = await app.inject({ method: 'HEAD', url: `/v2/library/app/manifests/${ref}?ns=docker.io` });
      assert.equal(head.statusCode, 200);
      assert.equal(head.headers['docker-content-digest'], img.manifestDigest);
      assert.equal(head.headers['content-length'], String(img.manifest.length));
    }
    await until(() => ev.list.length === 6, 'events');
    assert.ok(ev.list.every((e) => e.outcome === 'peer' && e.peer === 'A' && e.attempts === 1));
    assert.equal(ev.list[0]?.bytes, img.layer.length);
  });

  it('tries the next peer after an error status or a refused connection', async (t) => {
    const img = sampleImage(50_000);
    const bad = await startRawPeer(t, 'bad', (_req, res) => {
      res.writeHead(500).end();
    });
    const closed: Peer = { id: 'closed', host: loopback(), port: 1 };
    const good = await startPeer(t, 'good');
    storeImage(good.source, img);
    const { app, ev } = await node(t, { [img.layerDigest]: [bad.peer, closed, good.peer] });
    const res = await app.inject({ url: `/v2/library/app/blobs/${img.layerDigest}` });
    assert.equal(res.statusCode, 200);
    assert.ok(res.rawPayload.equals(img.layer));
    assert.equal(bad.requests[0]?.headers['x-ferry-mirrored'], 'true');
    assert.equal(new URL(bad.requests[0]?.url ?? '', 'http://x').searchParams.get('ns'), 'docker.io');
    const e = await until(() => ev.list[0], 'event');
    assert.equal(e.outcome, 'peer');
    assert.equal(e.peer, 'good');
    assert.equal(e.attempts, 3);
  });

  it('answers 404 with the attempts once every peer failed', async (t) => {
    const bad = await startRawPeer(t, 'bad', (_req, res) => {
      res.writeHead(404).end();
    });
    const digest = `sha256:${'d'.repeat(64)}`;
    const { app, ev } = await node(t, { [digest]: [bad.peer] });
    const res = await app.inject({ url: `/v2/x/blobs/${digest}` });
    assert.equal(res.statusCode, 404);
    assert.equal(res.json().errors[0].code, 'BLOB_UNKNOWN');
    assert.deepEqual(res.json().errors[0].detail, { attempts: 1 });
    assert.equal((await until(() => ev.list[0], 'event')).outcome, 'miss');
  });

  it('moves on from a peer that accepts TCP and never answers', async (t) => {
    const img = sampleImage(20_000);
    const silent = await startSilentPeer(t, 'silent');
    const silent2 = await startSilentPeer(t, 'silent2');
    const good = await startPeer(t, 'good');
    storeImage(good.source, img);
    const opts = { peerTimeoutMs: 400, peerMetadataTimeoutMs: 400, lastPeerTimeoutMs: 400 };
    const { app } = await node(
      t,
      { [img.layerDigest]: [silent.peer, good.peer], [img.manifestDigest]: [silent.peer, good.peer] },
      opts,
    );
    const blob = await app.inject({ url: `/v2/library/app/blobs/${img.layerDigest}` });
    assert.equal(blob.statusCode, 200);
    assert.ok(blob.rawPayload.equals(img.layer));
    const head = await app.inject({ method: 'HEAD', url: `/v2/library/app/manifests/${img.manifestDigest}` });
    assert.equal(head.statusCode, 200);
    assert.ok(silent.sockets.length >= 2);

    const digest = `sha256:${'e'.repeat(64)}`;
    const { app: app2 } = await node(t, { [digest]: [silent.peer, silent2.peer] }, opts);
    const miss = await app2.inject({ url: `/v2/x/blobs/${digest}` });
    assert.equal(miss.statusCode, 404);
    assert.deepEqual(miss.json().errors[0].detail, { attempts: 2 });
  });

  it('waits past the deadlines for the one peer left, up to lastPeerTimeoutMs', async (t) => {
    // On the loaded 30-node rig the only live holder answered manifest HEADs after the 1 s deadline,
    // and blob GETs after the 2 s one, and the asker answered 404 (a failed pull with the upstream
    // down). Here the deadlines are 150 ms and the holder answers after 400.
    const img = sampleImage(1000);
    const good = await startPeer(t, 'good');
    storeImage(good.source, img);
    const late = (delayMs: number) =>
      startRelay(t, 'late', good.peer, async () => {
        if (!Number.isFinite(delayMs)) return false; // never answers
        await new Promise((r) => setTimeout(r, delayMs));
        return true;
      });
    const holder = await late(400);
    const opts = { peerTimeoutMs: 150, peerMetadataTimeoutMs: 150, lastPeerTimeoutMs: 2_000 };
    const { app } = await node(t, { [img.manifestDigest]: [holder], [img.layerDigest]: [holder] }, opts);
    for (const method of ['HEAD', 'GET'] as const) {
      const res = await app.inject({ method, url: `/v2/library/app/manifests/${img.manifestDigest}` });
      assert.equal(res.statusCode, 200, method);
    }
    const blob = await app.inject({ url: `/v2/library/app/blobs/${img.layerDigest}` });
    assert.equal(blob.statusCode, 200, 'blob GET');
    assert.ok(blob.rawPayload.equals(img.layer));
    // A peer that never answers holds the request no longer than lastPeerTimeoutMs: 404.
    const silent = await late(Number.POSITIVE_INFINITY);
    const { app: app2 } = await node(
      t,
      { [img.manifestDigest]: [silent], [img.layerDigest]: [silent] },
      { ...opts, lastPeerTimeoutMs: 400 },
    );
    const miss = await app2.inject({
      method: 'HEAD',
      url: `/v2/library/app/manifests/${img.manifestDigest}`,
    });
    assert.equal(miss.statusCode, 404);
    const blobMiss = await app2.inject({ url: `/v2/library/app/blobs/${img.layerDigest}` });
    assert.equal(blobMiss.statusCode, 404);
  });

  it('hedges to the next peer when the first is slow', async (t) => {
    const img = sampleImage(20_000);
    const silent = await startSilentPeer(t, 'silent');
    const good = await startPeer(t, 'good');
    storeImage(good.source, img);
    const { app, ev } = await node(
      t,
      { [img.layerDigest]: [silent.peer, good.peer] },
      { hedgeDelayMs: 5, peerTimeoutMs: 60_000 },
    );
    const res = await app.inject({ url: `/v2/library/app/blobs/${img.layerDigest}` });
    assert.equal(res.statusCode, 200);
    assert.ok(res.rawPayload.equals(img.layer));
    const e = await until(() => ev.list[0], 'event');
    assert.equal(e.peer, 'good');
    assert.equal(e.attempts, 2);
    // The losing request to the silent peer is cancelled: its socket closes.
    await until(
      () => silent.sockets.length > 0 && silent.closed() === silent.sockets.length,
      'loser cancelled',
    );
  });

  it('adaptive hedging works from measured latencies, which have fractions of a millisecond', async (t) => {
    const img = sampleImage(20_000);
    const silent = await startSilentPeer(t, 'silent');
    const good = await startPeer(t, 'good');
    storeImage(good.source, img);
    const { app } = await node(
      t,
      { [img.layerDigest]: [good.peer], [img.manifestDigest]: [silent.peer, good.peer] },
      { hedgeDelayMs: 'adaptive', peerTimeoutMs: 60_000 },
    );
    // The first fetch records a latency (a fraction of a millisecond); the second hedges with it.
    const first = await app.inject({ url: `/v2/library/app/blobs/${img.layerDigest}` });
    assert.equal(first.statusCode, 200);
    const second = await app.inject({ method: 'HEAD', url: `/v2/library/app/blobs/${img.manifestDigest}` });
    assert.equal(second.statusCode, 200);
  });

  it('resumes a blob broken mid-stream from another peer, with exact bytes', async (t) => {
    const img = sampleImage(400_000);
    const flaky = await startFlakyPeer(t, 'flaky', img.layer, 100_000);
    const store = createMemoryContentSource({ chunkSize: 4096 });
    storeImage(store, img);
    const goodRanges: (ByteRange | undefined)[] = [];
    const source: MemoryContentSource = {
      ...store,
      open: (digest, range) => {
        goodRanges.push(range);
        return store.open(digest, range);
      },
    };
    const good = await startPeer(t, 'good', { source });
    const { app, ev } = await node(t, { [img.layerDigest]: [flaky.peer, good.peer] });
    const res = await app.inject({ url: `/v2/library/app/blobs/${img.layerDigest}` });
    assert.equal(res.statusCode, 200);
    assert.equal(res.rawPayload.length, img.layer.length);
    assert.ok(res.rawPayload.equals(img.layer));
    assert.equal(goodRanges.length, 1);
    assert.ok((goodRanges[0]?.start ?? 0) > 0);
    assert.equal(goodRanges[0]?.end, img.layer.length - 1);
    const e = await until(() => ev.list[0], 'event');
    assert.equal(e.bytes, img.layer.length);
    assert.equal(e.aborted, false);
  });

  it('resumes from a holder the first lookup had not found yet, found by looking again', async (t) => {
    const img = sampleImage(400_000);
    const flaky = await startFlakyPeer(t, 'flaky', img.layer, 100_000);
    const good = await startPeer(t, 'good');
    storeImage(good.source, img);
    // The lookup of the request's race yields the flaky peer only; the good one is known from then on.
    const router = createMemoryRouter({ [img.layerDigest]: [flaky.peer] });
    const lookup = router.lookup.bind(router);
    router.lookup = async function* (key, options) {
      yield* lookup(key, options);
      router.add(key, good.peer);
    };
    const { app, ev } = await node(t, {}, { router });
    const res = await app.inject({ url: `/v2/library/app/blobs/${img.layerDigest}` });
    assert.equal(res.statusCode, 200);
    assert.ok(res.rawPayload.equals(img.layer));
    const e = await until(() => ev.list[0], 'event');
    assert.deepEqual(
      e.peers?.map((p) => p.id),
      ['flaky', 'good'],
      'one request, served by both',
    );
    assert.equal(router.lookups.length, 2);
  });

  it('resumes from the same peer when it is the only one, also for a client range', async (t) => {
    const img = sampleImage(300_000);
    const flaky = await startFlakyPeer(t, 'flaky', img.layer, 64_000, 2);
    const { app } = await node(t, { [img.layerDigest]: [flaky.peer] });
    const res = await app.inject({
      url: `/v2/library/app/blobs/${img.layerDigest}`,
      headers: { range: 'bytes=1000-250999' },
    });
    assert.equal(res.statusCode, 206);
    assert.equal(res.headers['content-range'], `bytes 1000-250999/${img.layer.length}`);
    assert.ok(res.rawPayload.equals(img.layer.subarray(1000, 251000)));
    assert.equal(flaky.ranges[0], 'bytes=1000-250999');
    assert.equal(flaky.ranges.length, 3);
    assert.match(flaky.ranges[2] ?? '', /^bytes=\d+-250999$/);
  });

  it('rejects a manifest whose bytes do not match the digest (lying peer)', async (t) => {
    const img = sampleImage(10);
    const other = sampleImage(10);
    const liar = await startRawPeer(t, 'liar', (_req, res) => {
      res.writeHead(200, {
        'content-type': MediaTypes.ociManifest,
        'content-length': String(other.manifest.length),
        'docker-content-digest': img.manifestDigest,
      });
      res.end(other.manifest);
    });
    const { app, ev } = await node(t, { [img.manifestDigest]: [liar.peer] });
    const res = await app.inject({ url: `/v2/library/app/manifests/${img.manifestDigest}` });
    assert.equal(res.statusCode, 404);
    assert.equal(res.json().errors[0].code, 'MANIFEST_UNKNOWN');
    assert.doesNotMatch(res.body, /hashing to|liar/, 'peer failures stay out of the client answer');
    assert.match((await until(() => ev.list[0], 'event')).error ?? '', /hashing to/);

    // With an honest peer after the liar, the honest answer wins.
    const good = await startPeer(t, 'good');
    storeImage(good.source, img, 'v1');
    const key = tagKey('docker.io', 'library/app', 'v1');
    const { app: app2 } = await node(t, {
      [img.manifestDigest]: [liar.peer, good.peer],
      [key]: [liar.peer, good.peer],
    });
    for (const ref of [img.manifestDigest, 'v1']) {
      const ok = await app2.inject({ url: `/v2/library/app/manifests/${ref}` });
      assert.equal(ok.statusCode, 200, ref);
      assert.ok(ok.rawPayload.equals(img.manifest));
    }
    assert.ok(ev.list.length >= 1);
  });

  it('breaks the response instead of completing a blob whose bytes do not hash to the digest', async (t) => {
    const img = sampleImage(2 * 1024 * 1024);
    const wrong = Buffer.from(img.layer);
    wrong[wrong.length - 1] = (wrong.at(-1) ?? 0) ^ 0xff;
    const liar = await startRawPeer(t, 'liar', (_req, res) => {
      res.writeHead(200, {
        'content-length': String(wrong.length),
        'docker-content-digest': img.layerDigest,
      });
      res.end(wrong);
    });
    const { app, ev } = await node(t, { [img.layerDigest]: [liar.peer] });
    await app.listen({ host: loopback(), port: 0 });
    const addr = app.server.address() as { address: string; port: number };
    const res = await request(`http://${addr.address}:${addr.port}/v2/library/app/blobs/${img.layerDigest}`);
    // Either the error came before the headers (5xx) or the body is cut short: never a complete 200.
    if (res.statusCode === 200) await assert.rejects(res.body.arrayBuffer());
    else {
      assert.ok(res.statusCode >= 500);
      await res.body.dump();
    }
    const e = await until(() => ev.list[0], 'event');
    assert.ok(e.bytes < img.layer.length);
  });

  it('cancels the peer fetch when the client goes away', async (t) => {
    const size = 4 * 1024 * 1024;
    const blob = Buffer.alloc(size, 7);
    const digest = sha256(blob);
    let peerClosed = false;
    const slow = await startRawPeer(t, 'slow', (req, res) => {
      res.writeHead(200, { 'content-length': String(size), 'docker-content-digest': digest });
      res.write(blob.subarray(0, 65_536));
      req.socket.once('close', () => {
        peerClosed = true;
      });
      // then stalls: the rest never comes
    });
    const { app, ev } = await node(t, { [digest]: [slow.peer] }, { peerTimeoutMs: 60_000 });
    await app.listen({ host: loopback(), port: 0 });
    const addr = app.server.address() as { address: string; port: number };
    const ac = new AbortController();
    const res = await request(`http://${addr.address}:${addr.port}/v2/x/blobs/${digest}`, {
      signal: ac.signal,
    });
    assert.equal(res.statusCode, 200);
    for await (const _chunk of res.body) break; // got some bytes, then containerd cancels
    ac.abort();
    await until(() => peerClosed, 'peer connection closed');
    const e = await until(() => ev.list[0], 'event');
    assert.equal(e.aborted, true);
    assert.equal(e.outcome, 'peer');
  });

  it('cancels a peer fetch still waiting for headers when the client goes away', async (t) => {
    const silent = await startSilentPeer(t, 'silent');
    const digest = `sha256:${'f'.repeat(64)}`;
    const { app, ev } = await node(t, { [digest]: [silent.peer] }, { peerTimeoutMs: 60_000 });
    await app.listen({ host: loopback(), port: 0 });
    const addr = app.server.address() as { address: string; port: number };
    const ac = new AbortController();
    const pending = request(`http://${addr.address}:${addr.port}/v2/x/blobs/${digest}`, {
      signal: ac.signal,
    });
    await until(() => silent.sockets.length === 1, 'peer asked');
    ac.abort();
    await assert.rejects(pending);
    await until(() => silent.closed() === 1, 'peer connection closed');
    const e = await until(() => ev.list[0], 'event');
    assert.equal(e.aborted, true);
    assert.equal(e.outcome, 'miss');
  });

  it('never asks peers for a request that is itself mirrored, and never loops', async (t) => {
    const img = sampleImage(10);
    const a = await startPeer(t, 'A');
    // B's router points at A, A's router points at B: a mirrored request must stop at the first hop.
    const routerA = createMemoryRouter();
    const b = await startPeer(t, 'B', { router: createMemoryRouter({ [img.layerDigest]: [a.peer] }) });
    routerA.add(img.layerDigest, b.peer);
    const res = await b.app.inject({ url: `/v2/library/app/blobs/${img.layerDigest}` });
    assert.equal(res.statusCode, 404);
    assert.deepEqual(res.json().errors[0].detail, { attempts: 1 });
  });
});
