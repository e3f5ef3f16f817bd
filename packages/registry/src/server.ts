import type { Server } from 'node:http';
import type { Socket } from 'node:net';
import { errorBody, errorStatus } from '@ferry/oci';
import Fastify, { type FastifyBaseLogger, type FastifyInstance, LogController } from 'fastify';
import { type RegistryPluginOptions, registry } from './plugin.ts';

/** Options for {@link createRegistryServer}: the plugin's options plus the server's own. */
export interface RegistryServerOptions extends RegistryPluginOptions {
  /** A pino-compatible logger instance, or fastify's `logger` setting (true/false/options). Default: off. */
  logger?: FastifyBaseLogger | boolean | Record<string, unknown>;
  /**
   * A connection with no byte read or written for this long is closed: an idle keep-alive, a client
   * that stopped reading a body (its buffers are released), a slowloris. Default 60 s.
   */
  connectionIdleTimeoutMs?: number;
  /** Most open connections from one client address; more are closed at once. Default 128. */
  maxConnectionsPerClient?: number;
  /** Most open connections in all (each may hold up to ~2 MiB of relay and file buffers). Default 512. */
  maxConnections?: number;
}

function isLoggerInstance(l: unknown): l is FastifyBaseLogger {
  return (
    typeof l === 'object' &&
    l !== null &&
    typeof (l as { info?: unknown }).info === 'function' &&
    typeof (l as { child?: unknown }).child === 'function'
  );
}

/**
 * Per connection: closed after `idleMs` without a byte read or written (also when the client stopped
 * reading and the response's writes are stuck), and closed at once when its client address already
 * holds `max` (the table is bounded by maxConnections).
 */
function boundConnections(server: Server, max: number, idleMs: number): void {
  const open = new Map<string, number>();
  server.on('connection', (socket: Socket) => {
    socket.setTimeout(idleMs);
    socket.once('timeout', () => socket.destroy());
    const ip = socket.remoteAddress ?? '';
    const n = (open.get(ip) ?? 0) + 1;
    if (n > max) {
      socket.destroy();
      return;
    }
    open.set(ip, n);
    socket.once('close', () => {
      const left = (open.get(ip) ?? 1) - 1;
      if (left <= 0) open.delete(ip);
      else open.set(ip, left);
    });
  });
}

/**
 * Builds a standalone fastify instance serving the registry plugin. Call `listen()` on it;
 * `close()` also closes idle and in-flight connections (containerd must never wait on a closing node).
 */
export async function createRegistryServer(options: RegistryServerOptions): Promise<FastifyInstance> {
  const { logger, connectionIdleTimeoutMs, maxConnectionsPerClient, maxConnections, ...pluginOptions } =
    options;
  const app = Fastify({
    requestTimeout: 30_000,
    ...(isLoggerInstance(logger) ? { loggerInstance: logger } : { logger: logger ?? false }),
    logController: new LogController({ disableRequestLogging: true }),
    forceCloseConnections: true,
    return503OnClosing: true,
    routerOptions: { maxParamLength: 2048, ignoreTrailingSlash: true },
  }) as unknown as FastifyInstance;
  app.server.maxConnections = maxConnections ?? 512;
  boundConnections(app.server, maxConnectionsPerClient ?? 128, connectionIdleTimeoutMs ?? 60_000);
  // Paths and methods outside the pull API: an OCI error body that does not repeat the request.
  app.setNotFoundHandler((req, reply) => {
    const pull = req.method === 'GET' || req.method === 'HEAD';
    const code = pull ? 'NAME_UNKNOWN' : 'UNSUPPORTED';
    reply
      .code(errorStatus(code))
      .type('application/json')
      .send(
        errorBody(code, pull ? 'not a registry pull API path' : 'this mirror serves pulls only (GET, HEAD)'),
      );
  });
  await app.register(registry, pluginOptions);
  await app.ready();
  return app;
}
