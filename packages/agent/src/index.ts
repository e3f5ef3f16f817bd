/** @ferry/agent: configuration, hosts.toml configuration, tracker, metrics, ops server and the CLI. */
export {
  type AgentConfig,
  type AgentOptionDefinition,
  type AgentOptionName,
  addAgentOptions,
  agentOptions,
  ConfigError,
  type ConfigIssue,
  type ConfigSource,
  describeConfig,
  formatAddress,
  formatDuration,
  type ListenAddress,
  LOG_LEVELS,
  type LoadConfigIo,
  type LogLevel,
  loadAgentConfig,
  type OptionType,
  parseAddress,
  parseDuration,
  renderOptionsMarkdown,
  resolveAgentConfig,
  splitList,
  upstreamEndpointsOf,
} from './config.ts';
export {
  BACKUP_DIR,
  type CleanupResult,
  ConfigureError,
  type ConfigureOptions,
  type ConfigureResult,
  cleanupHosts,
  configureHosts,
  type HostsFileSpec,
  renderHostsToml,
  upstreamFor,
  writeFileAtomic,
} from './configure.ts';
export { createLogger, type Logger, type LoggerOptions } from './logger.ts';
export {
  createMetrics,
  createRequestObserver,
  type FerryMetrics,
  type MetricsOptions,
  type PeerFailureEvent,
  type RequestEvent,
  type RequestObserver,
  type RequestOutcome,
  recordTrackerCounts,
} from './metrics.ts';
export { createOpsServer, type OpsServerOptions, type Readiness } from './ops.ts';
export { isWildcardRegistry, parseRegistryUrl, type RegistryUrl, RegistryUrlError } from './registry-url.ts';
export { type AgentTagPolicy, createAgentTagPolicy, type TagPolicyConfig } from './tag-resolution.ts';
export {
  type Advertiser,
  type ContentRecord,
  createTracker,
  type ImageRecord,
  type ImageSnapshot,
  type ImageStore,
  type ReconcileResult,
  type Tracker,
  type TrackerCounts,
  type TrackerOptions,
  type TrackerPolicy,
  type TrackerSnapshot,
} from './tracker.ts';
