/**
 * The composition root of `ferry agent`: containerd → tracker → router (DHT) → registry, plus the ops
 * server. Everything Ferry-specific lives in the packages; this file only wires them and owns the
 * lifecycle (start order, readiness, graceful shutdown).
 */

import { existsSync } from 'node:fs';
import { join } from 'node:path';
import {
  type ContainerdClient,
  checkCriConfig,
  createContainerdClient,
  createWatcher,
  type Watcher,
} from '@ferry/containerd';
import type { ByteRange } from '@ferry/oci';
import { createP2PNode, createPeerAuth, type P2PNode, PEER_KEY_FILE, readNetworkKeyFile } from '@ferry/p2p';
import { type ContentInfo, type ContentSource, createRegistryServer } from '@ferry/registry';
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import type { AgentConfig, ListenAddress } from './config.ts';
import { createDataDirHealth, probeDataDir } from './data-dir.ts';
import { createAgentPullThrough } from './first-pull.ts';
import { localClientMatcher } from './local-clients.ts';
import { createLogger, type Logger } from './logger.ts';
import {
  createMetrics,
  createRequestObserver,
  type FerryMetrics,
  recordTrackerCounts,
  registerP2PMetrics,
} from './metrics.ts';
import { createOpsServer } from './ops.ts';
import { checkAgentPinnerConfig, type RunningPinner, startAgentPinner } from './pinner.ts';
import { drain, trackResponses, untilShutdownSignal } from './shutdown.ts';
import {
  createMeasurer,
  createRequestHistory,
  createStatusSource,
  describePolicy,
  localRegistryUrl,
  registerStatusRoutes,
} from './status/index.ts';
import { createAgentTagPolicy } from './tag-resolution.ts';
import { createTracker, type ImageStore, type Tracker } from './tracker.ts';

/** Largest manifest or index the tracker reads from containerd. */
const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;
/** How many recent mirror requests the status endpoint keeps. */
const RECENT_REQUESTS = 50;
/** Longest the agent waits for its first reconcile before it joins the cluster anyway. */
const JOIN_WAIT_MS = 10_000;

/** A running agent. */
export interface AgentRuntime {
  readonly logger: Logger;
  readonly metrics: FerryMetrics;
  readonly router: P2PNode;
  readonly tracker: Tracker;
  /** Stops accepting work, lets in-flight transfers finish for up to `graceMs`, then releases everything. */
  close(graceMs?: number): Promise<void>;
}

/** Options of startAgent beyond the configuration (tests inject a logger). */
export interface StartAgentOptions {
  logger?: Logger;
}

function listenHost(addr: ListenAddress): string {
  return addr.host === '' ? '0.0.0.0' : addr.host;
}

/** The node's content as the registry sees it: containerd's content store, with media types the tracker learned. */
function containerdContentSource(client: ContainerdClient, tracker: Tracker): ContentSource {
  return {
    async resolveTag(registry, repository, tag): Promise<ContentInfo | undefined> {
      const image = await client.getImage(`${registry}/${repository}:${tag}`);
      if (!image) return undefined;
      // The image record can outlive its content (GC, discard_unpacked_layers): only answer what is there.
      if (!(await client.info(image.target.digest))) return undefined;
      return { digest: image.target.digest, size: image.target.size, mediaType: image.target.mediaType };
    },
    async stat(digest): Promise<ContentInfo | undefined> {
      const info = await client.info(digest);
      if (!info) return undefined;
      const mediaType = tracker.mediaTypeOf(digest);
      return mediaType ? { digest, size: info.size, mediaType } : { digest, size: info.size };
    },
    open: (digest: string, range?: ByteRange) => client.open(digest, range),
    openFile: (digest: string) => client.openFile(digest),
  };
}

/** containerd as the tracker's image store. */
function containerdImageStore(client: ContainerdClient): ImageStore {
  return {
    listImages: async () => (await client.listImages()).map((i) => ({ name: i.name, target: i.target })),
    listContent: async () => (await client.listContent()).map((c) => ({ digest: c.digest, size: c.size })),
    readManifest: (digest) => client.readAll(digest, MAX_MANIFEST_BYTES),
  };
}

