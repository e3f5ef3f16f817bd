/** The shape of `/status` (JSON), which the status page renders, and how the agent's config maps onto it. */
import type { TrackerSnapshot } from '../tracker.ts';
import type { MirrorSummary, StatusRequest } from './history.ts';

/** The tag policy in force, as configured. */
export interface StatusPolicy {
  /** Tag requests are answered from the cluster. */
  resolveTags: boolean;
  /** Regexes over `<registry>/<repo>[:<tag>]` that are never mirrored nor advertised. */
  registryFilters: string[];
  /** Registries mirrored; empty: all. */
  mirroredRegistries: string[];
  /** Further tag-policy settings of the configuration (e.g. `tagPolicy` rules, `defaultTagMode`), by config key. */
  rules?: Record<string, unknown>;
}

/** One tag → digest resolution of the pinner (structurally the resolver's `Resolution`). */
export interface StatusResolution {
  registry: string;
  repository: string;
  tag: string;
  digest: string;
  /** When the upstream (originally) answered, ms since the epoch. */
  resolvedAt: number;
  /** Where the digest came from: 'upstream', 'last-known', 'local', 'peer'. */
  source: string;
}

/** The pinner's part of the status (absent when the pinner is not enabled). */
export interface StatusPinner {
  /** Newest first. */
  recent: StatusResolution[];
}

/** Everything `/status` answers and the status page shows. */
export interface StatusData {
  /** When this snapshot was taken (ISO 8601). */
  generatedAt: string;
  peerId: string;
  /** The router's announced multiaddrs. */
  addresses: string[];
  /** The router has peers (the DHT is usable). */
  ready: boolean;
  containerd: { connected: boolean; socket: string };
  /** Connected peers. */
  peers: { id: string; addresses: string[] }[];
  /** Tracked images and advertised keys. */
  tracker: TrackerSnapshot;
  /** The last registry requests, oldest first. */
  recentRequests: StatusRequest[];
  /** Counts, hit ratio and the last success. */
  mirror: MirrorSummary;
  policy: StatusPolicy;
  pinner?: StatusPinner;
  /** Pull-through transfers in flight (absent when first-pull sharing is off). */
  transfers?: StatusTransfer[];
}

/** One pull-through transfer in flight (structurally @ferry/registry's TransferInfo). */
export interface StatusTransfer {
  digest: string;
  registry: string;
  repository: string;
  size?: number;
  written: number;
  state: string;
  /** 'upstream' (this node fetches), a peer id (this node follows it) or 'electing'. */
  source: string;
  /** Peers streaming from this node's copy. */
  followers: string[];
  takeovers: number;
  startedAt: number;
}

const POLICY_KEYS = new Set(['resolveTags', 'registryFilters', 'mirroredRegistries']);

/**
 * The tag policy of an agent configuration: the three core settings, plus every other key whose name
 * mentions tags (`tagPolicy` rules, `defaultTagMode`, where the configuration has them).
 */
export function describePolicy(config: {
  resolveTags: boolean;
  registryFilters: readonly string[];
  mirroredRegistries: readonly string[];
}): StatusPolicy {
  const policy: StatusPolicy = {
    resolveTags: config.resolveTags,
    registryFilters: [...config.registryFilters],
    mirroredRegistries: [...config.mirroredRegistries],
  };
  const rules: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(config)) {
    if (!POLICY_KEYS.has(key) && /tag/i.test(key) && value !== undefined) rules[key] = value;
  }
  if (Object.keys(rules).length > 0) policy.rules = rules;
  return policy;
}
