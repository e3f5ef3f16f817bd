import type { Peer } from '@ferry/interface';
import { firstHeader, hostPort, isDigest, isManifestMediaType, manifestAcceptTypes } from '@ferry/oci';
import { request } from 'undici';
import { MIRRORED_HEADER, type MirrorSettings } from './mirror.ts';
import { RESOLVED_AT_HEADER, signedRequest } from './peer-fetch.ts';

export { RESOLVED_AT_HEADER };

/** One peer's answer to "which digest is this tag". */
export interface PeerTagAnswer {
  peer: Peer;
  digest: string;
  resolvedAt: number;
  mediaType?: string;
  size?: number;
}

/** What to ask and how long to wait. */
export interface PeerTagQuery {
  registry: string;
  repository: string;
  tag: string;
  /** The tag key '<registry>/<repo>:<tag>' peers advertise. */
  key: string;
  /** Deadline of the lookup and the questions once an answer is in (or nothing is pending). */
  timeoutMs: number;
  /**
   * With no answer in at `timeoutMs` while the lookup or a question is still pending, how much longer
   * to wait for the first answer (default 0). A loaded holder answers late, not never; the whole wait
   * stays bounded by `timeoutMs + graceMs`.
   */
  graceMs?: number;
  /** Stop at this many answers; at most four times as many peers are asked (some may hold nothing). */
  maxPeers: number;
}

async function headPeer(
  s: MirrorSettings,
  q: PeerTagQuery,
  peer: Peer,
  signal: AbortSignal,
): Promise<PeerTagAnswer | undefined> {
  const path = `/v2/${q.repository}/manifests/${q.tag}?ns=${encodeURIComponent(q.registry)}`;
  const url = `http://${hostPort(peer.host, peer.port)}${path}`;
  const auth = signedRequest(s.auth, peer, 'HEAD', path);
  const res = await request(url, {
    method: 'HEAD',
    headers: {
      [MIRRORED_HEADER]: 'true',
      'user-agent': s.userAgent,
      accept: manifestAcceptTypes.join(', '),
      ...auth.headers,
    },
    dispatcher: s.dispatcher,
    signal,
  });
  res.body.on('error', () => {});
  await res.body.dump().catch(() => {});
  if (res.statusCode !== 200) return undefined;
  const digest = firstHeader(res.headers['docker-content-digest']);
  if (digest === undefined || !isDigest(digest)) return undefined;
  // The resolution time is under the signature too: a changed header makes the answer worthless.
  if (!(await auth.answered(res))) return undefined;
  const at = Number(firstHeader(res.headers[RESOLVED_AT_HEADER]) ?? '0');
  const answer: PeerTagAnswer = { peer, digest, resolvedAt: Number.isSafeInteger(at) && at > 0 ? at : 0 };
  const mediaType = firstHeader(res.headers['content-type']);
  if (mediaType !== undefined && isManifestMediaType(mediaType)) answer.mediaType = mediaType;
  const size = Number(firstHeader(res.headers['content-length']));
  if (Number.isSafeInteger(size) && size > 0) answer.size = size;
  return answer;
}

/**
 * Finds peers advertising a tag key and asks each (HEAD, `X-Ferry-Mirrored`) which digest the tag names
 * and when that was resolved. Stops at `maxPeers` answers, when the lookup has ended and every question
 * is answered, at the deadline once an answer is in (this path runs only when the upstream cannot
 * answer, so without one it waits for a first answer up to `graceMs` longer while something is
 * pending), or, once an answer is in, when the router has yielded nothing new for
 * `s.resolveTimeoutMs` while no question is in flight. Never throws.
 */
export async function askPeersForTag(
  s: MirrorSettings,
  q: PeerTagQuery,
  signal: AbortSignal,
): Promise<PeerTagAnswer[]> {
  const done = new AbortController();
  const soft = AbortSignal.timeout(Math.max(1, q.timeoutMs));
  const hard = AbortSignal.timeout(Math.max(1, q.timeoutMs + Math.max(0, q.graceMs ?? 0)));
  const all = AbortSignal.any([signal, done.signal, hard]);
  const answers: PeerTagAnswer[] = [];
  const asked = new Set<string>();
  // Peers that advertise the key but answer nothing (Sybils, departed content) must not use up the questions.
  const maxAsked = q.maxPeers * 4;
  let inflight = 0;
  let lookupDone = false;
  let wake: (() => void) | undefined;
  const poke = () => wake?.();
  all.addEventListener('abort', poke, { once: true });
  soft.addEventListener('abort', poke, { once: true });
  let lastEvent = performance.now();

  void (async () => {
    try {
      for await (const peer of s.router.lookup(q.key, { signal: all })) {
        if (asked.has(peer.id)) continue;
        asked.add(peer.id);
        inflight++;
        lastEvent = performance.now();
        headPeer(s, q, peer, all)
          .then(
            (a) => {
              if (a !== undefined) answers.push(a);
            },
            () => {},
          )
          .finally(() => {
            inflight--;
            lastEvent = performance.now();
            poke();
          });
        if (asked.size >= maxAsked) break;
      }
    } catch {
      // lookup failures only mean fewer answers
    } finally {
      lookupDone = true;
      poke();
    }
  })();

  try {
    while (!all.aborted) {
      if (answers.length >= q.maxPeers) break;
      // Past the deadline: go with the answers in; with none, only the grace is left for the first.
      if (soft.aborted && answers.length > 0) break;
      if (inflight === 0 && (lookupDone || asked.size >= maxAsked)) break;
      let waitMs = Number.POSITIVE_INFINITY;
      if (inflight === 0 && answers.length > 0) {
        // One answer is in: give the router a short window for more, then go with what we have.
        waitMs = lastEvent + s.resolveTimeoutMs - performance.now();
        if (waitMs <= 0) break;
      }
      await new Promise<void>((resolve) => {
        const timer = Number.isFinite(waitMs) ? setTimeout(resolve, waitMs) : undefined;
        wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      wake = undefined;
    }
  } finally {
    all.removeEventListener('abort', poke);
    soft.removeEventListener('abort', poke);
    done.abort();
  }
  return [...answers];
}