/** Starts every part of the agent; resolves once all servers listen. */
export async function startAgent(
  config: AgentConfig,
  options: StartAgentOptions = {},
): Promise<AgentRuntime> {
  const logger = options.logger ?? createLogger({ level: config.logLevel });
  checkAgentPinnerConfig(config);
  const metrics = createMetrics();
  const closers: { name: string; close: () => Promise<unknown> | unknown }[] = [];
  const closeAll = async () => {
    for (const c of closers.reverse()) {
      try {
        await c.close();
      } catch (err) {
        logger.warn({ err, component: c.name }, 'error while stopping');
      }
    }
    closers.length = 0;
  };

  try {
    const client = createContainerdClient({
      socket: config.containerdSock,
      namespace: config.containerdNamespace,
      ...(config.containerdContentPath ? { contentPath: config.containerdContentPath } : {}),
    });
    closers.push({ name: 'containerd', close: () => client.close() });
    const version = await client.version().catch((err: Error) => {
      logger.warn({ err: err.message, socket: config.containerdSock }, 'containerd not reachable yet');
      return undefined;
    });
    if (version)
      logger.info({ version: version.version, socket: config.containerdSock }, 'containerd connected');
    if (version && config.containerdConfigPath) {
      for (const warning of await checkCriConfig(client, config.containerdConfigPath).catch(() => [])) {
        logger.warn({ check: 'containerd-cri-config' }, warning);
      }
    }

    // A full or unwritable data dir degrades to memory (data-dir.ts); it never stops the mirror.
    let dataDirWritable = true;
    if (config.dataDir !== undefined) {
      const probe = await probeDataDir(config.dataDir);
      if (!probe.writable) {
        dataDirWritable = false;
        logger.warn(
          { dataDir: config.dataDir, reason: probe.reason },
          'DATA DIR UNWRITABLE (full, read-only or missing): the agent runs on memory: last-known tag digests in memory (bounded, lost on restart), first-pull sharing off, a new peer identity unless one is stored',
        );
      }
    }
    const dataDirHealth = createDataDirHealth(dataDirWritable, metrics.dataDirWritable, logger);
    // The peer identity under the data dir: read when stored; without a writable dir a new one in memory.
    const identityDir =
      config.dataDir !== undefined && (dataDirWritable || existsSync(join(config.dataDir, PEER_KEY_FILE)))
        ? config.dataDir
        : undefined;

    const registryAddr = config.registryAddr as ListenAddress;
    const routerAddr = config.routerAddr as ListenAddress;
    let networkKeys: Uint8Array[] = [];
    if (config.networkKeyFile) {
      networkKeys = await readNetworkKeyFile(config.networkKeyFile);
      logger.info({ keys: networkKeys.length }, 'DHT is a private network (network key file read)');
    } else {
      logger.warn(
        { option: '--network-key-file' },
        'NO NETWORK KEY: any process that reaches the router port can join the DHT, learn every advertised digest and announce content; set --network-key-file (FERRY_NETWORK_KEY_FILE)',
      );
    }
    const router = await createP2PNode({
      networkKeys,
      listen: { host: listenHost(routerAddr), port: routerAddr.port },
      ...(config.advertiseHost ? { announceHost: config.advertiseHost } : {}),
      registryPort: registryAddr.port,
      ...(identityDir ? { dataDir: identityDir } : {}),
      bootstrapPeers: [...config.bootstrapPeers],
      bootstrapDns: [...config.bootstrapDns],
      // joined below, once the first reconcile listed what containerd holds
      joinLater: true,
      logger: logger.child({ component: 'p2p' }),
    });
    closers.push({ name: 'p2p', close: () => router.stop() });
    registerP2PMetrics(metrics, () => router.stats());
    // Peer HTTP auth with the network key: peers sign requests and answers; other clients must be local.
    const peerAuth =
      networkKeys.length === 0
        ? undefined
        : createPeerAuth({ keys: networkKeys, node: { peerId: router.peerId, sign: (d) => router.sign(d) } });
    // The node's own containerd (--local-clients; default loopback, the advertised and listen hosts).
    const isLocalClient = localClientMatcher(config.localClients, [config.advertiseHost, registryAddr.host]);
    logger.info({ peerId: router.peerId, addresses: router.addresses }, 'router started');

    // Filters, tag rules, and what mode verify needs (upstream client, last-known store).
    const tagPolicy = await createAgentTagPolicy(config, logger.child({ component: 'tags' }), dataDirHealth);
    closers.push({ name: 'tags', close: () => tagPolicy.close() });

    // The pinner (--pinner): shares the upstream client, the last-known database and the metrics; its
    // cluster step asks this agent's own registry.
    let pinner: RunningPinner | undefined;
    if (config.pinner) {
      const running = await startAgentPinner(config, {
        upstream: tagPolicy.upstream,
        store: tagPolicy.lastKnown,
        metricsRegistry: metrics.registry,
        clusterUrl: localRegistryUrl(registryAddr),
        logger: logger.child({ component: 'pinner' }),
      });
      pinner = running;
      closers.push({ name: 'pinner', close: () => running.close() });
    }
    const policy = tagPolicy.policy;

    const tracker = createTracker({
      store: containerdImageStore(client),
      advertiser: router,
      policy,
      logger: logger.child({ component: 'tracker' }),
      onReconcile: (r) => recordTrackerCounts(metrics, r.counts),
    });
    closers.push({ name: 'tracker', close: () => tracker.stop() });

    const watchAbort = new AbortController();
    const watcher: Watcher = createWatcher(client, {
      signal: watchAbort.signal,
      resyncIntervalMs: config.resyncInterval,
      onEvent: (e) => {
        logger.debug({ topic: e.topic, name: e.name, digest: e.digest }, 'containerd event');
        tracker.schedule(e.topic);
      },
      onResync: (reason) => {
        metrics.containerdResyncs.inc({ reason });
        if (reason === 'reconnect') metrics.containerdReconnects.inc();
        tracker.schedule(`resync:${reason}`);
      },
      onError: (err) =>
        logger.warn({ err: (err as Error).message }, 'containerd event stream lost; reconnecting'),
    });
    closers.push({
      name: 'watcher',
      close: () => {
        watchAbort.abort();
        watcher.stop();
      },
    });

    // First-pull sharing: blobs nobody holds are fetched once and streamed to the others while in flight.
    const firstPull = await createAgentPullThrough(
      dataDirWritable ? config : { ...config, dataDir: undefined },
      {
        upstream: tagPolicy.upstream,
        router,
        // Peers find the blob through this node's advertisement only once an image names it.
        held: async (digest) => tracker.advertises(digest) && (await client.info(digest)) !== undefined,
        metrics,
        logger: logger.child({ component: 'first-pull' }),
        ...(peerAuth === undefined ? {} : { peerAuth }),
      },
    );
    if (firstPull !== undefined) closers.push({ name: 'first-pull', close: () => firstPull.close() });

    const requestObserver = createRequestObserver(metrics);
    const history = createRequestHistory({ limit: RECENT_REQUESTS });
    const requestLog = logger.child({ component: 'registry' });
    const registryServer: FastifyInstance = await createRegistryServer({
      source: containerdContentSource(client, tracker),
      router,
      policy,
      tags: tagPolicy.tags,
      mirrorResolveTimeoutMs: config.mirrorResolveTimeout,
      mirrorResolveRetries: config.mirrorResolveRetries,
      ...(peerAuth === undefined ? {} : { peerAuth }),
      isLocalClient,
      ...(firstPull === undefined ? {} : { pullThrough: firstPull.pullThrough }),
      logger: requestLog,
      observer: {
        onRequest(e) {
          requestObserver.onRequest(e);
          history.record(e);
          const fields = {
            method: e.method,
            key: e.key,
            registry: e.registry,
            repository: e.repository,
            outcome: e.outcome,
            peer: e.peer,
            // After a resume, every peer that served bytes, with how many.
            ...(e.peers !== undefined && e.peers.length > 1 ? { peers: e.peers } : {}),
            status: e.status,
            bytes: e.bytes,
            durationMs: Math.round(e.durationMs * 10) / 10,
            ...(e.resolveMs !== undefined ? { resolveMs: Math.round(e.resolveMs * 10) / 10 } : {}),
            attempts: e.attempts,
            error: e.error,
          };
          // Each request of the local containerd is worth a line; peers' requests are debug detail.
          if (e.mirrored) requestLog.debug(fields, 'served peer request');
          else requestLog.info(fields, 'mirror request');
        },
        onQuarantine({ digest, peer }) {
          requestObserver.onPeerFailure({ peer, key: digest, reason: 'quarantined' });
          requestLog.warn({ digest, peer }, 'peer quarantined for a digest: its bytes did not match it');
        },
      },
    });
    trackResponses(registryServer); // so that the shutdown drain lets queued bytes reach slow readers
    closers.push({ name: 'registry', close: () => registryServer.close() });

    const ops = await createOpsServer({
      registry: metrics.registry,
      logger,
      readiness: () => {
        const reasons: string[] = [];
        if (!watcher.connected()) reasons.push('containerd event stream not connected');
        if (!router.ready()) reasons.push('router has no peers');
        return { reasons };
      },
    });
    closers.push({ name: 'ops', close: () => ops.close() });

    // The status page at /, its JSON at /status, and /debug/measure: on their own listener (loopback by default).
    const statusServer: FastifyInstance = Fastify({
      loggerInstance: logger.child({ component: 'status' }, { level: 'warn' }) as FastifyBaseLogger,
    });
    await registerStatusRoutes(statusServer, {
      status: createStatusSource({
        router,
        tracker,
        history,
        policy: describePolicy(config),
        containerd: () => ({ connected: watcher.connected(), socket: config.containerdSock }),
        ...(pinner
          ? {
              pinner: () => ({
                recent: pinner.pinner.recent(20).map((r) => ({ ...r, resolvedAt: r.resolvedAt || r.at })),
              }),
            }
          : {}),
        ...(firstPull === undefined ? {} : { transfers: () => firstPull.pullThrough.list() }),
      }),
      measurer: createMeasurer({ router, history, registryUrl: localRegistryUrl(registryAddr) }),
    });
    closers.push({ name: 'status', close: () => statusServer.close() });

    await registryServer.listen({ host: listenHost(registryAddr), port: registryAddr.port });
    const metricsAddr = config.metricsAddr as ListenAddress;
    await ops.listen({ host: listenHost(metricsAddr), port: metricsAddr.port });
    const statusAddr = config.statusAddr as ListenAddress;
    await statusServer.listen({ host: listenHost(statusAddr), port: statusAddr.port });
    logger.info(
      {
        registry: `${listenHost(registryAddr)}:${registryAddr.port}`,
        metrics: `${listenHost(metricsAddr)}:${metricsAddr.port}`,
        status: `${listenHost(statusAddr)}:${statusAddr.port}`,
      },
      'agent listening',
    );
    joinAfterFirstReconcile(tracker, router, logger);

    return {
      logger,
      metrics,
      router,
      tracker,
      async close(graceMs = config.shutdownTimeout) {
        // Stop taking new requests, but let transfers in flight finish within the grace period.
        if (!(await drain(registryServer, graceMs))) {
          logger.warn({ graceMs }, 'in-flight transfers cut off at the end of the grace period');
        }
        await closeAll();
      },
    };
  } catch (err) {
    await closeAll();
    throw err;
  }
}

/**
 * Join the cluster (dial the bootstrap targets) once the first reconcile has listed and advertised
 * what containerd holds, or after JOIN_WAIT_MS. Each member this node connects to then gets every
 * record pushed with the connection: a node restarting into a formed mesh is findable as soon as it
 * is connected. Joining first made the manifest walk race the handshakes of the whole mesh on one
 * event loop (seconds on a busy node, and the records followed the walk).
 */
function joinAfterFirstReconcile(tracker: Tracker, router: P2PNode, logger: Logger): void {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const waited = new Promise<void>((resolve) => {
    timer = setTimeout(resolve, JOIN_WAIT_MS);
    timer.unref();
  });
  Promise.race([tracker.reconcile().then(() => undefined), waited])
    .catch((err: unknown) => logger.warn({ err }, 'first reconcile failed; joining the cluster anyway'))
    .finally(() => {
      clearTimeout(timer);
      router.join();
    });
}

/** `ferry agent`: starts the agent and runs until SIGTERM/SIGINT, then shuts down cleanly (exit code 0). */
export async function runAgent(config: AgentConfig): Promise<void> {
  const runtime = await startAgent(config);
  await untilShutdownSignal(runtime.logger);
  await runtime.close();
  runtime.logger.info('stopped');
}
