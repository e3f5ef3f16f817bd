/**
 * What the tag policy and the pinner both stand on: the upstream client (@ferry/resolver; endpoints from
 * --mirrored-registries, credentials from --upstream-credentials) and a last-known store (LevelDB under
 * `<dataDir>/<name>`, else in memory). `ferry agent` opens one pair and shares it with its in-agent
 * pinner; `ferry pinner` opens its own.
 */
import { join } from 'node:path';
import {
  createMemoryLastKnownStore,
  createUpstreamClient,
  type DockerConfig,
  type LastKnownStore,
  loadDockerConfig,
  openLastKnownStore,
  type UpstreamClient,
} from '@ferry/resolver';
import type { AgentConfig } from './config.ts';
import { type DataDirHealth, degradingLastKnownStore } from './data-dir.ts';
import type { Logger } from './logger.ts';

/** The configuration fields read here (`ferry pinner` has them under the same names). */
export type UpstreamDepsConfig = Pick<
  AgentConfig,
  'upstreamTimeout' | 'upstreamCredentials' | 'mirroredRegistries' | 'upstreamEndpoints' | 'dataDir'
>;

export interface UpstreamDeps {
  readonly upstream: UpstreamClient;
  readonly lastKnown: LastKnownStore;
  /** Closes the upstream client and the store. */
  close(): Promise<void>;
}

/**
 * Loads the credentials (rejects with a clear error on a bad file), opens the store and the client. A
 * store that cannot be opened (unwritable or full data dir, a lock) never stops the service: last-known
 * digests are then kept in memory, with a loud warning.
 */
export async function openUpstreamDeps(
  config: UpstreamDepsConfig,
  storeName: 'tags' | 'pinner',
  logger: Pick<Logger, 'warn' | 'info'>,
  /** The data dir's state: unwritable at start, the store stays in memory; a failed write degrades to it. */
  health?: DataDirHealth,
): Promise<UpstreamDeps> {
  let credentials: DockerConfig | undefined;
  if (config.upstreamCredentials !== undefined) {
    credentials = await loadDockerConfig(config.upstreamCredentials);
    logger.info(
      { file: config.upstreamCredentials, registries: Object.keys(credentials.auths ?? {}) },
      'upstream credentials loaded',
    );
  }
  let lastKnown: LastKnownStore;
  if (config.dataDir !== undefined && health?.writable() === false) {
    logger.warn(
      { component: storeName, dataDir: config.dataDir },
      'LAST-KNOWN DATABASE NOT OPENED (data dir unwritable): tag digests are kept in memory only (bounded) and lost on restart',
    );
    lastKnown = createMemoryLastKnownStore();
  } else if (config.dataDir !== undefined) {
    try {
      const disk = await openLastKnownStore(join(config.dataDir, storeName), { logger });
      lastKnown =
        health === undefined ? disk : degradingLastKnownStore(disk, createMemoryLastKnownStore(), health);
    } catch (err) {
      health?.failed('last-known database', err);
      logger.warn(
        { component: storeName, err: (err as Error).message, dataDir: config.dataDir },
        'LAST-KNOWN DATABASE UNAVAILABLE: tag digests are kept in memory only (bounded) and lost on restart',
      );
      lastKnown = createMemoryLastKnownStore();
    }
  } else {
    logger.warn(
      { component: storeName },
      'no --data-dir: last-known tag digests are kept in memory and will not survive a restart',
    );
    lastKnown = createMemoryLastKnownStore();
  }
  const upstream = createUpstreamClient({
    timeoutMs: config.upstreamTimeout,
    mirroredRegistries: config.mirroredRegistries,
    endpoints: { ...config.upstreamEndpoints },
    ...(credentials === undefined ? {} : { credentials }),
  });
  return {
    upstream,
    lastKnown,
    async close() {
      await upstream.close().catch(() => undefined);
      await lastKnown.close();
    },
  };
}
