/**
 * The agent's tag policy: the RefPolicy (filters, mirrored registries, ordered tag rules) and what mode
 * `verify` needs — the upstream client (@ferry/resolver, endpoints from --mirrored-registries, credentials
 * from --upstream-credentials) and the last-known store (LevelDB in `<dataDir>/tags`, else in memory).
 */
import { join } from 'node:path';
import { createRefPolicy, type RefPolicy, type TagResolverOptions } from '@ferry/registry';
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
import type { Logger } from './logger.ts';

/** The configuration fields the tag policy reads. */
export type TagPolicyConfig = Pick<
  AgentConfig,
  | 'resolveTags'
  | 'registryFilters'
  | 'mirroredRegistries'
  | 'tagPolicy'
  | 'defaultTagMode'
  | 'upstreamTimeout'
  | 'upstreamCredentials'
  | 'upstreamEndpoints'
  | 'dataDir'
>;

/** The running tag policy. */
export interface AgentTagPolicy {
  /** For the registry (filters) and the tracker (which tag keys to advertise). */
  readonly policy: RefPolicy;
  /** The registry plugin's `tags` option. */
  readonly tags: TagResolverOptions;
  readonly upstream: UpstreamClient;
  readonly lastKnown: LastKnownStore;
  /** Closes the upstream client and the store. */
  close(): Promise<void>;
}

/** Builds the policy, opens the store, loads credentials. Rejects with a clear error (bad credentials file, DB locked). */
export async function createAgentTagPolicy(
  config: TagPolicyConfig,
  logger: Pick<Logger, 'warn' | 'info'>,
): Promise<AgentTagPolicy> {
  const policy = createRefPolicy({
    resolveTags: config.resolveTags,
    registryFilters: [...config.registryFilters],
    mirroredRegistries: [...config.mirroredRegistries],
    tagPolicy: [...config.tagPolicy],
    defaultTagMode: config.defaultTagMode,
  });
  let credentials: DockerConfig | undefined;
  if (config.upstreamCredentials !== undefined) {
    credentials = await loadDockerConfig(config.upstreamCredentials);
    logger.info(
      { file: config.upstreamCredentials, registries: Object.keys(credentials.auths ?? {}) },
      'upstream credentials loaded',
    );
  }
  let lastKnown: LastKnownStore;
  if (config.dataDir !== undefined) {
    try {
      lastKnown = await openLastKnownStore(join(config.dataDir, 'tags'), { logger });
    } catch (err) {
      // A cache never stops the mirror: an unwritable or full data dir keeps last-known digests in memory.
      logger.warn(
        { component: 'tags', err: (err as Error).message, dataDir: config.dataDir },
        'LAST-KNOWN DATABASE UNAVAILABLE: tag digests are kept in memory only (bounded) and lost on restart',
      );
      lastKnown = createMemoryLastKnownStore();
    }
  } else {
    logger.warn(
      { component: 'tags' },
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
    policy,
    upstream,
    lastKnown,
    tags: {
      modeFor: (registry, repository, tag) => policy.modeFor(registry, repository, tag),
      upstream,
      // The store applies the trust rules itself (a refused peer answer is not an error here).
      lastKnown: {
        get: (registry, repository, tag) => lastKnown.get(registry, repository, tag),
        record: async (r) => {
          await lastKnown.record(r);
        },
      },
      upstreamTimeoutMs: config.upstreamTimeout,
    },
    async close() {
      await upstream.close().catch(() => undefined);
      await lastKnown.close();
    },
  };
}
