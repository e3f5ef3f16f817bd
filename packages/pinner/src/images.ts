/**
 * Where a Pod names images, and how a reference is rewritten to `repo:tag@digest`.
 * Pure: no I/O.
 */
import { parseReference, type Reference } from '@ferry/oci';

/** The container lists of a Pod spec that carry an `image` field. */
export const CONTAINER_LISTS = ['initContainers', 'containers', 'ephemeralContainers'] as const;
export type ContainerList = (typeof CONTAINER_LISTS)[number];

/** One place in a Pod where an image reference is written. */
export interface ImageSite {
  /** JSON pointer tokens of the field, e.g. ['spec', 'containers', '0', 'image']. */
  path: string[];
  /** The reference as written in the Pod. */
  image: string;
  /** A stable identity for comparing the same site across an UPDATE: `containers/<name>` or `volumes/<name>`. */
  identity: string;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * Every image reference in a Pod: `spec.initContainers[].image`, `spec.containers[].image`,
 * `spec.ephemeralContainers[].image` and image volumes `spec.volumes[].image.reference`.
 * Entries that are not objects or whose image is not a non-empty string are skipped.
 */
export function collectImageSites(pod: unknown): ImageSite[] {
  const out: ImageSite[] = [];
  if (!isRecord(pod) || !isRecord(pod.spec)) return out;
  const spec = pod.spec;
  for (const list of CONTAINER_LISTS) {
    const items = spec[list];
    if (!Array.isArray(items)) continue;
    items.forEach((c, i) => {
      if (!isRecord(c) || typeof c.image !== 'string' || c.image === '') return;
      const name = typeof c.name === 'string' ? c.name : `#${i}`;
      out.push({ path: ['spec', list, String(i), 'image'], image: c.image, identity: `${list}/${name}` });
    });
  }
  if (Array.isArray(spec.volumes)) {
    spec.volumes.forEach((v, i) => {
      if (!isRecord(v) || !isRecord(v.image)) return;
      const ref = v.image.reference;
      if (typeof ref !== 'string' || ref === '') return;
      const name = typeof v.name === 'string' ? v.name : `#${i}`;
      out.push({
        path: ['spec', 'volumes', String(i), 'image', 'reference'],
        image: ref,
        identity: `volumes/${name}`,
      });
    });
  }
  return out;
}

/**
 * The sites of an UPDATE whose image differs from the old object's image at the same identity
 * (container or volume name). Unchanged images are never touched: rewriting them would restart containers.
 */
export function changedImageSites(pod: unknown, oldPod: unknown): ImageSite[] {
  const old = new Map(collectImageSites(oldPod).map((s) => [s.identity, s.image]));
  return collectImageSites(pod).filter((s) => old.get(s.identity) !== s.image);
}

/** A reference that can be pinned: a tag and no digest. */
export interface PinnableRef {
  /** The reference as written in the Pod. */
  image: string;
  /** Parsed and normalised (docker.io defaults applied). */
  ref: Reference & { tag: string };
  /** `<registry>/<repo>:<tag>`: what include/exclude patterns match and the store key. */
  key: string;
}

/** Why an image is not pinned without asking anyone. */
export type NotPinnable = { reason: 'digest' } | { reason: 'invalid'; message: string };

/** Parses a Pod image; a digest (with or without a tag) or an invalid reference is not pinnable. */
export function pinnableRef(image: string): PinnableRef | NotPinnable {
  let ref: Reference;
  try {
    ref = parseReference(image);
  } catch (err) {
    return { reason: 'invalid', message: (err as Error).message };
  }
  if (ref.digest !== undefined) return { reason: 'digest' };
  if (ref.tag === undefined) return { reason: 'invalid', message: `no tag in ${JSON.stringify(image)}` };
  return {
    image,
    ref: ref as Reference & { tag: string },
    key: `${ref.registry}/${ref.repository}:${ref.tag}`,
  };
}

/**
 * The pinned form of a reference as written: `<image>[:latest]@<digest>`. The spelling is kept
 * (`nginx:1.27` → `nginx:1.27@sha256:…`); an implicit `latest` is made explicit so the tag stays readable.
 */
export function pinnedImage(image: string, digest: string): string {
  const lastSlash = image.lastIndexOf('/');
  const hasTag = image.indexOf(':', lastSlash + 1) !== -1;
  return `${image}${hasTag ? '' : ':latest'}@${digest}`;
}
