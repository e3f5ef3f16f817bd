/**
 * The agent's tag policy: the RefPolicy (filters, mirrored registries, ordered tag rules) and what mode
 * `verify` needs — the upstream client and the last-known store (`<dataDir>/tags`), see upstream-deps.ts.
 */
import { createRefPolicy, type RefPolicy, type TagResolverOptions } from '@ferry/registry';
import type { LastKnownStore, UpstreamClient } from '@ferry/resolver';
import type { AgentConfig } from './config.ts';
import type { DataDirHealth } from './data-dir.ts';
import type { Logger } from './logger.ts';
import { openUpstreamDeps } from './upstream-deps.ts';

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
  /** The data dir's state: unwritable at start, the store stays in memory; a failed write degrades to it. */
  health?: DataDirHealth,
): Promise<AgentTagPolicy> {
  const policy = createRefPolicy({
    resolveTags: config.resolveTags,
    registryFilters: [...config.registryFilters],
    mirroredRegistries: [...config.mirroredRegistries],
    tagPolicy: [...config.tagPolicy],
    defaultTagMode: config.defaultTagMode,
  });
  const { upstream, lastKnown, close } = await openUpstreamDeps(config, 'tags', logger, health);
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
    close,
  };
}
