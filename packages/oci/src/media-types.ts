/** Media types Ferry knows by name. */
export const MediaTypes = {
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  ociConfig: 'application/vnd.oci.image.config.v1+json',
  ociLayer: 'application/vnd.oci.image.layer.v1.tar',
  ociLayerGzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  ociLayerZstd: 'application/vnd.oci.image.layer.v1.tar+zstd',
  ociEmpty: 'application/vnd.oci.empty.v1+json',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerManifestList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  dockerConfig: 'application/vnd.docker.container.image.v1+json',
  dockerLayerGzip: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
  dockerForeignLayer: 'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip',
} as const;

/** The four manifest/index types, for `Accept` headers (indexes first). */
export const manifestAcceptTypes: string[] = [
  MediaTypes.ociIndex,
  MediaTypes.dockerManifestList,
  MediaTypes.ociManifest,
  MediaTypes.dockerManifest,
];

const INDEX_TYPES = new Set<string>([MediaTypes.ociIndex, MediaTypes.dockerManifestList]);
const MANIFEST_TYPES = new Set<string>([MediaTypes.ociManifest, MediaTypes.dockerManifest, ...INDEX_TYPES]);

/** A media type without parameters (`; charset=…`), trimmed and lower case. */
export function baseMediaType(mt: string): string {
  const semi = mt.indexOf(';');
  return (semi === -1 ? mt : mt.slice(0, semi)).trim().toLowerCase();
}

/** True for the OCI/Docker image manifest and index (manifest list) types; parameters are ignored. */
export function isManifestMediaType(mt: string): boolean {
  return typeof mt === 'string' && MANIFEST_TYPES.has(baseMediaType(mt));
}

/** True for the OCI index and the Docker manifest list; parameters are ignored. */
export function isIndexMediaType(mt: string): boolean {
  return typeof mt === 'string' && INDEX_TYPES.has(baseMediaType(mt));
}

/**
 * Parses bytes as a JSON object, or returns undefined when they are not one. Cheap on non-JSON
 * content: the first non-blank byte must be '{'.
 */
export function parseJsonObject(bytes: Uint8Array): Record<string, unknown> | undefined {
  let i = 0;
  // skip a UTF-8 BOM and JSON whitespace
  if (bytes[0] === 0xef && bytes[1] === 0xbb && bytes[2] === 0xbf) i = 3;
  while (
    i < bytes.length &&
    (bytes[i] === 0x20 || bytes[i] === 0x09 || bytes[i] === 0x0a || bytes[i] === 0x0d)
  )
    i++;
  if (bytes[i] !== 0x7b) return undefined;
  let value: unknown;
  try {
    value = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes.subarray(i)));
  } catch {
    return undefined;
  }
  return isObject(value) ? value : undefined;
}

/** True for a plain JSON object (not null, not an array). */
export function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * Guesses the media type of stored content (containerd keeps none). A JSON object with a string
 * `mediaType` -> that; otherwise by shape: `manifests[]` -> OCI index; `config` + `layers[]` -> OCI
 * manifest; anything else (configs, layers, non-JSON) -> undefined.
 */
export function fingerprintMediaType(bytes: Uint8Array): string | undefined {
  const json = parseJsonObject(bytes);
  if (!json) return undefined;
  if (typeof json.mediaType === 'string' && json.mediaType !== '') return json.mediaType;
  if (Array.isArray(json.manifests)) return MediaTypes.ociIndex;
  if (isObject(json.config) && Array.isArray(json.layers)) return MediaTypes.ociManifest;
  return undefined;
}
