/**
 * Hostile peers against the relay: wrong bytes, oversized bodies, sybils that sort first, and who gets
 * credit after a resume. Each test fails without the rule it names.
 */
import assert from 'node:assert/strict';
import { describe, it, type TestContext } from 'node:test';
import type { Peer } from '@ferry/interface';
import { request } from 'undici';
import {
  createMemoryContentSource,
  createMemoryRouter,
  createRegistryServer,
  type RegistryServerOptions,
} from '../src/index.ts';
import {
  events,
  loopback,
  sampleImage,
  startFlakyPeer,
  startPeer,
  startRawPeer,
  storeImage,
  until,
} from './helpers.ts';

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
  await app.listen({ host: loopback(), port: 0 });
  const addr = app.server.address() as { address: string; port: number };
  return { app, router, ev, url: (path: string) => `http://${addr.address}:${addr.port}${path}` };
}

/** GET through the node: the status and the whole body, or `broken` when the body was cut. */
async function get(url: string): Promise<{ status: number; body?: Buffer; broken: boolean }> {
  const res = await request(url);
  try {
    return { status: res.statusCode, body: Buffer.from(await res.body.arrayBuffer()), broken: false };
  } catch {
    return { status: res.statusCode, broken: true };
  }
}

describe('verified relay', () => {
  it('wrong bytes break the response, the peer is quarantined for that digest, the next pull succeeds', async (t) => {
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
    const good = await startPeer(t, 'good');
    storeImage(good.source, img);
    const { url, ev } = await node(t, { [img.layerDigest]: [liar.peer, good.peer] });
    const path = `/v2/library/app/blobs/${img.layerDigest}`;
    const first = await get(url(path));
    assert.ok(first.broken || first.status >= 500, 'never a complete answer with wrong bytes');
    const second = await get(url(path));
    assert.equal(second.status, 200);
    assert.ok(second.body?.equals(img.layer));
    assert.equal(liar.requests.length, 1, 'the liar is not asked again for this digest');
    const e = await until(() => ev.list[1], 'second event');
    assert.equal(e.peer, 'good');
  });

  it('a body longer than the size the manifest gave is refused before a byte goes out', async (t) => {
    const img = sampleImage(100_000);
    const good = await startPeer(t, 'good');
    storeImage(good.source, img, 'v1');
    const huge = Buffer.concat([img.layer, Buffer.alloc(1_000_000)]);
    const liar = await startRawPeer(t, 'liar', (_req, res) => {
      res.writeHead(200, { 'content-length': String(huge.length), 'docker-content-digest': img.layerDigest });
      res.end(huge);
    });
    const { url, router } = await node(t, {
      [img.manifestDigest]: [good.peer],
      [img.layerDigest]: [liar.peer],
    });
    // containerd reads the manifest first, through this node: it names the layer's true size.
    const m = await get(url(`/v2/library/app/manifests/${img.manifestDigest}`));
    assert.equal(m.status, 200);
    const cut = await get(url(`/v2/library/app/blobs/${img.layerDigest}`));
    assert.equal(cut.status, 404, 'the liar alone: nothing relayed');
    router.add(img.layerDigest, good.peer);
    const ok = await get(url(`/v2/library/app/blobs/${img.layerDigest}`));
    assert.equal(ok.status, 200);
    assert.ok(ok.body?.equals(img.layer));
    assert.equal(liar.requests.length, 1, 'quarantined');
  });

  it('peers that sort first and do not hold the content cannot use up the attempts', async (t) => {
    const img = sampleImage(50_000);
    const sybils = await Promise.all(
      ['0a', '0b', '0c', '0d'].map((id) =>
        startRawPeer(t, id, (_req, res) => {
          res.writeHead(404).end();
        }),
      ),
    );
    const good = await startPeer(t, 'zz');
    storeImage(good.source, img);
    const { url } = await node(t, { [img.layerDigest]: [...sybils.map((s) => s.peer), good.peer] });
    const res = await get(url(`/v2/library/app/blobs/${img.layerDigest}`));
    assert.equal(res.status, 200);
    assert.ok(res.body?.equals(img.layer));
  });

  it('after a failure, a peer goes last: the next request asks the others first', async (t) => {
    const img = sampleImage(50_000);
    const bad = await startRawPeer(t, 'bad', (_req, res) => {
      res.writeHead(500).end();
    });
    const good = await startPeer(t, 'good');
    storeImage(good.source, img);
    const { url } = await node(t, { [img.layerDigest]: [bad.peer, good.peer] });
    for (let i = 0; i < 3; i++)
      assert.equal((await get(url(`/v2/library/app/blobs/${img.layerDigest}`))).status, 200);
    assert.equal(bad.requests.length, 1, 'asked once, then last');
  });

  it('after a resume, the event credits every peer that served bytes', async (t) => {
    const img = sampleImage(400_000);
    const flaky = await startFlakyPeer(t, 'flaky', img.layer, 100_000);
    const good = await startPeer(t, 'good');
    storeImage(good.source, img);
    const { url, ev } = await node(t, { [img.layerDigest]: [flaky.peer, good.peer] });
    const res = await get(url(`/v2/library/app/blobs/${img.layerDigest}`));
    assert.equal(res.status, 200);
    const e = await until(() => ev.list[0], 'event');
    const ids = (e.peers ?? []).map((p) => p.id).sort();
    assert.deepEqual(ids, ['flaky', 'good']);
    assert.equal(
      (e.peers ?? []).reduce((n, p) => n + p.bytes, 0),
      img.layer.length,
    );
  });
});
