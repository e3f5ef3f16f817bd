import { isDigest, shorten } from './digest.ts';
import { OciError } from './errors.ts';
import { defaultRepository, isValidRegistry, isValidRepository, isValidTag } from './reference.ts';
import { normalizeRegistry } from './registries.ts';

/** A registry API pull request, parsed from its path and `?ns=`. */
export interface DistributionRequest {
  /** Which endpoint. */
  kind: 'manifests' | 'blobs';
  /** From `?ns=` (normalised); when ns is absent: the `defaultRegistry` argument. */
  registry: string;
  /** Repository path; 'library/' added for single-component names on docker.io. */
  repository: string;
  /** Tag or digest as given in the path. */
  reference: string;
  /** Set when the reference is a tag (manifests only). */
  tag?: string;
  /** Set when the reference is a digest. */
  digest?: string;
}

const PATH_RE = /^\/v2\/(.+)\/(manifests|blobs)\/([^/]+)$/;

/**
 * Parses `/v2/<name>/(manifests|blobs)/<reference>` (a query string, if left on, is ignored).
 * `ns` is the upstream registry containerd adds to mirror requests; when absent or empty,
 * `defaultRegistry` (default 'docker.io') is used. Errors: not a pull path -> NAME_UNKNOWN 404;
 * bad name or bad ns -> NAME_INVALID 400; bad digest or a blob by tag -> DIGEST_INVALID 400;
 * bad tag -> TAG_INVALID 400.
 */
export function parseDistributionPath(
  path: string,
  ns: string | undefined,
  defaultRegistry = 'docker.io',
): DistributionRequest {
  const q = path.indexOf('?');
  const pathname = q === -1 ? path : path.slice(0, q);
  const m = PATH_RE.exec(pathname);
  if (!m)
    throw new OciError('NAME_UNKNOWN', `not a registry pull path: ${JSON.stringify(shorten(pathname))}`);
  const name = m[1]!;
  const kind = m[2] as DistributionRequest['kind'];
  let reference = m[3]!;
  if (reference.includes('%')) {
    try {
      reference = decodeURIComponent(reference);
    } catch {
      throw new OciError('NAME_UNKNOWN', `badly encoded reference ${JSON.stringify(shorten(reference))}`);
    }
  }
  if (!isValidRepository(name)) {
    throw new OciError('NAME_INVALID', `invalid repository name ${JSON.stringify(shorten(name))}`);
  }
  const rawRegistry = ns === undefined || ns === '' ? defaultRegistry : ns;
  if (!isValidRegistry(rawRegistry)) {
    throw new OciError('NAME_INVALID', `invalid registry (ns) ${JSON.stringify(shorten(rawRegistry))}`);
  }
  const registry = normalizeRegistry(rawRegistry);
  const repository = defaultRepository(registry, name);
  const req: DistributionRequest = { kind, registry, repository, reference };
  if (reference.includes(':')) {
    if (!isDigest(reference)) {
      throw new OciError('DIGEST_INVALID', `invalid digest ${JSON.stringify(shorten(reference))}`);
    }
    req.digest = reference;
  } else if (kind === 'blobs') {
    throw new OciError(
      'DIGEST_INVALID',
      `blobs are fetched by digest, got ${JSON.stringify(shorten(reference))}`,
    );
  } else {
    if (!isValidTag(reference)) {
      throw new OciError('TAG_INVALID', `invalid tag ${JSON.stringify(shorten(reference))}`);
    }
    req.tag = reference;
  }
  return req;
}
