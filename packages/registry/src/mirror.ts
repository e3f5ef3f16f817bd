import { setTimeout as delay } from 'node:timers/promises';
import type { Peer } from '@ferry/interface';
import { fingerprintMediaType, firstHeader, isManifestMediaType, parseDigest } from '@ferry/oci';
import {
  type Attempt,
  fetchPeer,
  type MirrorSettings,
  type MirrorTarget,
  PeerError,
  reasonOf,
  type Span,
} from './peer-fetch.ts';
import { PeerIterator } from './peers.ts';

export {
  createLatencyTracker,
  type LatencyTracker,
  MIRRORED_HEADER,
  type MirrorSettings,
  type MirrorTarget,
} from './peer-fetch.ts';

/** A successful mirror: headers to send and the body (buffer for manifests, stream for blob GETs). */
export interface MirrorHit {
  ok: true;
  peer: Peer;
  status: 200 | 206;
  headers: Record<string, string>;
  /** Manifest GET: the verified bytes. */
  buffer?: Buffer;
  /** Blob GET: the body, resumed across peers on failure. */
  stream?: AsyncGenerator<Buffer>;
  attempts: number;
  resolveMs?: number;
}

/** Nothing could be mirrored. */
export interface MirrorMiss {
  ok: false;
  /** 404, or 416 when a peer said the range is not satisfiable. */
  status: 404 | 416;
  message: string;
  attempts: number;
  resolveMs?: number;
  contentRange?: string;
}

interface RaceResult {
  winner?: Attempt;
  attempts: number;
  found: Peer[];
  resolveMs?: number;
  message: string;
  rangeRejected?: string;
}

type Settled = { peer: Peer; attempt: Attempt } | { peer: Peer; error: unknown };

/** The first of the fetches in flight to settle, or undefined once `until` aborts. */
function firstSettled(inflight: Map<Peer, { settled: Promise<Settled> }>, until: AbortSignal) {
  const deadline = new Promise<undefined>((resolve) => {
    if (until.aborted) resolve(undefined);
    else until.addEventListener('abort', () => resolve(undefined), { once: true });
  });
  return Promise.race([...[...inflight.values()].map((f) => f.settled), deadline]);
}

/**
 * Looks peers up and races/hedges fetches; resolves with the first good response. While nothing is in
 * flight the next peer gets `resolveTimeoutMs`; while a fetch is in flight and has not answered within the
 * hedge delay, the next peer starts too.
 */
async function race(s: MirrorSettings, t: MirrorTarget, signal: AbortSignal): Promise<RaceResult> {
  // More candidates than attempts, so a few peers (with low ids, or none of the content) cannot take them all.
  const peers = new PeerIterator(s.router, t.key, s.retries * 4, signal, {
    skip: (p) => t.digest !== undefined && s.book.isQuarantined(t.digest, p.id),
    last: (p) => s.book.recentlyFailed(p.id),
    random: s.randomOrder,
  });
  const inflight = new Map<Peer, { settled: Promise<Settled>; ac: AbortController }>();
  const failures: string[] = [];
  let attempts = 0;
  /** Peers that answered 404 at once: they do not hold it, which costs no attempt. */
  let notHeld = 0;
  const budgetLeft = () => attempts - notHeld < s.retries;
  let winner: Attempt | undefined;
  let rangeRejected: string | undefined;
  let message = '';
  const hedgeDelay = () =>
    // Whole milliseconds: AbortSignal.timeout throws on a fraction, and observed latencies have them.
    Math.ceil(
      s.hedgeDelayMs === 'adaptive'
        ? Math.min(Math.max(s.latency.p90(), 5), s.peerTimeoutMs)
        : s.hedgeDelayMs,
    );
  const failed = () => `all ${attempts} peer attempts failed (${failures.join('; ')})`;

  const start = (peer: Peer) => {
    attempts++;
    const ac = new AbortController();
    // Nothing else to fail over to: the lookup is over and no other fetch is in flight.
    const lastPeer = () => peers.exhausted && inflight.size === 1;
    const settled = fetchPeer(s, t, peer, AbortSignal.any([signal, ac.signal]), t.range, { lastPeer }).then(
      (attempt): Settled => ({ peer, attempt }),
      (error: unknown): Settled => ({ peer, error }),
    );
    inflight.set(peer, { settled, ac });
  };
  const settle = (r: Settled) => {
    inflight.delete(r.peer);
    if ('attempt' in r) {
      s.latency.record(r.attempt.latencyMs);
      if (signal.aborted) r.attempt.abort();
      else winner = r.attempt;
      return;
    }
    if (r.error instanceof PeerError && r.error.status === 416) rangeRejected = r.error.contentRange ?? '';
    if (r.error instanceof PeerError && r.error.status === 404) notHeld++;
    else s.book.failed(r.peer.id);
    failures.push(`${r.peer.id}: ${reasonOf(r.error)}`);
  };

  try {
    while (winner === undefined && !signal.aborted) {
      // 1. Nothing in flight: the next peer within resolveTimeoutMs, or give up.
      if (inflight.size === 0) {
        if (!budgetLeft()) {
          message = failed();
          break;
        }
        const peer = await peers.next(AbortSignal.any([signal, AbortSignal.timeout(s.resolveTimeoutMs)]));
        if (peer !== undefined) {
          start(peer);
          continue;
        }
        if (!peers.exhausted)
          message =
            attempts === 0
              ? `no peer found within ${s.resolveTimeoutMs} ms`
              : `no further peer within ${s.resolveTimeoutMs} ms after ${failed()}`;
        else if (attempts > 0) message = failed();
        else
          message = `could not find a peer${peers.error === undefined ? '' : ` (lookup failed: ${reasonOf(peers.error)})`}`;
        break;
      }
      // 2. A fetch in flight: its answer, or, past the hedge delay, the next peer as well.
      const delayMs = hedgeDelay();
      const canHedge = budgetLeft() && !peers.exhausted && Number.isFinite(delayMs);
      const hedge = canHedge ? AbortSignal.any([signal, AbortSignal.timeout(Math.max(0, delayMs))]) : signal;
      const settled = await firstSettled(inflight, hedge);
      if (settled !== undefined) {
        settle(settled);
        continue;
      }
      if (signal.aborted || !canHedge) continue;
      const answered = new AbortController();
      void firstSettled(inflight, answered.signal).then(() => answered.abort());
      const peer = await peers.next(AbortSignal.any([signal, answered.signal]));
      answered.abort();
      if (peer !== undefined) start(peer);
    }
  } finally {
    peers.close();
    // Cancel the losers; one that answers anyway is released.
    for (const f of inflight.values()) {
      f.ac.abort(new PeerError('another peer answered first'));
      void f.settled.then((r) => ('attempt' in r ? r.attempt.abort() : undefined));
    }
  }
  const base = {
    attempts,
    found: peers.found,
    ...(peers.resolveMs === undefined ? {} : { resolveMs: peers.resolveMs }),
  };
  if (signal.aborted) {
    winner?.abort();
    return { ...base, message: 'client went away' };
  }
  return {
    ...base,
    message,
    ...(winner === undefined ? {} : { winner }),
    ...(rangeRejected === undefined ? {} : { rangeRejected }),
  };
}

