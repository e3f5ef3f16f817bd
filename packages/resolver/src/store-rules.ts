/**
 * The rules every last-known store applies (see LastKnownStore): peer data is evidence, an upstream
 * answer is the truth this node saw itself.
 */
import { isDigest } from '@ferry/oci';
import type { Resolution } from './types.ts';

/** How far in the future a peer's resolution time may lie (clock skew between nodes). */
export const MAX_PEER_CLOCK_SKEW_MS = 60_000;

/** Default bound on the number of records. */
export const DEFAULT_MAX_ENTRIES = 10_000;

/** Throws TypeError unless `r` is a well-formed resolution from the upstream or a peer. */
export function checkResolution(r: Resolution): void {
  if (!r || typeof r.registry !== 'string' || typeof r.repository !== 'string' || typeof r.tag !== 'string') {
    throw new TypeError('Resolution needs registry, repository and tag strings');
  }
  if (typeof r.digest !== 'string' || !isDigest(r.digest))
    throw new TypeError(`bad digest ${String(r.digest)}`);
  if (typeof r.resolvedAt !== 'number' || !Number.isFinite(r.resolvedAt)) {
    throw new TypeError('Resolution.resolvedAt must be a finite number (ms since epoch)');
  }
  if (r.source !== 'upstream' && r.source !== 'peer')
    throw new TypeError(`a last-known store records upstream and peer answers, not ${String(r.source)}`);
}

/** Whether `next` may be recorded over `old` at time `now`. */
export function mayRecord(old: Resolution | undefined, next: Resolution, now: number): boolean {
  if (next.source === 'upstream') {
    // Never refused: it replaces any peer record, an older upstream one, and one dated in the future.
    return (
      old === undefined ||
      old.source !== 'upstream' ||
      next.resolvedAt >= old.resolvedAt ||
      old.resolvedAt > now
    );
  }
  if (!(next.resolvedAt > 0) || next.resolvedAt > now + MAX_PEER_CLOCK_SKEW_MS) return false;
  if (old === undefined) return true;
  if (old.source === 'upstream') return false;
  return next.resolvedAt > old.resolvedAt;
}

/** Whether a stored record is still served: a peer-learned one ends when its upstream answered again. */
export function isCurrent(r: Resolution, upstreamAnsweredAt: number | undefined): boolean {
  if (r.source !== 'peer') return true;
  return upstreamAnsweredAt === undefined || (r.learnedAt ?? 0) > upstreamAnsweredAt;
}
