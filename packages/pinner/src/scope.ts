/**
 * Which pods and references the pinner touches. The namespace label is the webhook's
 * `namespaceSelector` (the API server never calls the pinner for other namespaces); this decides the rest.
 * Pure: no I/O.
 */

/** The pod annotation that opts a pod out: `ferry.dev/pin: "false"`. */
export const OPT_OUT_ANNOTATION = 'ferry.dev/pin';
/** The annotation the pinner writes: JSON `{ "<image as written>": { "digest", "source" } }`. */
export const PINNED_ANNOTATION = 'ferry.dev/pinned';

/** Options of createScope. */
export interface ScopeOptions {
  /** Regexes over `<registry>/<repo>:<tag>` (normalised): only matching references are pinned. Empty: all. */
  include?: readonly string[];
  /** Regexes over `<registry>/<repo>:<tag>`: matching references are never pinned (wins over include). */
  exclude?: readonly string[];
  /** Ferry's own namespace: its pods are never pinned (they must start while the pinner is down). */
  namespace?: string;
}

/** Why a whole pod is left alone. */
export type PodSkip = 'own-namespace' | 'opted-out';

/** The scope rules. */
export interface Scope {
  /** Undefined when the pod is in scope; else why not. */
  skipPod(
    namespace: string | undefined,
    annotations: Readonly<Record<string, unknown>> | undefined,
  ): PodSkip | undefined;
  /** True when a reference key `<registry>/<repo>:<tag>` is to be pinned. */
  includes(key: string): boolean;
}

function compile(patterns: readonly string[] | undefined, what: string): RegExp[] {
  return (patterns ?? []).map((p) => {
    try {
      return new RegExp(p);
    } catch (err) {
      throw new Error(`invalid ${what} pattern ${JSON.stringify(p)}: ${(err as Error).message}`);
    }
  });
}

/** Builds the scope; throws an Error naming a pattern that is not a valid regex. */
export function createScope(opts: ScopeOptions = {}): Scope {
  const include = compile(opts.include, 'include');
  const exclude = compile(opts.exclude, 'exclude');
  const own = opts.namespace?.trim() || undefined;
  return {
    skipPod(namespace, annotations) {
      if (own !== undefined && namespace === own) return 'own-namespace';
      const v = annotations?.[OPT_OUT_ANNOTATION];
      if (typeof v === 'string' && ['false', 'no', 'off', '0', 'disabled'].includes(v.trim().toLowerCase())) {
        return 'opted-out';
      }
      return undefined;
    },
    includes(key) {
      if (exclude.some((r) => r.test(key))) return false;
      return include.length === 0 || include.some((r) => r.test(key));
    },
  };
}
