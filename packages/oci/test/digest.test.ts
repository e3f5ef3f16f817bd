import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isDigest, OciError, parseDigest } from '../src/index.ts';

const H256 = '0123456789abcdef'.repeat(4);
const H512 = H256 + H256;

test('parses sha256 and sha512 digests', () => {
  assert.deepEqual(parseDigest(`sha256:${H256}`), {
    algorithm: 'sha256',
    hex: H256,
    digest: `sha256:${H256}`,
  });
  assert.deepEqual(parseDigest(`sha512:${H512}`), {
    algorithm: 'sha512',
    hex: H512,
    digest: `sha512:${H512}`,
  });
  assert.equal(isDigest(`sha256:${H256}`), true);
  assert.equal(isDigest(`sha512:${H512}`), true);
});

test('rejects bad digests with DIGEST_INVALID 400', () => {
  const bad = [
    '',
    H256,
    `sha256:${H256.slice(1)}`,
    `sha256:${H256}0`,
    `sha256:${H256.toUpperCase()}`,
    `sha512:${H256}`,
    `sha256:${H512}`,
    `md5:${H256.slice(0, 32)}`,
    `sha384:${'a'.repeat(96)}`,
    `SHA256:${H256}`,
    `sha256:${H256.slice(1)}g`,
    ` sha256:${H256}`,
    `sha256:${H256}\n`,
    'sha256:',
  ];
  for (const s of bad) {
    assert.equal(isDigest(s), false, s);
    assert.throws(
      () => parseDigest(s),
      (e: unknown) => e instanceof OciError && e.code === 'DIGEST_INVALID' && e.status === 400,
      s,
    );
  }
});

test('non-string input is rejected, not crashed on', () => {
  assert.equal(isDigest(undefined as unknown as string), false);
  assert.throws(() => parseDigest(42 as unknown as string), OciError);
});
