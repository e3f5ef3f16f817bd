import { createHash, type Hash } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import { setTimeout as delay } from 'node:timers/promises';
import type { Peer, Router } from '@ferry/interface';
import {
  fingerprintMediaType,
  firstHeader,
  hostPort,
  isDigest,
  isManifestMediaType,
  manifestAcceptTypes,
  parseDigest,
} from '@ferry/oci';
import { type Dispatcher, request } from 'undici';

/** Header set on requests to peers; a request carrying it is answered from local content only. */
export const MIRRORED_HEADER = 'x-ferry-mirrored';

/** What to fetch from peers. */
export interface MirrorTarget {
  kind: 'manifests' | 'blobs';
  method: 'GET' | 'HEAD';
  registry: string;
  repository: string;
  /** Tag or digest, as requested. */
  reference: string;
  /** Set when the reference is a digest. */
  digest?: string;
  /** Router key: the digest, or the tag key. */
  key: string;
  /** The client's Range header (blobs only). */
  range?: string;
}

/** Tunables of the peer fetch engine (resolved plugin options). */
export interface MirrorSettings {
  router: Router;
  dispatcher: Dispatcher;
  resolveTimeoutMs: number;
  retries: number;
  peerTimeoutMs: number;
  metadataTimeoutMs: number;
  /** Delay before a hedged request; 'adaptive' = p90 of observed header latency. */
  hedgeDelayMs: number | 'adaptive';
  latency: LatencyTracker;
  maxManifestBytes: number;
  verifyBlobs: boolean;
  userAgent: string;
}

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

/** Keeps the last header latencies of successful peer fetches. */
export interface LatencyTracker {
  record(ms: number): void;
  /** 90th percentile of the recorded samples, or the seed when there are none. */
  p90(): number;
}

/** Creates a {@link LatencyTracker} over a ring of `capacity` samples. */
export function createLatencyTracker(seedMs = 50, capacity = 128): LatencyTracker {
  const samples: number[] = [];
  let at = 0;
  return {
    record(ms) {
      if (samples.length < capacity) samples.push(ms);
      else samples[at] = ms;
      at = (at + 1) % capacity;
    },
    p90() {
      if (samples.length === 0) return seedMs;
      const sorted = [...samples].sort((a, b) => a - b);
      return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * 0.9))] ?? seedMs;
    },
  };
}

class PeerError extends Error {
  status: number | undefined;
  contentRange: string | undefined;
  constructor(message: string, status?: number, contentRange?: string) {
    super(message);
    this.status = status;
    this.contentRange = contentRange;
  }
}

interface Span {
  start: number;
  end: number; // inclusive
  total: number;
}

interface Attempt {
  peer: Peer;
  status: 200 | 206;
  headers: IncomingHttpHeaders;
  span?: Span;
  buffer?: Buffer;
  body?: AsyncIterable<Buffer> & { destroy(err?: Error): unknown };
  latencyMs: number;
  abort(): void;
}

function peerUrl(peer: Peer, t: MirrorTarget): string {
  return `http://${hostPort(peer.host, peer.port)}/v2/${t.repository}/${t.kind}/${t.reference}?ns=${encodeURIComponent(t.registry)}`;
}

const CONTENT_RANGE = /^bytes (\d+)-(\d+)\/(\d+)$/;

function spanOf(status: number, headers: IncomingHttpHeaders): Span | undefined {
  const length = Number(firstHeader(headers['content-length']));
  if (!Number.isSafeInteger(length) || length < 0) return undefined;
  if (status === 200) return { start: 0, end: length - 1, total: length };
  const m = CONTENT_RANGE.exec(firstHeader(headers['content-range']) ?? '');
  if (m === null) return undefined;
  const span = { start: Number(m[1]), end: Number(m[2]), total: Number(m[3]) };
  if (span.end < span.start || span.end >= span.total || span.end - span.start + 1 !== length)
    return undefined;
  return span;
}

