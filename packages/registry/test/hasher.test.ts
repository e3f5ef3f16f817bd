import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { appendFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { HashWorker } from '../src/hasher.ts';

test('the hash worker digests entries in order, several at once, like createHash; after it stops, hashing goes on in the thread', async () => {
  const w = new HashWorker();
  const a = randomBytes(20 * 1024 * 1024 + 5);
  const b = randomBytes(300_000);
  const ha = w.hasher('sha256');
  const hb = w.hasher('sha256');
  for (let off = 0; off < a.length; off += 1 << 20) {
    await ha.update(a.subarray(off, off + (1 << 20)));
    if (off < b.length) await hb.update(b.subarray(off, off + (1 << 20)));
  }
  assert.equal(await ha.digest(), createHash('sha256').update(a).digest('hex'));
  assert.equal(await hb.digest(), createHash('sha256').update(b).digest('hex'));
  // An entry still hashing when the worker stops fails; later entries hash in the thread.
  const pending = w.hasher('sha256');
  await pending.update(b);
  await w.close();
  await assert.rejects(pending.digest());
  const after = w.hasher('sha256');
  await after.update(b);
  assert.equal(await after.digest(), createHash('sha256').update(b).digest('hex'));
});

test('updates of any size are gathered into batches and hash like createHash; one larger than a batch too', async () => {
  const w = new HashWorker();
  const data = randomBytes(3 * 1024 * 1024 + 777);
  const h = w.hasher('sha256');
  // Odd sizes that straddle batch boundaries, then one update larger than a batch.
  let off = 0;
  for (const n of [1, 65_535, 1_000_003, 7]) {
    await h.update(data.subarray(off, off + n));
    off += n;
  }
  await h.update(data.subarray(off));
  assert.equal(await h.digest(), createHash('sha256').update(data).digest('hex'));
  const empty = w.hasher('sha256');
  assert.equal(await empty.digest(), createHash('sha256').digest('hex'));
  await w.close();
});

test('a file hasher reads what was appended to the file and hashes like createHash; a missing file fails the entry; after the worker stops, it hashes in the thread', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'ferry-hasher-'));
  try {
    const w = new HashWorker();
    const data = randomBytes(9 * 1024 * 1024 + 3);
    const path = join(dir, 'a');
    writeFileSync(path, '');
    const h = w.fileHasher('sha256', path);
    for (let off = 0; off < data.length; ) {
      const n = Math.min(data.length - off, 700_001);
      appendFileSync(path, data.subarray(off, off + n));
      await h.advance(n);
      off += n;
    }
    assert.equal(await h.digest(), createHash('sha256').update(data).digest('hex'));
    // Bytes announced but not in the file (it was cut or removed): the entry fails, never a digest.
    const missing = w.fileHasher('sha256', join(dir, 'gone'));
    await missing.advance(10).catch(() => {});
    await assert.rejects(missing.digest());
    await w.close();
    const after = w.fileHasher('sha256', path);
    await after.advance(data.length);
    assert.equal(await after.digest(), createHash('sha256').update(data).digest('hex'));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
