import { createHash } from 'node:crypto';
import { CID } from 'multiformats/cid';
import * as raw from 'multiformats/codecs/raw';
import * as Digest from 'multiformats/hashes/digest';

/** Multihash codes (multicodec table) for the digest algorithms OCI uses. */
const SHA2_256 = 0x12;
const SHA2_512 = 0x13;

/** OCI digest grammar: `algorithm ":" encoded` (algorithm components joined by + . _ -). */
const DIGEST_SHAPE = /^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/;

const ALGORITHMS: Record<string, { code: number; hexLength: number }> = {
  sha256: { code: SHA2_256, hexLength: 64 },
  sha512: { code: SHA2_512, hexLength: 128 },
};

/** Thrown by {@link keyToCid} for an empty key or a malformed/unsupported digest. */
export class InvalidKeyError extends Error {
  override name = 'InvalidKeyError';
}

/**
 * True when `key` has the shape of a digest (`<algorithm>:<encoded>`), as opposed to a tag key
 * `<registry>/<repo>:<tag>` (which always contains a `/`).
 */
function looksLikeDigest(key: string): boolean {
  return !key.includes('/') && DIGEST_SHAPE.test(key);
}

/**
 * The DHT key for a Ferry key.
 *
 * - A digest `sha256:<hex>` (or `sha512:<hex>`): the digest bytes are used directly as the
 *   sha2-256 (sha2-512) multihash, wrapped as a CIDv1 with the raw codec, so the digest
 *   round-trips from the CID.
 * - Any other key (a tag key `<registry>/<repo>:<tag>`): sha2-256 of its UTF-8 bytes, CIDv1 raw.
 *
 * @throws InvalidKeyError for an empty key, or a digest with an unsupported algorithm or bad hex.
 */
export function keyToCid(key: string): CID {
  if (typeof key !== 'string' || key.length === 0) {
    throw new InvalidKeyError('key must be a non-empty string');
  }
  if (looksLikeDigest(key)) {
    const colon = key.indexOf(':');
    const algorithm = key.slice(0, colon);
    const hex = key.slice(colon + 1);
    const spec = ALGORITHMS[algorithm];
    if (spec === undefined) {
      throw new InvalidKeyError(`unsupported digest algorithm "${algorithm}" in "${key}" (sha256, sha512)`);
    }
    if (hex.length !== spec.hexLength || !/^[a-f0-9]+$/.test(hex)) {
      throw new InvalidKeyError(
        `invalid ${algorithm} digest "${key}": expected ${spec.hexLength} lowercase hex characters`,
      );
    }
    return CID.createV1(raw.code, Digest.create(spec.code, Buffer.from(hex, 'hex')));
  }
  const bytes = createHash('sha256').update(key, 'utf8').digest();
  return CID.createV1(raw.code, Digest.create(SHA2_256, bytes));
}
