/**
 * @ferry/oci: pure OCI helpers (no I/O): references, digests, media types, manifest walking,
 * OCI error bodies, Range parsing and registry API paths; `abortable` for deadlines.
 */
export { abortable } from './abort.ts';
export { isDigest, type ParsedDigest, parseDigest } from './digest.ts';
export {
  errorBody,
  errorStatus,
  OciError,
  type OciErrorBody,
  type OciErrorCode,
  publicMessage,
} from './errors.ts';
export { type Descriptor, type ParsedManifest, parseManifest } from './manifest.ts';
export {
  baseMediaType,
  fingerprintMediaType,
  isIndexMediaType,
  isManifestMediaType,
  MediaTypes,
  manifestAcceptTypes,
} from './media-types.ts';
export { type DistributionRequest, parseDistributionPath } from './path.ts';
export { type ByteRange, contentRange, parseRange, unsatisfiedContentRange } from './range.ts';
export {
  formatReference,
  isValidRegistry,
  isValidRepository,
  isValidTag,
  NAME_MAX_LENGTH,
  parseReference,
  type Reference,
  tagKey,
} from './reference.ts';
export {
  DOCKER_HUB,
  DOCKER_HUB_ENDPOINT,
  endpointsOf,
  firstHeader,
  hostPort,
  isWildcardRegistry,
  normalizeRegistry,
  registryEndpoint,
} from './registries.ts';
