import type { TagMode } from '@ferry/interface';
import { normalizeRegistry } from '@ferry/oci';

/** The tag modes, in the order the docs list them. */
export const TAG_MODES: readonly TagMode[] = Object.freeze(['cluster', 'upstream', 'verify']);

/** One tag rule: a regular expression over `<registry>/<repo>:<tag>` and the mode for matching tags. */
export interface TagRule {
  pattern: string;
  mode: TagMode;
}

/** Options for {@link createRefPolicy}. */
export interface RefPolicyOptions {
  /**
   * Answer tag (manifest by tag) requests from the cluster at all. Default true. False (Spegel's
   * `resolveTags: false`): every tag is in mode `upstream`, whatever `tagPolicy` says.
   */
  resolveTags?: boolean;
  /**
   * Regular expressions matched against `<registry>/<repo>` (digest requests) or
   * `<registry>/<repo>:<tag>` (tag requests). A match: never mirrored, never advertised.
   */
  registryFilters?: string[];
  /** Registries that are mirrored: hosts ('docker.io', 'ghcr.io', 'localhost:5000'; an http(s):// prefix is ignored, names are normalised). Empty or absent: all. */
  mirroredRegistries?: string[];
  /** Ordered tag rules; the first whose pattern matches `<registry>/<repo>:<tag>` gives the mode. */
  tagPolicy?: readonly TagRule[];
  /** Mode of tags no rule matches. Default 'verify'. */
  defaultTagMode?: TagMode;
}

/** Decides which references Ferry answers and advertises, and how tags are resolved. */
export interface RefPolicy {
  /**
   * True when `registry/repo[:tag]` may be served from (and advertised to) the cluster: not filtered,
   * a mirrored registry, and for a tag a mode other than `upstream`.
   */
  allows(registry: string, repository: string, tag?: string): boolean;
  /** The mode of a tag (the first matching rule, else the default mode). Ignores filters. */
  modeFor(registry: string, repository: string, tag: string): TagMode;
}

/** True for 'cluster', 'upstream' and 'verify'. */
export function isTagMode(s: unknown): s is TagMode {
  return typeof s === 'string' && (TAG_MODES as readonly string[]).includes(s);
}

/**
 * Parses a rule written `pattern=mode` (split at the last `=`, so patterns may contain `=`), e.g.
 * `:latest$=upstream`. Throws a TypeError saying what is wrong.
 */
export function parseTagRule(input: string): TagRule {
  const at = input.lastIndexOf('=');
  if (at < 0)
    throw new TypeError(`tag rule ${JSON.stringify(input)}: expected pattern=mode, e.g. ":latest$=upstream"`);
  const pattern = input.slice(0, at).trim();
  const mode = input
    .slice(at + 1)
    .trim()
    .toLowerCase();
  if (pattern === '') throw new TypeError(`tag rule ${JSON.stringify(input)}: empty pattern`);
  if (!isTagMode(mode))
    throw new TypeError(
      `tag rule ${JSON.stringify(input)}: mode must be one of ${TAG_MODES.join(', ')}, got ${JSON.stringify(mode)}`,
    );
  compile(pattern, 'tagPolicy');
  return { pattern, mode };
}

function compile(pattern: string, what: string): RegExp {
  try {
    return new RegExp(pattern);
  } catch (err) {
    throw new TypeError(`invalid ${what} pattern ${JSON.stringify(pattern)}: ${(err as Error).message}`);
  }
}

/** Builds a {@link RefPolicy}. Throws a TypeError naming the pattern or mode that is not valid. */
export function createRefPolicy(options: RefPolicyOptions = {}): RefPolicy {
  const resolveTags = options.resolveTags ?? true;
  const filters = (options.registryFilters ?? []).map((p) => compile(p, 'registryFilters'));
  const defaultMode = options.defaultTagMode ?? 'verify';
  if (!isTagMode(defaultMode))
    throw new TypeError(`defaultTagMode must be one of ${TAG_MODES.join(', ')}, got ${String(defaultMode)}`);
  const rules = (options.tagPolicy ?? []).map((r) => {
    if (!isTagMode(r.mode))
      throw new TypeError(
        `tagPolicy rule ${JSON.stringify(r.pattern)}: mode must be one of ${TAG_MODES.join(', ')}, got ${String(r.mode)}`,
      );
    return { re: compile(r.pattern, 'tagPolicy'), mode: r.mode };
  });
  const registries = new Set(
    (options.mirroredRegistries ?? []).map((r) =>
      normalizeRegistry(r.replace(/^https?:\/\//, '').replace(/\/+$/, '')),
    ),
  );
  const modeFor = (registry: string, repository: string, tag: string): TagMode => {
    if (!resolveTags) return 'upstream';
    const ref = `${registry}/${repository}:${tag}`;
    for (const r of rules) if (r.re.test(ref)) return r.mode;
    return defaultMode;
  };
  return {
    modeFor,
    allows(registry, repository, tag) {
      if (registries.size > 0 && !registries.has(registry)) return false;
      const ref = tag === undefined ? `${registry}/${repository}` : `${registry}/${repository}:${tag}`;
      for (const re of filters) if (re.test(ref)) return false;
      if (tag !== undefined && modeFor(registry, repository, tag) === 'upstream') return false;
      return true;
    },
  };
}
