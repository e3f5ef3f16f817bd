import type { FastifyReply, FastifyRequest } from 'fastify';
import type { TagEvent } from './tag-resolver.ts';

/** How a registry request ended. */
export type RequestOutcome = 'local' | 'peer' | 'pull-through' | 'miss' | 'filtered' | 'invalid';

/** One event per content request (manifests/blobs), fired when the response ends or the client goes away. */
export interface RegistryRequestEvent {
  method: 'GET' | 'HEAD';
  /** Absent when the path did not parse. */
  kind?: 'manifests' | 'blobs';
  registry?: string;
  repository?: string;
  /** Router key: the digest, or the tag key '<registry>/<repo>:<tag>'. */
  key?: string;
  /** The request came from an authenticated peer (answered from local content only). */
  mirrored: boolean;
  outcome: RequestOutcome;
  /** Id of the peer that served it (outcome 'peer'); after a resume, the first of `peers`. */
  peer?: string;
  /** Every peer that served bytes of the body, with how many (outcome 'peer'; more than one after a resume). */
  peers?: { id: string; bytes: number }[];
  /** Peer fetches started (mirror path only). */
  attempts?: number;
  /** Body bytes written to the client. */
  bytes: number;
  /** HTTP status sent; 499 when the client went away before any headers. */
  status: number;
  durationMs: number;
  /** Time until the router yielded the first peer (mirror path, when one came). */
  resolveMs?: number;
  /** The response did not complete: the client went away, or the body failed mid-way. */
  aborted: boolean;
  /** Why it was a miss / invalid / failed mid-stream. */
  error?: string;
  /** Tag requests of the local containerd when tag modes are on (`tags` option). */
  tag?: TagEvent;
}

/** Receives registry events (the agent maps them to metrics and logs). */
export interface RegistryObserver {
  onRequest?(event: RegistryRequestEvent): void;
  /** A peer sent bytes that are not `digest` (or more than it has): it is not asked for it again soon. */
  onQuarantine?(event: { digest: string; peer: string }): void;
}

/** What a request gathered for its event; `handle` fills it as its steps finish. */
export type RequestTrace = Omit<RegistryRequestEvent, 'status' | 'durationMs' | 'aborted'> & {
  /** Aborted when the client goes away; every step of the request runs under it. */
  signal: AbortSignal;
};

interface TraceState {
  trace: RequestTrace;
  started: number;
  ac: AbortController;
  emitted: boolean;
}

const traces = new WeakMap<FastifyRequest, TraceState>();

/** The trace of a request that {@link recordRequests} started. */
export function traceOf(req: FastifyRequest): RequestTrace {
  return (traces.get(req) as TraceState).trace;
}

/**
 * Route hooks that start a trace per request and emit one event from fastify's `onResponse` (the response
 * was sent) or when the connection closes first (the client went away, or the server broke the body);
 * `onRequestAbort` aborts the trace's signal as soon as fastify sees the client leave.
 */
export function requestRecorder(
  log: { warn(obj: object, msg?: string): void },
  observer: RegistryObserver | undefined,
  isMirrored: (req: FastifyRequest) => boolean,
) {
  const emit = (req: FastifyRequest, reply: FastifyReply, aborted: boolean) => {
    const st = traces.get(req);
    if (st === undefined || st.emitted) return;
    st.emitted = true;
    if (aborted) st.ac.abort(new Error('client went away'));
    const { signal: _, ...t } = st.trace;
    const event: RegistryRequestEvent = {
      ...t,
      aborted,
      status: aborted && !reply.raw.headersSent ? 499 : reply.raw.statusCode,
      durationMs: performance.now() - st.started,
    };
    if (event.tag?.mode === 'cluster') {
      const served = event.outcome === 'local' || event.outcome === 'peer';
      event.tag = { ...event.tag, outcome: served && !aborted ? 'cluster' : 'miss' };
    }
    try {
      observer?.onRequest?.(event);
    } catch (err) {
      log.warn({ err }, 'registry observer threw');
    }
  };
  return {
    onRequest: async (req: FastifyRequest, reply: FastifyReply) => {
      const ac = new AbortController();
      const trace: RequestTrace = {
        method: req.method === 'HEAD' ? 'HEAD' : 'GET',
        mirrored: isMirrored(req),
        outcome: 'invalid',
        bytes: 0,
        signal: ac.signal,
      };
      traces.set(req, { started: performance.now(), ac, emitted: false, trace });
      reply.raw.once('close', () => emit(req, reply, !reply.raw.writableFinished));
    },
    onResponse: async (req: FastifyRequest, reply: FastifyReply) => emit(req, reply, false),
    onRequestAbort: async (req: FastifyRequest) => traces.get(req)?.ac.abort(new Error('client went away')),
  };
}
