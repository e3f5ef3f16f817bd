/**
 * The status routes: `/` (the status page), `/status` (its JSON), `/status/body` (the page's body,
 * rendered here, which the page's script swaps in) and `/debug/measure?image=REF` (time a DHT lookup and a pull through the local mirror).
 */
import { randomBytes } from 'node:crypto';
import { hostPort, OciError } from '@ferry/oci';
import type { P2PNode } from '@ferry/p2p';
import { isLoopback } from '@ferry/registry';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Tracker } from '../tracker.ts';
import type { StatusData, StatusPinner, StatusPolicy, StatusTransfer } from './data.ts';
import type { RequestHistory } from './history.ts';
import { MeasureBusyError, type Measurer } from './measure.ts';
import { renderMeasurePage, renderStatusBody, renderStatusPage } from './render.ts';

/** Options of registerStatusRoutes. */
export interface StatusRoutesOptions {
  /** Collects what `/status` answers and the page shows. */
  status: () => StatusData | Promise<StatusData>;
  /** Serves `/debug/measure`; without it the route answers 404. */
  measurer?: Measurer;
  /** How often the page refreshes itself. Default 3000 ms. */
  refreshMs?: number;
}

/** Options of createStatusSource: where the agent's status comes from. */
export interface StatusSourceOptions {
  /** The P2P node: peer id, addresses, peers, readiness. */
  router: Pick<P2PNode, 'peerId' | 'addresses' | 'peers' | 'ready'>;
  tracker: Pick<Tracker, 'snapshot'>;
  history: RequestHistory;
  /** The tag policy in force (describePolicy(config)). */
  policy: StatusPolicy;
  /** containerd's connection state. */
  containerd: () => { connected: boolean; socket: string };
  /** The pinner's recent resolutions; absent: the pinner is not enabled. */
  pinner?: () => StatusPinner | Promise<StatusPinner>;
  /** Pull-through transfers in flight; absent: first-pull sharing is off. */
  transfers?: () => StatusTransfer[];
  /** Clock (tests). Default Date.now. */
  now?: () => number;
}

/** Builds the `/status` collector of a running agent. */
export function createStatusSource(opts: StatusSourceOptions): () => Promise<StatusData> {
  const now = opts.now ?? Date.now;
  return async () => {
    let pinner: StatusPinner | undefined;
    if (opts.pinner) {
      // The page must render even when the pinner's store fails: show that as an empty list.
      pinner = await Promise.resolve()
        .then(() => opts.pinner?.())
        .catch(() => ({ recent: [] }));
    }
    return {
      generatedAt: new Date(now()).toISOString(),
      peerId: opts.router.peerId,
      addresses: [...opts.router.addresses],
      ready: opts.router.ready(),
      containerd: opts.containerd(),
      peers: opts.router.peers(),
      tracker: opts.tracker.snapshot(),
      recentRequests: opts.history.recent(),
      mirror: opts.history.summary(),
      policy: opts.policy,
      ...(pinner ? { pinner } : {}),
      ...(opts.transfers ? { transfers: opts.transfers() } : {}),
    };
  };
}

/** Base URL of the node's own registry from its listen address (wildcards become loopback). */
export function localRegistryUrl(addr: { host: string; port: number }): string {
  const host = addr.host;
  if (host === '' || host === '0.0.0.0') return `http://127.0.0.1:${addr.port}`;
  if (host === '::' || host === '[::]') return `http://[::1]:${addr.port}`;
  return `http://${hostPort(host, addr.port)}`;
}

function htmlHeaders(reply: FastifyReply, nonce?: string): FastifyReply {
  const script = nonce ? `'nonce-${nonce}'` : "'none'";
  return reply
    .type('text/html; charset=utf-8')
    .header(
      'content-security-policy',
      `default-src 'none'; script-src ${script}; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; form-action 'self'; base-uri 'none'; frame-ancestors 'none'`,
    )
    .header('x-content-type-options', 'nosniff')
    .header('cache-control', 'no-store');
}

function wantsJson(req: FastifyRequest): boolean {
  const q = req.query as Record<string, unknown> | undefined;
  if (q?.format === 'json') return true;
  const accept = req.headers.accept ?? '';
  return /application\/json/.test(accept) && !/text\/html/.test(accept);
}

/** Registers `/`, `/status`, `/status/body` and `/debug/measure` on a fastify instance (loopback clients only). */
export async function registerStatusRoutes(app: FastifyInstance, opts: StatusRoutesOptions): Promise<void> {
  const refreshMs = opts.refreshMs ?? 3000;

  // Image names, tags (private ones too) and digests: only for clients on this node's loopback
  // (`kubectl port-forward` to the hostNetwork pod arrives there).
  app.addHook('onRequest', async (req, reply) => {
    if (!isLoopback(req.socket.remoteAddress ?? '')) {
      return reply.code(403).send({
        error: 'the status server answers only clients on the node itself (use kubectl port-forward)',
      });
    }
  });

  app.get('/status', async (_req, reply) =>
    reply.header('cache-control', 'no-store').send(await opts.status()),
  );

  app.get('/status/body', async (_req, reply) =>
    htmlHeaders(reply).send(renderStatusBody(await opts.status(), Date.now())),
  );

  app.get('/', async (_req, reply) => {
    const nonce = randomBytes(16).toString('base64');
    const page = renderStatusPage(await opts.status(), { nonce, refreshMs });
    return htmlHeaders(reply, nonce).send(page);
  });

  app.get('/debug/measure', async (req, reply) => {
    const q = (req.query ?? {}) as Record<string, unknown>;
    const image = typeof q.image === 'string' ? q.image : '';
    const json = wantsJson(req);
    const fail = (status: number, message: string) => {
      if (json) return reply.code(status).send({ error: message });
      return htmlHeaders(reply.code(status)).send(renderMeasurePage(image, { error: message }));
    };
    if (!opts.measurer) return fail(404, 'measuring is not enabled on this agent');
    try {
      const result = await opts.measurer.measure(image);
      if (json) return reply.header('cache-control', 'no-store').send(result);
      return htmlHeaders(reply).send(renderMeasurePage(image, { result }));
    } catch (err) {
      if (err instanceof MeasureBusyError) {
        reply.header('retry-after', '5');
        return fail(429, err.message);
      }
      if (err instanceof OciError) return fail(400, err.message);
      req.log.warn({ err, image }, 'measurement failed');
      return fail(500, `measurement failed: ${(err as Error).message}`);
    }
  });
}