/** Body bytes relayed to the client, and the peer that served them. */
export type OnPeerBytes = (n: number, peerId: string) => void;

/**
 * Fetches a manifest or blob from peers. Never throws for peer trouble: a miss resolves with `ok: false`.
 * The blob stream resumes with Range requests (next peer, or the same one) when a peer breaks mid-way.
 */
export async function mirror(
  s: MirrorSettings,
  t: MirrorTarget,
  signal: AbortSignal,
  onBytes: OnPeerBytes,
): Promise<MirrorHit | MirrorMiss> {
  const r = await race(s, t, signal);
  const base = r.resolveMs === undefined ? {} : { resolveMs: r.resolveMs };
  const w = r.winner;
  if (w === undefined) {
    if (r.rangeRejected !== undefined)
      return {
        ok: false,
        status: 416,
        message: 'range not satisfiable',
        attempts: r.attempts,
        contentRange: r.rangeRejected,
        ...base,
      };
    return { ok: false, status: 404, message: r.message, attempts: r.attempts, ...base };
  }
  const span = w.span as Span;
  const digest = t.digest ?? (firstHeader(w.headers['docker-content-digest']) as string);
  const headers: Record<string, string> = {
    'docker-content-digest': digest,
    etag: `"${digest}"`,
  };
  let contentType = firstHeader(w.headers['content-type']);
  if (t.kind === 'manifests') {
    if (contentType === undefined || !isManifestMediaType(contentType)) {
      const fp = w.buffer === undefined ? undefined : fingerprintMediaType(w.buffer);
      contentType = fp ?? contentType ?? 'application/octet-stream';
    }
    headers['content-type'] = contentType;
    headers['content-length'] = String(span.total);
    const hit: MirrorHit = { ok: true, peer: w.peer, status: 200, headers, attempts: r.attempts, ...base };
    if (w.buffer !== undefined) hit.buffer = w.buffer;
    return hit;
  }
  headers['content-type'] = contentType ?? 'application/octet-stream';
  headers['accept-ranges'] = 'bytes';
  headers['content-length'] = String(span.end - span.start + 1);
  if (w.status === 206) headers['content-range'] = `bytes ${span.start}-${span.end}/${span.total}`;
  const hit: MirrorHit = { ok: true, peer: w.peer, status: w.status, headers, attempts: r.attempts, ...base };
  if (t.method === 'GET') hit.stream = blobStream(s, t, w, span, r.found, signal, onBytes);
  return hit;
}

