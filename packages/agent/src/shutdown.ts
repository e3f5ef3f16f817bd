/** How Ferry's processes stop: on SIGTERM/SIGINT, draining their HTTP servers within a grace period. */
import type { Server, ServerResponse } from 'node:http';
import { Server as NetServer } from 'node:net';
import type { FastifyInstance } from 'fastify';
import type { Logger } from './logger.ts';

/** Resolves on the first SIGTERM or SIGINT (logged), removing its handlers. */
export function untilShutdownSignal(logger: Pick<Logger, 'info'>): Promise<void> {
  return new Promise<void>((resolve) => {
    const onSignal = (signal: NodeJS.Signals) => {
      logger.info({ signal }, 'shutting down');
      process.off('SIGTERM', onSignal);
      process.off('SIGINT', onSignal);
      resolve();
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
  });
}

/** Responses in flight per tracked server (`trackResponses`). */
const inFlight = new WeakMap<Server, Set<ServerResponse>>();

/**
 * Keeps account of the server's responses from now on (call it before listening), so that `drain` can
 * tell a response that has ended but still has bytes queued for a slow reader from a finished one.
 */
export function trackResponses(server: FastifyInstance): void {
  const open = new Set<ServerResponse>();
  inFlight.set(server.server, open);
  server.server.on('request', (_req, res: ServerResponse) => {
    open.add(res);
    res.once('close', () => open.delete(res));
  });
}

/** Stops accepting connections, giving open requests up to `graceMs`; true when all finished in time. */
export async function drain(server: FastifyInstance, graceMs: number): Promise<boolean> {
  const http = server.server;
  if (!http.listening) return true;
  // net's close: stop listening, resolve once every connection has gone. (http's close would also close
  // idle connections at once, with the flaw described below.)
  const closed = new Promise<boolean>((resolve) => NetServer.prototype.close.call(http, () => resolve(true)));
  // A keep-alive connection that was busy when the drain began would otherwise stay open once idle and
  // keep taking requests: answer on it with `Connection: close`, and close connections as they go idle.
  const lastOnConnection = (_req: unknown, res: { setHeader(name: string, value: string): void }) =>
    res.setHeader('connection', 'close');
  http.prependListener('request', lastOnConnection);
  // closeIdleConnections takes an ended response for a finished one and destroys its connection with
  // the bytes still queued for a slow reader (a whole manifest, the last chunks of a relayed or spooled
  // blob): while any tracked response is ended but not flushed, idle connections wait for the next sweep.
  const open = inFlight.get(http);
  const closeIdle = () => {
    if (open !== undefined && [...open].some((res) => res.writableEnded && !res.writableFinished)) return;
    http.closeIdleConnections();
  };
  closeIdle();
  const sweep = setInterval(closeIdle, 100);
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<boolean>((resolve) => {
    timer = setTimeout(() => resolve(false), graceMs);
  });
  const ok = await Promise.race([closed, timeout]);
  clearTimeout(timer);
  clearInterval(sweep);
  http.off('request', lastOnConnection);
  if (!ok) http.closeAllConnections();
  return ok;
}
