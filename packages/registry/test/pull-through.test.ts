import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ContentOutcome, ContentUpstream, Peer, PeerAuth } from '@ferry/interface';
import { Agent, request } from 'undici';
import {
  createMemoryContentSource,
  createMemoryRouter,
  createRegistryServer,
  type InflightDirectory,
  PullThrough,
  type PullThroughObserver,
  rank,
  Spool,
} from '../src/index.ts';
import { clearAuth, loopback, sha256 } from './helpers.ts';

/** An in-memory DHT: key → providers. While `hide` is set, new records stay invisible until `reveal()`. */
function directory() {
  const keys = new Map<string, Map<string, Peer & { visible: boolean }>>();
  return {
    keys,
    hide: false,
    reveal() {
      this.hide = false;
      for (const m of keys.values()) for (const p of m.values()) p.visible = true;
    },
    forNode(self: () => Peer): InflightDirectory {
      const dir = this;
      return {
        get peerId() {
          return self().id;
        },
        async advertise(ks) {
          for (const k of ks) {
            const m = keys.get(k) ?? new Map<string, Peer & { visible: boolean }>();
            m.set(self().id, { ...self(), visible: !dir.hide });
            keys.set(k, m);
          }
        },
        async withdraw(ks) {
          for (const k of ks) keys.get(k)?.delete(self().id);
        },
        async *lookup(key) {
          for (const { visible, ...p } of keys.get(key)?.values() ?? []) {
            if (p.id !== self().id && visible) yield p;
          }
        },
      };
    },
  };
}

interface FakeUpstreamOptions {
  /** Flip one byte of the first full GET. */
  corruptOnce?: boolean;
  /** The first GET breaks after this many bytes. */
  cutFirstAfter?: number;
  unauthorized?: boolean;
  /** Delay per 64 KiB chunk (keeps the blob in flight). */
  chunkDelayMs?: number;
}

/** An upstream holding one blob, counting the bytes it sends. */
function fakeUpstream(blob: Buffer, o: FakeUpstreamOptions = {}) {
  const stats = { bytes: 0, gets: 0, offsets: [] as number[] };
  let corrupt = o.corruptOnce ?? false;
  let cut = o.cutFirstAfter;
  const upstream: ContentUpstream = {
    async fetchContent(_r, _repo, _kind, digest, opts = {}): Promise<ContentOutcome> {
      if (o.unauthorized) return { kind: 'unauthorized', status: 401 };
      if (digest !== sha256(blob)) return { kind: 'not-found' };
      stats.gets++;
      const offset = opts.offset ?? 0;
      stats.offsets.push(offset);
      const flip = corrupt && offset === 0;
      corrupt = false;
      const cutAt = cut;
      cut = undefined;
      let cancelled = false;
      async function* body() {
        for (let off = offset; off < blob.length; off += 65_536) {
          if (cancelled) return;
          if (o.chunkDelayMs) await sleep(o.chunkDelayMs);
          let chunk = blob.subarray(off, Math.min(blob.length, off + 65_536));
          if (cutAt !== undefined && off + chunk.length > cutAt) {
            chunk = chunk.subarray(0, cutAt - off);
            stats.bytes += chunk.length;
            yield chunk;
            throw new Error('connection reset');
          }
          if (flip && off === 0) {
            chunk = Buffer.from(chunk);
            chunk[10] = (chunk[10] as number) ^ 1;
          }
          stats.bytes += chunk.length;
          yield chunk;
        }
      }
      return {
        kind: 'content',
        size: blob.length,
        offset,
        mediaType: 'application/octet-stream',
        body: body(),
        cancel: () => {
          cancelled = true;
        },
      };
    },
  };
  return { upstream, stats };
}

