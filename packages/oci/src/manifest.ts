import { isDigest, shorten } from './digest.ts';
import { OciError } from './errors.ts';
import {
  baseMediaType,
  fingerprintMediaType,
  isIndexMediaType,
  isManifestMediaType,
  isObject,
  parseJsonObject,
} from './media-types.ts';

/** A content descriptor, as found in manifests and indexes. */
export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  platform?: { os: string; architecture: string; variant?: string };
  annotations?: Record<string, string>;
}

/** A manifest or index reduced to what it references. */
export interface ParsedManifest {
  /** The document's media type (parameters removed). */
  mediaType: string;
  /** Index: its manifests. Manifest: config, then layers, then subject (if any). */
  children: Descriptor[];
  /** True for an OCI index or Docker manifest list. */
  isIndex: boolean;
}

function invalid(message: string, detail?: unknown): OciError {
  return new OciError('MANIFEST_INVALID', message, undefined, detail);
}

function toDescriptor(v: unknown, where: string): Descriptor {
  if (!isObject(v)) throw invalid(`${where}: descriptor is not an object`);
  const { mediaType, digest, size } = v;
  if (typeof mediaType !== 'string' || mediaType === '') throw invalid(`${where}: missing mediaType`);
  if (typeof digest !== 'string' || !isDigest(digest)) {
    throw invalid(`${where}: invalid digest ${JSON.stringify(shorten(digest))}`);
  }
  if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0) {
    throw invalid(`${where}: invalid size ${JSON.stringify(shorten(size))}`);
  }
  const d: Descriptor = { mediaType, digest, size };
  const p = v.platform;
  if (p !== undefined) {
    if (!isObject(p) || typeof p.os !== 'string' || typeof p.architecture !== 'string') {
      throw invalid(`${where}: platform needs string os and architecture`);
    }
    d.platform = { os: p.os, architecture: p.architecture };
    if (typeof p.variant === 'string') d.platform.variant = p.variant;
  }
  const a = v.annotations;
  if (a !== undefined) {
    if (!isObject(a) || !Object.values(a).every((x) => typeof x === 'string')) {
      throw invalid(`${where}: annotations must map strings to strings`);
    }
    d.annotations = { ...(a as Record<string, string>) };
  }
  return d;
}

/**
 * Parses an image manifest or index into the descriptors it references. The media type is the
 * document's own `mediaType`, else the `mediaType` argument (e.g. a Content-Type), else guessed
 * from its shape. Throws OciError MANIFEST_INVALID (400) on bad JSON, a non-manifest type, or a
 * malformed descriptor.
 */
export function parseManifest(bytes: Uint8Array, mediaType?: string): ParsedManifest {
  const json = parseJsonObject(bytes);
  if (!json) throw invalid('manifest is not a JSON object');
  let mt: string | undefined;
  if (typeof json.mediaType === 'string' && json.mediaType !== '') mt = json.mediaType;
  else if (mediaType !== undefined && isManifestMediaType(mediaType)) mt = mediaType;
  else mt = fingerprintMediaType(bytes);
  if (mt === undefined || !isManifestMediaType(mt)) {
    throw invalid(`not an image manifest or index (media type ${JSON.stringify(mt ?? null)})`);
  }
  mt = baseMediaType(mt);
  if (isIndexMediaType(mt)) {
    if (!Array.isArray(json.manifests)) throw invalid('index has no manifests array');
    return {
      mediaType: mt,
      isIndex: true,
      children: json.manifests.map((m, i) => toDescriptor(m, `manifests[${i}]`)),
    };
  }
  if (!Array.isArray(json.layers)) throw invalid('manifest has no layers array');
  const children = [toDescriptor(json.config, 'config')];
  json.layers.forEach((l, i) => {
    children.push(toDescriptor(l, `layers[${i}]`));
  });
  if (json.subject !== undefined && json.subject !== null)
    children.push(toDescriptor(json.subject, 'subject'));
  return { mediaType: mt, isIndex: false, children };
}
