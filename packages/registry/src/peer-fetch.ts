import { createHash } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import type { Peer, PeerAuth, PeerResponseProof, Router } from '@ferry/interface';
import { firstHeader, hostPort, isDigest, manifestAcceptTypes, parseDigest } from '@ferry/oci';
import { type Dispatcher, request } from 'undici';
import type { HashWorker } from './hasher.ts';
import type { PeerBook } from './peer-book.ts';

/** Header set on requests to peers; a request carrying it is answered from local content only. */
export const MIRRORED_HEADER = 'x-ferry-mirrored';

/** Response header of a peer's answer to a mirrored tag request: when its digest was resolved (ms epoch; 0 = unknown). */
export const RESOLVED_AT_HEADER = 'x-ferry-resolved-at';

/**
 * What a peer's answer is signed over, read from its headers: the answering node builds it from the
 * headers it sends, the asking node from the headers it got (`PeerAuth.signResponse`/`verifyResponse`).
 */
export function answerProof(
  nonce: string,
  status: number,
  headers: Record<string, unknown>,
): PeerResponseProof {
  const text = (name: string) => {
    const v = headers[name];
    return typeof v === 'string' ? v : typeof v === 'number' ? String(v) : undefined;
  };
  const resolvedAt = text(RESOLVED_AT_HEADER);
  return {
    nonce,
    status,
    digest: text('docker-content-digest') ?? '',
    length: text('content-length') ?? '',
    ...(resolvedAt === undefined ? {} : { resolvedAt }),
  };
}

/**
 * Signs a request to `peer` (with a network key) and gives the check of its answer: true only when the
 * answer is signed by that peer over this request (always true without peer auth). Every answer a node
 * takes from a peer goes through it: mirror and tag answers, and a follower's copy of a blob in flight.
 */
export function signedRequest(auth: PeerAuth | undefined, peer: Peer, method: string, pathAndQuery: string) {
  const signed = auth?.signRequest({ method, pathAndQuery });
  return {
    headers: signed?.headers ?? {},
    answered: async (res: { statusCode: number; headers: Record<string, string | string[] | undefined> }) =>
      auth === undefined ||
      signed === undefined ||
      auth.verifyResponse(peer.id, answerProof(signed.nonce, res.statusCode, res.headers), res.headers),
  };
}

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
  /** Deadline for the headers (a whole manifest, a HEAD) of the one peer left to ask. */
  lastPeerTimeoutMs: number;
  /** Delay before a hedged request; 'adaptive' = p90 of observed header latency. */
  hedgeDelayMs: number | 'adaptive';
  latency: LatencyTracker;
  maxManifestBytes: number;
  /** Failed peers, quarantined (peer, digest) pairs and true blob sizes (bounded). */
  book: PeerBook;
  /** Hashes relayed blobs off the main thread (verification of a whole blob). */
  hashing: HashWorker;
  /** Try the peers found in random order (false: in the router's order). */
  randomOrder: boolean;
  /** Sign requests to peers and check their answers (with a network key). */
  auth?: PeerAuth;
  userAgent: string;
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

export class PeerError extends Error {
  status: number | undefined;
  contentRange: string | undefined;
  constructor(message: string, status?: number, contentRange?: string) {
    super(message);
    this.status = status;
    this.contentRange = contentRange;
  }
}

export interface Span {
  start: number;
  end: number; // inclusive
  total: number;
}

export interface Attempt {
  peer: Peer;
  status: 200 | 206;
  headers: IncomingHttpHeaders;
  span?: Span;
  buffer?: Buffer;
  body?: AsyncIterable<Buffer> & { destroy(err?: Error): unknown };
  latencyMs: number;
  abort(): void;
}

export function peerUrl(peer: Peer, t: MirrorTarget): string {
  return `http://${hostPort(peer.host, peer.port)}/v2/${t.repository}/${t.kind}/${t.reference}?ns=${encodeURIComponent(t.registry)}`;
}

const CONTENT_RANGE = /^bytes (\d+)-(\d+)\/(\d+)$/;

export function spanOf(status: number, headers: IncomingHttpHeaders): Span | undefined {
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
export async function fetchPeer(
  s: MirrorSettings,
  t: MirrorTarget,
  peer: Peer,
  signal: AbortSignal,
  range: string | undefined,
  opts: { lastPeer?: () => boolean } = {},
): Promise<Attempt> {
  const ac = new AbortController();
  const onAbort = () => ac.abort(signal.reason);
  if (signal.aborted) throw signal.reason;
  signal.addEventListener('abort', onAbort, { once: true });
  const isBlobGet = t.kind === 'blobs' && t.method === 'GET';
  const timeoutMs = isBlobGet ? s.peerTimeoutMs : s.metadataTimeoutMs;
  // Headers (and a whole manifest) within the deadline; a blob body then has undici's bodyTimeout.
  // The one peer left to ask (`lastPeer`: no other to fail over to) gets `lastPeerTimeoutMs` instead:
  // on a loaded node the only holder answers late, and giving up is a 404, which fails the pull
  // while the upstream is down (a holder that froze is found dead by liveness meanwhile).
  const deadline = AbortSignal.timeout(timeoutMs);
  let extended: AbortSignal | undefined;
  const giveUp = (ms: number) => ac.abort(new PeerError(`no answer within ${ms} ms`));
  const onExtended = () => giveUp(s.lastPeerTimeoutMs);
  const onDeadline = () => {
    if (timeoutMs < s.lastPeerTimeoutMs && opts.lastPeer?.() === true) {
      extended = AbortSignal.timeout(s.lastPeerTimeoutMs - timeoutMs);
      extended.addEventListener('abort', onExtended, { once: true });
    } else giveUp(timeoutMs);
  };
  deadline.addEventListener('abort', onDeadline, { once: true });
  const clearDeadline = () => {
    deadline.removeEventListener('abort', onDeadline);
    extended?.removeEventListener('abort', onExtended);
  };
  const started = performance.now();
  const headers: Record<string, string> = { [MIRRORED_HEADER]: 'true', 'user-agent': s.userAgent };
  if (t.kind === 'manifests') headers.accept = manifestAcceptTypes.join(', ');
  if (range !== undefined) headers.range = range;
  const url = peerUrl(peer, t);
  const auth = signedRequest(s.auth, peer, t.method, url.slice(url.indexOf('/v2/')));
  Object.assign(headers, auth.headers);
  const abort = () => {
    clearDeadline();
    signal.removeEventListener('abort', onAbort);
    ac.abort(new PeerError('aborted'));
  };
  try {
    const res = await request(url, {
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
    if (!(await auth.answered(res))) {
      res.body.destroy();
      throw new PeerError(`the answer at ${peer.host}:${peer.port} is not signed by peer ${peer.id}`);
    }
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
    const size = t.digest === undefined ? undefined : s.book.sizeOf(t.digest);
    if (t.kind === 'blobs' && size !== undefined && span.total !== size) {
      // The manifest that named the blob says how big it is: a peer claiming otherwise lies.
      res.body.destroy();
      s.book.quarantine(t.digest as string, peer.id);
      throw new PeerError(`peer ${peer.id} claims ${span.total} bytes, the manifest says ${size}`);
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
      clearDeadline();
      signal.removeEventListener('abort', onAbort);
      return { peer, status, headers: h, span, buffer, latencyMs, abort };
    }
    clearDeadline();
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
    const reason: unknown = ac.signal.aborted ? ac.signal.reason : undefined;
    abort();
    if (reason instanceof PeerError && !(err instanceof PeerError)) throw reason;
    throw err;
  }
}

export function reasonOf(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}