async function startNode(
  t: TestContext,
  id: string,
  dir: ReturnType<typeof directory> | undefined,
  upstream: ContentUpstream,
  extra: { maxBytes?: number; observer?: PullThroughObserver; peerAuth?: PeerAuth } = {},
) {
  const spoolDir = await mkdtemp(join(tmpdir(), 'ferry-pt-'));
  const spool = await Spool.open({
    dir: spoolDir,
    maxBytes: extra.maxBytes ?? 1 << 30,
    freeBytes: async () => 1e15,
  });
  const source = createMemoryContentSource();
  let self: Peer = { id, host: '', port: 0 };
  const dispatcher = new Agent();
  const pt = new PullThrough({
    spool,
    upstream,
    ...(dir === undefined ? {} : { directory: dir.forNode(() => self) }),
    windowMs: 150,
    dispatcher,
    peerTimeoutMs: 2000,
    peerIdleMs: 2000,
    held: async (d) => (await source.stat(d)) !== undefined,
    ...(extra.observer === undefined ? {} : { observer: extra.observer }),
    ...(extra.peerAuth === undefined ? {} : { peerAuth: extra.peerAuth }),
  });
  const app = await createRegistryServer({
    source,
    router: createMemoryRouter(),
    pullThrough: pt,
    ...(extra.peerAuth === undefined ? {} : { peerAuth: extra.peerAuth }),
  });
  const host = loopback();
  await app.listen({ host, port: 0 });
  const port = (app.server.address() as { port: number }).port;
  self = { id, host, port };
  let closed = false;
  const close = async () => {
    if (closed) return;
    closed = true;
    await app.close();
    await pt.close();
    await dispatcher.close();
    await rm(spoolDir, { recursive: true, force: true });
  };
  t.after(close);
  return { app, pt, spool, source, url: `http://${host}:${port}`, close };
}

async function pull(url: string, digest: string, headers: Record<string, string> = {}) {
  const res = await request(`${url}/v2/library/app/blobs/${digest}?ns=docker.io`, { headers });
  const chunks: Buffer[] = [];
  try {
    for await (const c of res.body) chunks.push(c as Buffer);
    return { status: res.statusCode, body: Buffer.concat(chunks), complete: true };
  } catch {
    return { status: res.statusCode, body: Buffer.concat(chunks), complete: false };
  }
}