/** One request to one peer. Resolves once headers (and, for manifests, the verified body) are in. */
async function fetchPeer(
  s: MirrorSettings,
  t: MirrorTarget,
  peer: Peer,
  signal: AbortSignal,
  range: string | undefined,
): Promise<Attempt> {
  const ac = new AbortController();
  const onAbort = () => ac.abort(signal.reason);
  if (signal.aborted) throw signal.reason;
  signal.addEventListener('abort', onAbort, { once: true });
  const isBlobGet = t.kind === 'blobs' && t.method === 'GET';
  const timeoutMs = isBlobGet ? s.peerTimeoutMs : s.metadataTimeoutMs;
  const timer = setTimeout(() => ac.abort(new PeerError(`no answer within ${timeoutMs} ms`)), timeoutMs);
  const started = performance.now();
  const headers: Record<string, string> = { [MIRRORED_HEADER]: 'true', 'user-agent': s.userAgent };
  if (t.kind === 'manifests') headers.accept = manifestAcceptTypes.join(', ');
  if (range !== undefined) headers.range = range;
  const abort = () => {
    clearTimeout(timer);
    signal.removeEventListener('abort', onAbort);
    ac.abort(new PeerError('aborted'));
  };
  try {
    const res = await request(peerUrl(peer, t), {
      method: t.method,
      headers,
      dispatcher: s.dispatcher,
      signal: ac.signal,
      bodyTimeout: s.peerTimeoutMs,
    });
    const latencyMs = performance.now() - started;
    // Errors on a body nobody reads (aborted losers, discarded answers) must not become uncaught.
    res.body.on('error', () => {});
    const h = res.headers;
    if (res.statusCode !== 200 && res.statusCode !== 206) {
      res.body.destroy();
      throw new PeerError(
        `peer ${peer.id} answered ${res.statusCode}`,
        res.statusCode,
        firstHeader(h['content-range']),
      );
    }
    const status = res.statusCode as 200 | 206;
    const peerDigest = firstHeader(h['docker-content-digest']);
    if (t.digest !== undefined && peerDigest !== undefined && peerDigest !== t.digest) {
      res.body.destroy();
      throw new PeerError(`peer ${peer.id} sent digest ${peerDigest}, asked ${t.digest}`);
    }
    if (t.digest === undefined && (peerDigest === undefined || !isDigest(peerDigest))) {
      res.body.destroy();
      throw new PeerError(`peer ${peer.id} sent no valid Docker-Content-Digest for tag ${t.reference}`);
    }
    const span = spanOf(status, h);
    if (span === undefined) {
      res.body.destroy();
      throw new PeerError(`peer ${peer.id} sent inconsistent Content-Length/Content-Range`);
    }
    if (t.kind === 'manifests' && t.method === 'GET') {
      if (status !== 200 || span.total > s.maxManifestBytes) {
        res.body.destroy();
        throw new PeerError(
          `peer ${peer.id} sent an unusable manifest response (${status}, ${span.total} bytes)`,
        );
      }
      const chunks: Buffer[] = [];
      let size = 0;
      for await (const chunk of res.body as AsyncIterable<Buffer>) {
        size += chunk.length;
        if (size > span.total) throw new PeerError(`peer ${peer.id} sent more than Content-Length`);
        chunks.push(chunk);
      }
      const buffer = Buffer.concat(chunks);
      const want = t.digest ?? (peerDigest as string);
      const parsed = parseDigest(want);
      const got = `${parsed.algorithm}:${createHash(parsed.algorithm).update(buffer).digest('hex')}`;
      if (got !== parsed.digest)
        throw new PeerError(`peer ${peer.id} sent a manifest hashing to ${got}, expected ${want}`);
      clearTimeout(timer);
      signal.removeEventListener('abort', onAbort);
      return { peer, status, headers: h, span, buffer, latencyMs, abort };
    }
    clearTimeout(timer);
    if (t.method === 'HEAD') {
      signal.removeEventListener('abort', onAbort);
      res.body.dump().catch(() => {});
      return { peer, status, headers: h, span, latencyMs, abort };
    }
    // Blob GET: the body stays tied to the caller's signal until consumed.
    const body = res.body as unknown as Attempt['body'] & object;
    const release = () => signal.removeEventListener('abort', onAbort);
    res.body.once('close', release);
    return { peer, status, headers: h, span, body, latencyMs, abort };
  } catch (err) {
    abort();
    if (ac.signal.reason instanceof PeerError && !(err instanceof PeerError)) throw ac.signal.reason;
    throw err;
  }
}

function reasonOf(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}