/** Streams a blob body; on a mid-stream failure, continues with `Range: bytes=<start+sent>-<end>`. */
async function* blobStream(
  s: MirrorSettings,
  t: MirrorTarget,
  first: Attempt,
  span: Span,
  peers: Peer[],
  signal: AbortSignal,
  onBytes: OnPeerBytes,
): AsyncGenerator<Buffer> {
  const digest = t.digest as string;
  const wanted = span.end - span.start + 1;
  const whole = span.start === 0 && span.end === span.total - 1;
  // A whole blob is verified: hashed as it streams (in the hash worker, while this thread forwards the
  // bytes), its last chunk held back until the digest of every byte matches.
  const algorithm = parseDigest(digest).algorithm;
  const hash = whole ? s.hashing.hasher(algorithm) : undefined;
  const contributors = new Set<string>();
  let current: Attempt = first;
  let sent = 0;
  let held: Buffer | undefined; // last chunk, held back until the digest is verified
  let resumes = 0;
  const maxResumes = Math.max(3, s.retries);
  try {
    for (;;) {
      try {
        for await (const chunk of current.body as AsyncIterable<Buffer>) {
          if (sent + chunk.length > wanted) {
            s.book.quarantine(digest, current.peer.id);
            throw new PeerError(`peer ${current.peer.id} sent more than asked`);
          }
          sent += chunk.length;
          contributors.add(current.peer.id);
          if (hash !== undefined) await hash.update(chunk);
          const out = hash === undefined ? chunk : held;
          if (hash !== undefined) held = chunk;
          if (out !== undefined) {
            onBytes(out.length, current.peer.id);
            yield out;
          }
        }
        if (sent === wanted) break;
        throw new PeerError(`peer ${current.peer.id} ended the body after ${sent} of ${wanted} bytes`);
      } catch (err) {
        current.abort();
        s.book.failed(current.peer.id);
        let lastErr: unknown = err;
        let next: Attempt | undefined;
        while (next === undefined) {
          if (signal.aborted || resumes >= maxResumes) throw lastErr;
          resumes++;
          try {
            next = await resume(s, t, current.peer, peers, span.start + sent, span.end, signal);
          } catch (resumeErr) {
            lastErr = resumeErr;
          }
        }
        current = next;
      }
    }
    if (hash !== undefined) {
      const got = `${algorithm}:${await hash.digest()}`;
      if (got !== digest) {
        // The response breaks (containerd never commits it); whoever served bytes is not asked again.
        for (const id of contributors) s.book.quarantine(digest, id);
        throw new Error(
          `blob from peers [${[...contributors].join(', ')}] hashes to ${got}, expected ${digest}`,
        );
      }
    }
    for (const id of contributors) s.book.served(id);
    if (held !== undefined) {
      onBytes(held.length, current.peer.id);
      yield held;
    }
  } finally {
    hash?.drop();
    current.abort();
    current.body?.destroy();
  }
}

/**
 * The rest of a broken blob, `bytes=<from>-<to>`: from the peers the race found (the next one after
 * `last` first), then from peers a fresh lookup finds, and only then from peers that failed lately (`last`
 * among them). The race stops its lookup at the first answer, so it may not have found every holder; those
 * found now are added to `peers` for the next resume.
 */
async function resume(
  s: MirrorSettings,
  t: MirrorTarget,
  last: Peer,
  peers: Peer[],
  from: number,
  to: number,
  signal: AbortSignal,
): Promise<Attempt> {
  const digest = t.digest as string;
  const errors: string[] = [];
  const attempt = async (peer: Peer): Promise<Attempt | undefined> => {
    try {
      const a = await fetchPeer(s, t, peer, signal, `bytes=${from}-${to}`);
      const span = a.span as Span;
      if (a.status === 206 && span.start === from && span.end === to) return a;
      a.abort();
      a.body?.destroy();
      throw new PeerError(`peer ${peer.id} answered the resume with the wrong range`);
    } catch (err) {
      errors.push(`${peer.id}: ${reasonOf(err)}`);
      return undefined;
    }
  };
  const at = Math.max(
    0,
    peers.findIndex((p) => p.id === last.id),
  );
  const rotated = peers.length <= 1 ? [last] : [...peers.slice(at + 1), ...peers.slice(0, at + 1)];
  const usable = rotated.filter((p) => !s.book.isQuarantined(digest, p.id));
  async function* candidates(): AsyncGenerator<Peer> {
    yield* usable.filter((p) => !s.book.recentlyFailed(p.id));
    const more = new PeerIterator(s.router, t.key, s.retries * 4, signal, {
      skip: (p) => peers.some((q) => q.id === p.id) || s.book.isQuarantined(digest, p.id),
      random: s.randomOrder,
    });
    try {
      for (;;) {
        const peer = await more.next(AbortSignal.any([signal, AbortSignal.timeout(s.resolveTimeoutMs)]));
        if (peer === undefined) break;
        peers.push(peer);
        yield peer;
      }
    } finally {
      more.close();
    }
    // Peers that failed lately (the one that just broke among them) only when no other answered.
    yield* usable.filter((p) => s.book.recentlyFailed(p.id));
  }
  for await (const peer of candidates()) {
    if (signal.aborted) break;
    const a = await attempt(peer);
    if (a !== undefined) return a;
  }
  // A short pause before the caller's next resume round, so a flapping single peer is not hammered.
  if (!signal.aborted) await delay(10, undefined, { signal }).catch(() => {});
  throw new PeerError(`resume at byte ${from} failed (${errors.join('; ')})`);
}