describe('pull-through with first-pull sharing', () => {
  it('nodes asking at once settle on one fetcher: the upstream sends the blob once, every node gets it', async (t) => {
    const blob = randomBytes(2 * 1024 * 1024 + 3);
    const { upstream, stats } = fakeUpstream(blob, { chunkDelayMs: 2 });
    const dir = directory();
    const counts = { shared: 0, upstream: 0 };
    const observer: PullThroughObserver = {
      onSharedBytes: (n) => {
        counts.shared += n;
      },
      onUpstreamBytes: (n) => {
        counts.upstream += n;
      },
    };
    const nodes = await Promise.all(
      ['A', 'B', 'C', 'D'].map((id) => startNode(t, id, dir, upstream, { observer })),
    );
    const results = await Promise.all(nodes.map((n) => pull(n.url, sha256(blob))));
    for (const r of results) {
      assert.equal(r.status, 200);
      assert.ok(r.body.equals(blob));
    }
    assert.equal(stats.gets, 1, 'one upstream fetch');
    assert.equal(stats.bytes, blob.length);
    assert.equal(counts.upstream, blob.length);
    assert.ok(counts.shared >= 3 * blob.length, `shared ${counts.shared}`);
  });

  it('two nodes that decided before seeing each other both fetch: the higher rank yields to the lower and follows it', async (t) => {
    const blob = randomBytes(8 * 1024 * 1024);
    const digest = sha256(blob);
    const { upstream, stats } = fakeUpstream(blob, { chunkDelayMs: 25 });
    const dir = directory();
    const [low, high] = ['A', 'B'].sort((x, y) => (rank(x, digest) < rank(y, digest) ? -1 : 1)) as [
      string,
      string,
    ];
    const ends = new Map<string, string>();
    const observer = (id: string): PullThroughObserver => ({
      onTransferEnd: (e) => {
        ends.set(id, e.source);
      },
    });
    const h = await startNode(t, high, dir, upstream, { observer: observer(high) });
    const l = await startNode(t, low, dir, upstream, { observer: observer(low) });
    const fetching = async (n: typeof h) => {
      const deadline = Date.now() + 10_000;
      while (n.pt.list()[0]?.source !== 'upstream' && Date.now() < deadline) await sleep(5);
      assert.equal(n.pt.list()[0]?.source, 'upstream');
    };
    // Neither sees the other's records until both decided to fetch (a late announcement).
    dir.hide = true;
    const first = pull(h.url, digest);
    await fetching(h);
    const second = pull(l.url, digest);
    await fetching(l);
    dir.reveal();
    const [rh, rl] = await Promise.all([first, second]);
    assert.ok(rh.complete && rh.body.equals(blob));
    assert.ok(rl.complete && rl.body.equals(blob));
    assert.equal(ends.get(low), 'upstream', 'the lower rank kept fetching');
    assert.equal(ends.get(high), low, 'the higher rank finished from the lower one');
    assert.ok(stats.bytes < 1.8 * blob.length, `upstream sent ${stats.bytes} for ${blob.length}`);
  });

  it('a range of a blob still in flight waits for its bytes', async (t) => {
    const blob = randomBytes(1024 * 1024);
    const { upstream } = fakeUpstream(blob, { chunkDelayMs: 3 });
    const n = await startNode(t, 'A', undefined, upstream);
    const r = await pull(n.url, sha256(blob), { range: 'bytes=900000-' });
    assert.equal(r.status, 206);
    assert.ok(r.body.equals(blob.subarray(900_000)));
  });

  it('a staggered node follows the copy in flight', async (t) => {
    const blob = randomBytes(2 * 1024 * 1024);
    const { upstream, stats } = fakeUpstream(blob, { chunkDelayMs: 5 });
    const dir = directory();
    const a = await startNode(t, 'A', dir, upstream);
    const b = await startNode(t, 'B', dir, upstream);
    const first = pull(a.url, sha256(blob));
    await sleep(300);
    const second = await pull(b.url, sha256(blob));
    assert.ok((await first).body.equals(blob));
    assert.ok(second.body.equals(blob));
    assert.equal(stats.gets, 1);
  });

  it('a node asking after the transfer ended, before the fetcher holds it in containerd, follows that copy', async (t) => {
    const blob = randomBytes(1024 * 1024);
    const digest = sha256(blob);
    const { upstream, stats } = fakeUpstream(blob);
    const dir = directory();
    const a = await startNode(t, 'A', dir, upstream);
    const b = await startNode(t, 'B', dir, upstream);
    const first = await pull(a.url, digest);
    assert.ok(first.complete && first.body.equals(blob));
    // A's transfer is over; its containerd does not hold the blob yet, so nothing advertises it but
    // the copy key.
    assert.ok(dir.keys.get(`ferry-copy/${digest}`)?.has('A'), 'the copy key stays while the entry does');
    const second = await pull(b.url, digest);
    assert.ok(second.complete && second.body.equals(blob));
    assert.equal(stats.gets, 1, 'the upstream sent the blob once');
    // Once A's content store holds it, the entry goes and so does its copy key.
    a.source.add(blob);
    const deadline = Date.now() + 10_000;
    while (dir.keys.get(`ferry-copy/${digest}`)?.has('A') && Date.now() < deadline) await sleep(50);
    assert.equal(dir.keys.get(`ferry-copy/${digest}`)?.has('A'), false, 'the copy key went with the entry');
  });

  it('the fetcher dies mid-blob: a follower takes over with Range from where its bytes stopped', async (t) => {
    const blob = randomBytes(3 * 1024 * 1024);
    const { upstream, stats } = fakeUpstream(blob, { chunkDelayMs: 4 });
    const dir = directory();
    let takeovers = 0;
    const observer: PullThroughObserver = {
      onTakeover: () => {
        takeovers++;
      },
    };
    const nodes = await Promise.all(
      ['A', 'B', 'C'].map((id) => startNode(t, id, dir, upstream, { observer })),
    );
    const pulls = nodes.map((n) => pull(n.url, sha256(blob)));
    // Wait until one node fetches from the upstream, then kill it.
    let fetcher: (typeof nodes)[0] | undefined;
    const deadline = Date.now() + 5000;
    while (fetcher === undefined && Date.now() < deadline) {
      fetcher = nodes.find(
        (n) => n.pt.list()[0]?.source === 'upstream' && (n.pt.list()[0]?.written ?? 0) > 500_000,
      );
      await sleep(5);
    }
    assert.ok(fetcher, 'a fetcher started');
    await fetcher.close();
    const results = await Promise.all(pulls);
    const others = results.filter((_, i) => nodes[i] !== fetcher);
    for (const r of others) assert.ok(r.complete && r.body.equals(blob), 'every other pull completes');
    assert.ok(takeovers >= 1);
    assert.ok(
      stats.offsets.some((o) => o > 0),
      `a ranged takeover: ${stats.offsets}`,
    );
    assert.ok(stats.bytes < 2 * blob.length, `upstream sent ${stats.bytes}`);
  });

  it('a copy answered by another node than the one found is not taken: the node fetches itself', async (t) => {
    const blob = randomBytes(200_000);
    const { upstream, stats } = fakeUpstream(blob);
    const dir = directory();
    const a = await startNode(t, 'A', dir, upstream, { peerAuth: clearAuth('A') });
    // C holds the blob; a record names B at C's address, so C answers (signed as C) for B.
    const c = await startNode(t, 'C', undefined, upstream, { peerAuth: clearAuth('C') });
    c.source.add(blob);
    let asked = 0;
    c.app.server.on('request', () => {
      asked++;
    });
    await dir
      .forNode(() => ({ id: 'B', host: new URL(c.url).hostname, port: Number(new URL(c.url).port) }))
      .advertise([`ferry-copy/${sha256(blob)}`]);
    const r = await pull(a.url, sha256(blob));
    assert.ok(r.complete && r.body.equals(blob));
    assert.ok(asked >= 1, 'the impostor was asked');
    assert.equal(
      stats.gets,
      1,
      'the blob came from the upstream, not from the answer signed by another node',
    );
  });

  it('a stale copy record (the peer answers 404) is skipped: the node fetches itself, nothing crashes', async (t) => {
    const blob = randomBytes(200_000);
    const { upstream, stats } = fakeUpstream(blob);
    const dir = directory();
    const a = await startNode(t, 'A', dir, upstream);
    const b = await startNode(t, 'B', dir, upstream);
    // B announced a copy once, and holds nothing now.
    await dir
      .forNode(() => ({ id: 'B', host: new URL(b.url).hostname, port: Number(new URL(b.url).port) }))
      .advertise([`ferry-copy/${sha256(blob)}`]);
    const r = await pull(a.url, sha256(blob));
    assert.ok(r.complete && r.body.equals(blob));
    assert.equal(stats.gets, 1);
    await sleep(50); // an unhandled error event would surface here
  });

  it('the upstream connection breaks: the fetcher resumes with Range', async (t) => {
    const blob = randomBytes(1024 * 1024);
    const { upstream, stats } = fakeUpstream(blob, { cutFirstAfter: 400_000 });
    const n = await startNode(t, 'A', undefined, upstream);
    const r = await pull(n.url, sha256(blob));
    assert.ok(r.complete && r.body.equals(blob));
    assert.deepEqual(stats.offsets, [0, 400_000]);
  });

  it('wrong bytes from the upstream: no node receives the final byte', async (t) => {
    const blob = randomBytes(2 * 1024 * 1024);
    const { upstream } = fakeUpstream(blob, { corruptOnce: true, chunkDelayMs: 2 });
    const dir = directory();
    const nodes = await Promise.all(['A', 'B'].map((id) => startNode(t, id, dir, upstream)));
    const results = await Promise.all(nodes.map((n) => pull(n.url, sha256(blob))));
    // A body either breaks before its last byte or is the right blob (a node that had no byte of the
    // wrong copy yet when it failed fetches afresh); at least the fetcher's own client's breaks.
    for (const r of results) {
      if (r.complete) assert.ok(r.body.equals(blob), 'a complete body is the right blob');
      else assert.ok(r.body.length < blob.length);
    }
    assert.ok(
      results.some((r) => !r.complete),
      'the body of the wrong copy breaks',
    );
    // The next request starts over and gets the right bytes.
    const again = await pull(nodes[0]?.url as string, sha256(blob));
    assert.ok(again.complete && again.body.equals(blob));
  });

  it('401 from the upstream, a full spool: 404, so containerd asks the upstream itself', async (t) => {
    const blob = randomBytes(1000);
    const refused = await startNode(t, 'A', undefined, fakeUpstream(blob, { unauthorized: true }).upstream);
    assert.equal((await pull(refused.url, sha256(blob))).status, 404);
    const small = await startNode(t, 'B', undefined, fakeUpstream(blob).upstream, { maxBytes: 500 });
    assert.equal((await pull(small.url, sha256(blob))).status, 404);
  });

  it('the spool entry is removed once containerd holds the blob', async (t) => {
    const blob = randomBytes(10_000);
    const n = await startNode(t, 'A', undefined, fakeUpstream(blob).upstream);
    assert.ok((await pull(n.url, sha256(blob))).body.equals(blob));
    assert.equal(n.spool.list().length, 1);
    n.source.add(blob);
    const deadline = Date.now() + 5000;
    while (n.spool.list().length > 0 && Date.now() < deadline) await sleep(50);
    assert.equal(n.spool.list().length, 0);
  });
});
