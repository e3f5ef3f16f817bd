/**
 * The ops server (on --metrics-addr): /metrics (Prometheus), /healthz (liveness: the process answers and
 * its event loop is not stalled), /readyz (readiness from a caller-given check), /status (JSON, optional),
 * and whatever `extend` registers (the agent adds the status page at / and /debug/measure).
 */
import { monitorEventLoopDelay } from 'node:perf_hooks';
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import type { Registry } from 'prom-client';

/** The readiness verdict: ready when `reasons` is empty. */
export interface Readiness {
  /** Why the agent is not ready, e.g. ['containerd unreachable', 'router has no peers']. Empty = ready. */
  reasons: string[];
}

/** Options of createOpsServer. */
export interface OpsServerOptions {
  /** The metrics registry served at /metrics. */
  registry: Registry;
  /** The readiness check behind /readyz. Default: always ready. */
  readiness?: () => Readiness | Promise<Readiness>;
  /** Readiness checks slower than this count as not ready. Default 2000 ms. */
  readinessTimeoutMs?: number;
  /** /healthz fails when the event loop's p99 delay since the last probe exceeds this. Default 5000 ms. */
  maxEventLoopDelayMs?: number;
  /** JSON for /status (e.g. the tracker snapshot and peers). Default: no /status route. */
  status?: () => unknown | Promise<unknown>;
  /** Logger for the fastify instance (warnings and errors only; request logs are off). */
  logger?: FastifyBaseLogger;
  /** Registers further routes before the server is ready (e.g. the status page). */
  extend?: (app: FastifyInstance) => void | Promise<void>;
}

/** Creates the ops server (not listening: call `.listen({ host, port })`). Closing it stops its monitor. */
export async function createOpsServer(opts: OpsServerOptions): Promise<FastifyInstance> {
  // Request logs are info-level: the ops logger only passes warnings and errors (probes are frequent).
  const app = opts.logger
    ? Fastify({ loggerInstance: opts.logger.child({ component: 'ops' }, { level: 'warn' }) })
    : Fastify({ logger: false });
  const loop = monitorEventLoopDelay({ resolution: 20 });
  loop.enable();
  app.addHook('onClose', async () => loop.disable());
  const maxDelay = opts.maxEventLoopDelayMs ?? 5000;
  const readyTimeout = opts.readinessTimeoutMs ?? 2000;

  app.get('/metrics', async (_req, reply) => {
    const body = await opts.registry.metrics();
    return reply.type(opts.registry.contentType).send(body);
  });

  app.get('/healthz', async (_req, reply) => {
    const p99Ms = loop.count > 0 ? loop.percentile(99) / 1e6 : 0;
    loop.reset();
    const ok = p99Ms <= maxDelay;
    return reply
      .code(ok ? 200 : 503)
      .send({ status: ok ? 'ok' : 'event loop stalled', eventLoopDelayP99Ms: Math.round(p99Ms * 10) / 10 });
  });

  app.get('/readyz', async (_req, reply) => {
    let reasons: string[];
    try {
      const check = Promise.resolve(opts.readiness ? opts.readiness() : { reasons: [] });
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<Readiness>((resolve) => {
        timer = setTimeout(
          () => resolve({ reasons: [`readiness check timed out after ${readyTimeout}ms`] }),
          readyTimeout,
        );
      });
      try {
        reasons = (await Promise.race([check, timeout])).reasons;
      } finally {
        clearTimeout(timer);
      }
    } catch (err) {
      reasons = [`readiness check failed: ${(err as Error).message}`];
    }
    if (reasons.length === 0) return reply.code(200).send({ ready: true, reasons: [] });
    return reply.code(503).send({ ready: false, reasons });
  });

  if (opts.status) {
    const status = opts.status;
    app.get('/status', async () => status());
  }
  if (opts.extend) await opts.extend(app);
  await app.ready();
  return app;
}
