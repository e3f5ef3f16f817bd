import Fastify, { type FastifyBaseLogger, type FastifyInstance, LogController } from 'fastify';
import { type RegistryPluginOptions, registry } from './plugin.ts';

/** Options for {@link createRegistryServer}: the plugin's options plus the server's own. */
export interface RegistryServerOptions extends RegistryPluginOptions {
  /** A pino-compatible logger instance, or fastify's `logger` setting (true/false/options). Default: off. */
  logger?: FastifyBaseLogger | boolean | Record<string, unknown>;
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
 * Builds a standalone fastify instance serving the registry plugin. Call `listen()` on it;
 * `close()` also closes idle and in-flight connections (containerd must never wait on a closing node).
 */
export async function createRegistryServer(options: RegistryServerOptions): Promise<FastifyInstance> {
  const { logger, ...pluginOptions } = options;
  const app = Fastify({
    ...(isLoggerInstance(logger) ? { loggerInstance: logger } : { logger: logger ?? false }),
    logController: new LogController({ disableRequestLogging: true }),
    forceCloseConnections: true,
    return503OnClosing: true,
    routerOptions: { maxParamLength: 2048, ignoreTrailingSlash: true },
  }) as unknown as FastifyInstance;
  await app.register(registry, pluginOptions);
  await app.ready();
  return app;
}
