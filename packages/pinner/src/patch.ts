/** JSONPatch (RFC 6902) building for the admission response. Pure: no I/O. */

/** One RFC 6902 operation (the pinner only adds and replaces). */
export interface PatchOperation {
  op: 'add' | 'replace';
  path: string;
  value: unknown;
}

/** Escapes one JSON pointer token (RFC 6901): `~` → `~0`, `/` → `~1` (in that order). */
export function escapePointerToken(token: string): string {
  return token.replaceAll('~', '~0').replaceAll('/', '~1');
}

/** A JSON pointer from unescaped tokens: ['metadata', 'annotations', 'ferry.dev/pinned'] → '/metadata/annotations/ferry.dev~1pinned'. */
export function pointer(tokens: readonly string[]): string {
  return tokens.map((t) => `/${escapePointerToken(t)}`).join('');
}

/** What the patch sets. */
export interface PatchInput {
  /** Image fields to replace: their pointer tokens and the new value. */
  replacements: { path: readonly string[]; value: string }[];
  /** Annotations to set (added or overwritten). */
  annotations?: Record<string, string>;
  /** The object's current metadata (to know whether `/metadata` and `/metadata/annotations` exist). */
  metadata: unknown;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * Builds the patch: one `replace` per image, then the annotations. `add` on a missing map fails, so an
 * absent `/metadata/annotations` (or `/metadata`) is created first, with the annotations in it.
 */
export function buildPatch(input: PatchInput): PatchOperation[] {
  const ops: PatchOperation[] = input.replacements.map((r) => ({
    op: 'replace',
    path: pointer(r.path),
    value: r.value,
  }));
  const annotations = input.annotations ?? {};
  if (Object.keys(annotations).length === 0) return ops;
  if (!isRecord(input.metadata)) {
    ops.push({ op: 'add', path: '/metadata', value: { annotations: { ...annotations } } });
  } else if (!isRecord(input.metadata.annotations)) {
    ops.push({ op: 'add', path: '/metadata/annotations', value: { ...annotations } });
  } else {
    // `add` on an existing member replaces it (RFC 6902 4.1), so it works whether or not the key exists.
    for (const [k, v] of Object.entries(annotations)) {
      ops.push({ op: 'add', path: pointer(['metadata', 'annotations', k]), value: v });
    }
  }
  return ops;
}

/** Applies add/replace operations to a JSON value (a copy): used by tests and to check our own patches. */
export function applyPatch<T>(doc: T, ops: readonly PatchOperation[]): T {
  const root = structuredClone(doc) as unknown;
  for (const op of ops) {
    const tokens = op.path
      .split('/')
      .slice(1)
      .map((t) => t.replaceAll('~1', '/').replaceAll('~0', '~'));
    const last = tokens.pop();
    if (last === undefined) throw new Error(`cannot ${op.op} the root`);
    let target: unknown = root;
    for (const t of tokens) {
      target = (target as Record<string, unknown>)?.[t];
      if (typeof target !== 'object' || target === null) throw new Error(`path ${op.path} does not exist`);
    }
    const container = target as Record<string, unknown> | unknown[];
    if (op.op === 'replace' && !(last in container)) throw new Error(`path ${op.path} does not exist`);
    if (Array.isArray(container)) container[Number(last)] = op.value;
    else container[last] = op.value;
  }
  return root as T;
}
