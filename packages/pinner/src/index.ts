/**
 * @ferry/pinner: the mutating admission webhook that pins pods' images to digests (upstream, then the
 * last-known database, then the cluster), and its HTTPS server.
 */
export {
  CONTAINER_LISTS,
  type ContainerList,
  changedImageSites,
  collectImageSites,
  type ImageSite,
  type NotPinnable,
  type PinnableRef,
  pinnableRef,
  pinnedImage,
} from './images.ts';
export {
  createPinnerMetrics,
  type PinnerErrorReason,
  type PinnerMetrics,
  type PinSource,
} from './metrics.ts';
export {
  applyPatch,
  buildPatch,
  escapePointerToken,
  type PatchInput,
  type PatchOperation,
  pointer,
} from './patch.ts';
export {
  createPinner,
  type PinnedAnnotation,
  type PinnedResolution,
  type Pinner,
  type PinnerLogger,
  type PinnerOptions,
  type ReviewResult,
} from './pinner.ts';
export {
  createTagResolver,
  type ResolveOptions,
  type TagAnswer,
  type TagRef,
  type TagResolver,
  type TagResolverOptions,
} from './resolve.ts';
export {
  createScope,
  OPT_OUT_ANNOTATION,
  PINNED_ANNOTATION,
  type PodSkip,
  type Scope,
  type ScopeOptions,
} from './scope.ts';
export { createPinnerServer, type PinnerServer, type PinnerServerOptions } from './server.ts';
