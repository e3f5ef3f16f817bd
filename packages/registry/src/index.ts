export type { MemoryContentSource, MemoryContentSourceOptions, MemoryRouter } from './memory.ts';
export { createMemoryContentSource, createMemoryRouter } from './memory.ts';
export { MIRRORED_HEADER } from './mirror.ts';
export type {
  RegistryObserver,
  RegistryPluginOptions,
  RegistryRequestEvent,
  RequestOutcome,
} from './plugin.ts';
export { registry } from './plugin.ts';
export type { RefPolicy, RefPolicyOptions } from './policy.ts';
export { createRefPolicy } from './policy.ts';
export type { RegistryServerOptions } from './server.ts';
export { createRegistryServer } from './server.ts';
export type { ContentInfo, ContentSource, Peer, Router } from './types.ts';
