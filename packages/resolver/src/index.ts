/**
 * @ferry/resolver: upstream tag resolution (anonymous, Basic and Bearer token auth, Docker config
 * credentials) and the last-known store (tag -> newest digest, LevelDB), shared by the registry's tag
 * policy and the pinner.
 */
export { type Challenge, parseChallenge } from './challenge.ts';
export {
  type Credential,
  decodeDockerConfig,
  loadDockerConfig,
  normalizeCredentialHost,
} from './credentials.ts';
export {
  createOutboundPolicy,
  isNonPublicAddress,
  type LookupAll,
  type OutboundPolicy,
  type OutboundPolicyOptions,
} from './outbound.ts';
export { createMemoryLastKnownStore, openLastKnownStore } from './store.ts';
export {
  checkResolution,
  DEFAULT_MAX_ENTRIES,
  isCurrent,
  MAX_PEER_CLOCK_SKEW_MS,
  mayRecord,
} from './store-rules.ts';
export type {
  ContentOutcome,
  DockerAuthEntry,
  DockerConfig,
  LastKnownStore,
  LastKnownStoreOptions,
  Resolution,
  UpstreamClient,
  UpstreamClientOptions,
  UpstreamOutcome,
  WarnLogger,
} from './types.ts';
export { createUpstreamClient, defaultEndpoint, endpointsFromUrls, UNREACHABLE } from './upstream.ts';
