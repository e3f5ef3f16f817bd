export {
  type Adversary,
  type AdversaryOptions,
  type AdversaryRequest,
  type BlobLie,
  startAdversary,
  type TagLie,
} from './adversary.ts';
export {
  AGENT_PORTS,
  type AgentHandle,
  type AgentRigOptions,
  ferryCli,
  parsePrometheus,
  startAgent,
} from './agent.ts';
export {
  type AuthRegistryHandle,
  type AuthRegistryOptions,
  libtrustKeyId,
  startAuthRegistry,
  type TokenRequestRecord,
} from './auth-registry.ts';
export { chartEnv, imageNodeArgs } from './chart-env.ts';
export { type Cluster, type ClusterNode, type ClusterOptions, startCluster } from './cluster.ts';
export {
  type ContainerdHandle,
  type ContainerdRigOptions,
  overlaySupported,
  type PullOptions,
  startContainerd,
} from './containerd.ts';
export { type Cleanup, type Daemon, spawnDaemon } from './daemon.ts';
export {
  type BuildImageOptions,
  type BuiltImage,
  type BuiltIndex,
  buildImage,
  buildIndex,
  type LayerBlob,
  type MemoryBlob,
  nodePlatform,
  type Platform,
  type PushOptions,
  type PushResult,
  pushImage,
} from './images.ts';
export { type AddressBlock, allocateBlock, type WaitOptions, waitFor, waitForPort } from './net.ts';
export { type RegistryHandle, type RegistryOptions, startRegistry } from './registry.ts';
export {
  type ProxiedBlob,
  type ShapingProxyHandle,
  type ShapingProxyOptions,
  startShapingProxy,
} from './shaping-proxy.ts';
