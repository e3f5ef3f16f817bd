import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
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
