export type { InflightDirectory } from './inflight.ts';
export { copyKey, electionKey, fetchKey, Inflight, rank } from './inflight.ts';
export type {
  MemoryContentSource,
  MemoryContentSourceOptions,
  MemoryRouter,
  MemoryTagStore,
} from './memory.ts';
export { createMemoryContentSource, createMemoryRouter, createMemoryTagStore } from './memory.ts';
export { MIRRORED_HEADER } from './mirror.ts';
export type {
  RegistryObserver,
  RegistryPluginOptions,
  RegistryRequestEvent,
  RequestOutcome,
  TagEvent,
  TagOutcome,
  TagResolverOptions,
} from './plugin.ts';
export { isLoopback, registry } from './plugin.ts';
export type { RefPolicy, RefPolicyOptions, TagRule } from './policy.ts';
export { createRefPolicy, isTagMode, parseTagRule, TAG_MODES } from './policy.ts';
export type {
  PullTarget,
  PullThroughObserver,
  PullThroughOptions,
  TransferInfo,
} from './pull-through.ts';
export { PullThrough } from './pull-through.ts';
export type { RegistryServerOptions } from './server.ts';
export { createRegistryServer } from './server.ts';
export { Spool, SpoolEntry, SpoolError, type SpoolOptions, type SpoolState } from './spool.ts';
export { RESOLVED_AT_HEADER } from './tags.ts';
export type { ContentInfo, ContentSource, TagRecordStore } from './types.ts';
