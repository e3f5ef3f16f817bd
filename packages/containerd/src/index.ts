export { createContainerdClient, decodeEnvelope, parseCriConfig, protoDir } from './client.ts';
export { checkCriConfig } from './cri.ts';
export type { ContainerdErrorCode } from './errors.ts';
export { ContainerdError, isNotFound, NotFoundError, UnavailableError } from './errors.ts';
export type * from './types.ts';
export type { ResyncReason, Watcher, WatcherOptions } from './watcher.ts';
export { createWatcher, defaultFilters } from './watcher.ts';