interface RaceResult {
  winner?: Attempt;
  attempts: number;
  found: Peer[];
  resolveMs?: number;
  message: string;
  rangeRejected?: string;
}

/** Looks peers up and races/hedges fetches; resolves with the first good response. */
async function race(s: MirrorSettings, t: MirrorTarget, signal: AbortSignal): Promise<RaceResult> {
  const t0 = performance.now();
  const lookupAc = new AbortController();
  const lookupSignal = AbortSignal.any([signal, lookupAc.signal]);
  const found: Peer[] = [];
  let resolveMs: number | undefined;
  let lookupDone = false;
  let lookupError: unknown;

  let dirty = false;
  let wake: (() => void) | undefined;
  const wakeUp = () => {
    dirty = true;
    wake?.();
  };
  const sleep = async (ms: number) => {
    if (dirty) {
      dirty = false;
      return;
    }
    let timer: NodeJS.Timeout | undefined;
    await new Promise<void>((resolve) => {
      wake = resolve;
      if (Number.isFinite(ms)) timer = setTimeout(resolve, Math.max(0, ms));
    });
    wake = undefined;
    dirty = false;
    clearTimeout(timer);
  };
  const onAbort = () => wakeUp();
  signal.addEventListener('abort', onAbort, { once: true });

  void (async () => {
    try {
      for await (const peer of s.router.lookup(t.key, { signal: lookupSignal })) {
        resolveMs ??= performance.now() - t0;
        if (!found.some((p) => p.id === peer.id)) found.push(peer);
        wakeUp();
        if (found.length >= s.retries) break;
      }
    } catch (err) {
      if (!lookupSignal.aborted) lookupError = err;
    } finally {
      lookupDone = true;
      wakeUp();
    }
  })();

  const inflight = new Map<Peer, AbortController>();
  const controllers: Attempt[] = [];
  const failures: string[] = [];
  let rangeRejected: string | undefined;
  let winner: Attempt | undefined;
  let next = 0;
  let attempts = 0;
  let lastStart = 0;
  let idleSince = t0;
  let message = '';
  const hedgeDelay = () =>
    s.hedgeDelayMs === 'adaptive' ? Math.min(Math.max(s.latency.p90(), 5), s.peerTimeoutMs) : s.hedgeDelayMs;

  const start = (peer: Peer) => {
    attempts++;
    lastStart = performance.now();
    const attemptAc = new AbortController();
    const p = fetchPeer(s, t, peer, AbortSignal.any([signal, attemptAc.signal]), t.range).then(
      (a) => {
        inflight.delete(peer);
        s.latency.record(a.latencyMs);
        if (winner === undefined && !signal.aborted) winner = a;
        else a.abort();
        controllers.push(a);
        wakeUp();
      },
      (err: unknown) => {
        inflight.delete(peer);
        if (err instanceof PeerError && err.status === 416) rangeRejected = err.contentRange ?? '';
        failures.push(`${peer.id}: ${reasonOf(err)}`);
        if (inflight.size === 0) idleSince = performance.now();
        wakeUp();
      },
    );
    inflight.set(peer, attemptAc);
    void p;
  };

  try {
    while (winner === undefined && !signal.aborted) {
      const now = performance.now();
      const canStart = next < found.length && attempts < s.retries;
      const hedgeAt = lastStart + hedgeDelay();
      if (canStart && (inflight.size === 0 || now >= hedgeAt)) {
        start(found[next++] as Peer);
        continue;
      }
      let waitMs = Number.POSITIVE_INFINITY;
      if (inflight.size === 0) {
        if (attempts >= s.retries) {
          message = `all ${attempts} peer attempts failed (${failures.join('; ')})`;
          break;
        }
        if (lookupDone && next >= found.length) {
          message =
            attempts === 0
              ? `could not find a peer${lookupError === undefined ? '' : ` (lookup failed: ${reasonOf(lookupError)})`}`
              : `all ${attempts} peer attempts failed (${failures.join('; ')})`;
          break;
        }
        const idleLeft = idleSince + s.resolveTimeoutMs - now;
        if (idleLeft <= 0) {
          message =
            attempts === 0
              ? `no peer found within ${s.resolveTimeoutMs} ms`
              : `no further peer within ${s.resolveTimeoutMs} ms after ${attempts} failed attempts (${failures.join('; ')})`;
          break;
        }
        waitMs = idleLeft;
      } else if (canStart) {
        waitMs = hedgeAt - now;
      }
      await sleep(waitMs);
    }
  } finally {
    signal.removeEventListener('abort', onAbort);
    lookupAc.abort();
    // Cancel the losers still waiting for headers.
    for (const ac of inflight.values()) ac.abort(new PeerError('another peer answered first'));
  }
  if (signal.aborted) {
    for (const a of controllers) if (a !== winner) a.abort();
    winner?.abort();
    return {
      attempts,
      found,
      message: 'client went away',
      ...(resolveMs === undefined ? {} : { resolveMs }),
    };
  }
  const result: RaceResult = { attempts, found, message };
  if (winner !== undefined) result.winner = winner;
  if (resolveMs !== undefined) result.resolveMs = resolveMs;
  if (rangeRejected !== undefined) result.rangeRejected = rangeRejected;
  return result;
}

