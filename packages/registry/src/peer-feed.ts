/** Feeds a spool entry from a peer's copy (complete or still in flight), from where the entry's bytes stop. */
import type { Peer, PeerAuth } from '@ferry/interface';
import { firstHeader, hostPort } from '@ferry/oci';
import { type Dispatcher, request } from 'undici';
import { fill } from './fill.ts';
import { MIRRORED_HEADER, signedRequest } from './peer-fetch.ts';
import type { SpoolEntry } from './spool.ts';

/** Header naming the node that follows a transfer (its own claim: shown on the status page, counted in metrics). */
export const FOLLOWER_HEADER = 'x-ferry-follower';

export interface PeerFeedOptions {
  dispatcher: Dispatcher;
  /** Our peer id, sent as FOLLOWER_HEADER. */
  follower?: string;
  /** Signs the request (with a network key; peers refuse unsigned ones then). */
  peerAuth?: PeerAuth;
  /** Deadline for the response headers (the peer may wait for its own entry's size first). */
  headersTimeoutMs: number;
  /** The body may stall this long. */
  idleMs: number;
  signal: AbortSignal;
}

/**
 * GETs the blob (or manifest) from `peer`, with `Range` from `entry.written` when bytes are already
 * there, and writes the body into the entry (which verifies the digest at the last byte). Throws when
 * the answer is not signed by `peer` (with peer auth), the peer answers anything else, or its body ends
 * or stalls before the entry is complete.
 */
export async function feedFromPeer(
  entry: SpoolEntry,
  target: { registry: string; repository: string; kind: 'blobs' | 'manifests'; digest: string },
  peer: Peer,
  o: PeerFeedOptions,
): Promise<void> {
  const { registry, repository, kind, digest } = target;
  const offset = entry.written;
  const path = `/v2/${repository}/${kind}/${digest}?ns=${encodeURIComponent(registry)}`;
  const auth = signedRequest(o.peerAuth, peer, 'GET', path);
  const res = await request(`http://${hostPort(peer.host, peer.port)}${path}`, {
    method: 'GET',
    headers: {
      [MIRRORED_HEADER]: 'true',
      'user-agent': 'ferry',
      ...(o.follower === undefined ? {} : { [FOLLOWER_HEADER]: o.follower }),
      ...(offset > 0 ? { range: `bytes=${offset}-` } : {}),
      ...auth.headers,
    },
    dispatcher: o.dispatcher,
    signal: o.signal,
    headersTimeout: o.headersTimeoutMs,
    bodyTimeout: o.idleMs,
  });
  try {
    // Only the peer found may answer, as for mirror and tag answers: its signature over this request.
    if (res.statusCode < 300 && !(await auth.answered(res))) throw new Error('answer not signed by the peer');
    let size: number;
    if (res.statusCode === 206 && offset > 0) {
      const m = /^bytes (\d+)-\d+\/(\d+)$/.exec(String(res.headers['content-range'] ?? ''));
      if (!m || Number(m[1]) !== offset) throw new Error('peer answered a different range');
      size = Number(m[2]);
    } else if (res.statusCode === 200 && offset === 0) {
      size = Number(res.headers['content-length']);
    } else {
      throw new Error(`peer answered HTTP ${res.statusCode}`);
    }
    if (!Number.isSafeInteger(size) || size < 0) throw new Error('peer answered no size');
    await entry.begin(size, firstHeader(res.headers['content-type']));
    await fill(entry, res.body as AsyncIterable<Buffer>);
    if (entry.state !== 'complete') throw new Error(`peer body ended at ${entry.written} bytes`);
  } finally {
    // An unread body errors when destroyed (RequestAbortedError): that error is expected here.
    res.body.on('error', () => {});
    res.body.destroy();
  }
}
