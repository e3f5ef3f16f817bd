/**
 * The request history behind the status page: the last N registry requests (with the time each ended),
 * outcome counts since start, the last request served from a peer, and listeners (the measure action
 * uses them to learn where each of its requests was served from).
 */
import type { RegistryRequestEvent, RequestOutcome } from '@ferry/registry';

/** A registry request as the status page shows it: the registry's event plus when it ended. */
export interface StatusRequest extends RegistryRequestEvent {
  /** When the response ended (ISO 8601). */
  at: string;
  /** Who asked, when it was not the local containerd or a peer: 'measure' (the /debug/measure action). */
  by?: 'measure';
}

/** Outcome counts of the local containerd's requests (peers' requests are counted under `served`). */
export type OutcomeCounts = Record<RequestOutcome, number>;

/** What the mirror did since the agent started. */
export interface MirrorSummary {
  /** Requests of the local containerd by outcome (a measurement's own requests are left out). */
  counts: OutcomeCounts;
  /** (local + peer) / (local + peer + miss) over the local containerd's requests; null before any. */
  hitRatio: number | null;
  /** Body bytes the local containerd got from peers through the mirror. */
  bytesFromPeers: number;
  /** Requests of other nodes answered from this node's content. */
  served: { requests: number; bytes: number };
  /** The last request of the local containerd served from a peer. */
  lastSuccess?: { at: string; key?: string; peer?: string; bytes: number; durationMs: number };
}

/** Options of createRequestHistory. */
export interface RequestHistoryOptions {
  /** How many recent requests to keep. Default 50. */
  limit?: number;
  /** Clock (tests). Default Date.now. */
  now?: () => number;
}

/** Records registry request events for the status page. */
export interface RequestHistory {
  /** Records one event (call it from the registry's observer). */
  record(event: RegistryRequestEvent): void;
  /** The last requests, oldest first. */
  recent(): StatusRequest[];
  /** Counts, hit ratio and the last success since start. */
  summary(): MirrorSummary;
  /** Calls `listener` for every later event (it may set `by` on it); returns the unsubscribe function. */
  subscribe(listener: (request: StatusRequest) => void): () => void;
}

/** Creates an empty request history. */
export function createRequestHistory(opts: RequestHistoryOptions = {}): RequestHistory {
  const limit = Math.max(1, opts.limit ?? 50);
  const now = opts.now ?? Date.now;
  const recent: StatusRequest[] = [];
  const listeners = new Set<(request: StatusRequest) => void>();
  const counts: OutcomeCounts = { local: 0, peer: 0, 'pull-through': 0, miss: 0, filtered: 0, invalid: 0 };
  let bytesFromPeers = 0;
  const served = { requests: 0, bytes: 0 };
  let lastSuccess: MirrorSummary['lastSuccess'];

  return {
    record(event) {
      const request: StatusRequest = { ...event, at: new Date(now()).toISOString() };
      recent.push(request);
      if (recent.length > limit) recent.shift();
      // Listeners first: a measurement claims its own requests, which stay out of the counts.
      for (const listener of listeners) {
        try {
          listener(request);
        } catch {
          // A listener's failure is its own; the registry's observer must not throw.
        }
      }
      if (request.by === 'measure') return;
      if (event.mirrored) {
        served.requests += 1;
        served.bytes += event.bytes;
        return;
      }
      counts[event.outcome] += 1;
      if (event.outcome !== 'peer') return;
      bytesFromPeers += event.bytes;
      if (!event.aborted) {
        lastSuccess = {
          at: request.at,
          bytes: event.bytes,
          durationMs: event.durationMs,
          ...(event.key === undefined ? {} : { key: event.key }),
          ...(event.peer === undefined ? {} : { peer: event.peer }),
        };
      }
    },
    recent: () => recent.map((r) => ({ ...r })),
    summary() {
      const answered = counts.local + counts.peer + counts.miss;
      return {
        counts: { ...counts },
        hitRatio: answered === 0 ? null : (counts.local + counts.peer) / answered,
        bytesFromPeers,
        served: { ...served },
        ...(lastSuccess ? { lastSuccess: { ...lastSuccess } } : {}),
      };
    },
    subscribe(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
  };
}