/**
 * Fetches a manifest or blob from peers. Never throws for peer trouble: a miss resolves with `ok: false`.
 * The blob stream resumes with Range requests (next peer, or the same one) when a peer breaks mid-way.
 */
export async function mirror(
  s: MirrorSettings,
  t: MirrorTarget,
  signal: AbortSignal,
  onBytes: (n: number) => void,
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
  onBytes: (n: number) => void,
): AsyncGenerator<Buffer> {
  const digest = t.digest as string;
  const wanted = span.end - span.start + 1;
  const whole = span.start === 0 && span.end === span.total - 1;
  let hash: Hash | undefined;
  if (s.verifyBlobs && whole) {
    const algorithm = parseDigest(digest).algorithm;
    hash = createHash(algorithm);
  }
  let current: Attempt = first;
  let sent = 0;
  let held: Buffer | undefined; // last chunk, held back until the digest is verified
  let resumes = 0;
  const maxResumes = Math.max(3, s.retries);
  try {
    for (;;) {
      try {
        for await (const chunk of current.body as AsyncIterable<Buffer>) {
          if (sent + chunk.length > wanted)
            throw new PeerError(`peer ${current.peer.id} sent more than asked`);
          sent += chunk.length;
          hash?.update(chunk);
          if (hash === undefined) {
            onBytes(chunk.length);
            yield chunk;
          } else {
            const out = held;
            held = chunk;
            if (out !== undefined) {
              onBytes(out.length);
              yield out;
            }
          }
        }
        if (sent === wanted) break;
        throw new PeerError(`peer ${current.peer.id} ended the body after ${sent} of ${wanted} bytes`);
      } catch (err) {
        current.abort();
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
      const got = `${parseDigest(digest).algorithm}:${hash.digest('hex')}`;
      if (got !== digest) throw new Error(`blob from peers hashes to ${got}, expected ${digest}`);
    }
    if (held !== undefined) {
      onBytes(held.length);
      yield held;
    }
  } finally {
    current.abort();
    current.body?.destroy();
  }
}

async function resume(
  s: MirrorSettings,
  t: MirrorTarget,
  last: Peer,
  peers: Peer[],
  from: number,
  to: number,
  signal: AbortSignal,
): Promise<Attempt> {
  const at = Math.max(
    0,
    peers.findIndex((p) => p.id === last.id),
  );
  const order = peers.length <= 1 ? [last] : [...peers.slice(at + 1), ...peers.slice(0, at + 1)];
  const errors: string[] = [];
  for (const peer of order) {
    if (signal.aborted) break;
    try {
      const a = await fetchPeer(s, t, peer, signal, `bytes=${from}-${to}`);
      const span = a.span as Span;
      if (a.status !== 206 || span.start !== from || span.end !== to) {
        a.abort();
        a.body?.destroy();
        throw new PeerError(`peer ${peer.id} answered the resume with the wrong range`);
      }
      return a;
    } catch (err) {
      errors.push(`${peer.id}: ${reasonOf(err)}`);
    }
  }
  // A short pause before the caller's next resume round, so a flapping single peer is not hammered.
  if (!signal.aborted) await delay(10, undefined, { signal }).catch(() => {});
  throw new PeerError(`resume at byte ${from} failed (${errors.join('; ')})`);
}
