import { normalizeRegistry } from '@ferry/oci';

/** Options for {@link createRefPolicy}. */
export interface RefPolicyOptions {
  /** Answer tag (manifest by tag) requests from the cluster at all. Default true. */
  resolveTags?: boolean;
  /**
   * Regular expressions matched against `<registry>/<repo>` (digest requests) or
   * `<registry>/<repo>:<tag>` (tag requests). A match: never mirrored, never advertised.
   */
  registryFilters?: string[];
  /** Registries that are mirrored: hosts ('docker.io', 'ghcr.io', 'localhost:5000'; an http(s):// prefix is ignored, names are normalised). Empty or absent: all. */
  mirroredRegistries?: string[];
}

/** Decides which references Ferry answers and advertises. */
export interface RefPolicy {
  /** True when `registry/repo[:tag]` may be served from (and advertised to) the cluster. */
  allows(registry: string, repository: string, tag?: string): boolean;
}

/** Builds a {@link RefPolicy}. Throws a TypeError naming the pattern when a filter is not a valid regex. */
export function createRefPolicy(options: RefPolicyOptions = {}): RefPolicy {
  const resolveTags = options.resolveTags ?? true;
  const filters = (options.registryFilters ?? []).map((pattern) => {
    try {
      return new RegExp(pattern);
    } catch (err) {
      throw new TypeError(
        `invalid registryFilters pattern ${JSON.stringify(pattern)}: ${(err as Error).message}`,
      );
    }
  });
  const registries = new Set(
    (options.mirroredRegistries ?? []).map((r) =>
      normalizeRegistry(r.replace(/^https?:\/\//, '').replace(/\/+$/, '')),
    ),
  );
  return {
    allows(registry, repository, tag) {
      if (tag !== undefined && !resolveTags) return false;
      if (registries.size > 0 && !registries.has(registry)) return false;
      const ref = tag === undefined ? `${registry}/${repository}` : `${registry}/${repository}:${tag}`;
      for (const re of filters) if (re.test(ref)) return false;
      return true;
    },
  };
}
