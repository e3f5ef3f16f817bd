/** How Ferry's processes stop: on SIGTERM/SIGINT, draining their HTTP servers within a grace period. */
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

/** Stops accepting connections, giving open requests up to `graceMs`; true when all finished in time. */
export async function drain(server: FastifyInstance, graceMs: number): Promise<boolean> {
  const http = server.server;
  if (!http.listening) return true;
  const closed = new Promise<boolean>((resolve) => http.close(() => resolve(true)));
  // A keep-alive connection that was busy when the drain began would otherwise stay open once idle and
  // keep taking requests: answer on it with `Connection: close`, and close connections as they go idle.
  const lastOnConnection = (_req: unknown, res: { setHeader(name: string, value: string): void }) =>
    res.setHeader('connection', 'close');
  http.prependListener('request', lastOnConnection);
  http.closeIdleConnections();
  const sweep = setInterval(() => http.closeIdleConnections(), 100);
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
