import { OciError } from './errors.ts';

/** A validated content digest. */
export interface ParsedDigest {
  /** Hash algorithm. */
  algorithm: 'sha256' | 'sha512';
  /** Lower-case hex of the hash (64 or 128 characters). */
  hex: string;
  /** The whole digest, `<algorithm>:<hex>`. */
  digest: string;
}

const DIGEST_RE = /^(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$/;

/**
 * Parses and validates a digest (`sha256:` + 64 hex or `sha512:` + 128 hex, lower case, as the
 * OCI image spec requires). Throws OciError DIGEST_INVALID (400) otherwise.
 */
export function parseDigest(s: string): ParsedDigest {
  if (typeof s !== 'string' || !DIGEST_RE.test(s)) {
    throw new OciError('DIGEST_INVALID', `invalid digest ${JSON.stringify(shorten(s))}`);
  }
  const colon = s.indexOf(':');
  return { algorithm: s.slice(0, colon) as ParsedDigest['algorithm'], hex: s.slice(colon + 1), digest: s };
}

/** True when `s` is a valid sha256/sha512 digest. */
export function isDigest(s: string): boolean {
  return typeof s === 'string' && DIGEST_RE.test(s);
}

/** Keeps error messages short when the input is huge. */
export function shorten(s: unknown, max = 200): unknown {
  return typeof s === 'string' && s.length > max ? `${s.slice(0, max)}…` : s;
}
