import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readdir, rm, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { setTimeout as delay, setImmediate as tick } from 'node:timers/promises';
import { fill } from '../src/fill.ts';
import { Spool, SpoolError } from '../src/spool.ts';

const digestOf = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const plenty = async () => 1e15;

async function collect(it: AsyncIterable<Buffer>): Promise<Buffer> {
  const out: Buffer[] = [];
  for await (const c of it) out.push(c);
  return Buffer.concat(out);
}

async function tempSpool(t: { after(fn: () => unknown): void }, maxBytes = 1 << 30, freeBytes = plenty) {
  const dir = await mkdtemp(join(tmpdir(), 'ferry-spool-'));
  const spool = await Spool.open({ dir, maxBytes, freeBytes });
  t.after(async () => {
    await spool.close();
    await rm(dir, { recursive: true, force: true });
  });
  return { dir, spool };
}

test('readers stream the whole entry and ranges while it grows, waiting for bytes not yet written', async (t) => {
  const { spool } = await tempSpool(t);
  const data = randomBytes(3 * 1024 * 1024 + 17);
  const e = await spool.create(digestOf(data));
  const whole = collect(e.read());
  const tail = collect(e.read(data.length - 100, data.length - 1));
  const middle = collect(e.read(1_000_000, 2_500_000));
  await e.begin(data.length, 'application/octet-stream');
  for (let off = 0; off < data.length; off += 65_536) {
    await e.write(data.subarray(off, Math.min(data.length, off + 65_536)));
    await tick();
  }
  assert.equal(e.state, 'complete');
  assert.deepEqual(await whole, data);
  assert.deepEqual(await tail, data.subarray(data.length - 100));
  assert.deepEqual(await middle, data.subarray(1_000_000, 2_500_001));
  // A reader that starts after completion reads the file.
  assert.deepEqual(await collect(e.read(5, 9)), data.subarray(5, 10));
});

test('the final byte is released only after the digest is verified; wrong bytes fail every reader', async (t) => {
  const { spool } = await tempSpool(t);
  const good = randomBytes(4096);
  const e = await spool.create(digestOf(good));
  await e.begin(good.length, undefined);
  const got: Buffer[] = [];
  const reader = (async () => {
    for await (const c of e.read()) got.push(c);
  })();
  const bad = Buffer.from(good);
  bad[100] = (bad[100] as number) ^ 0xff;
  await e.write(bad.subarray(0, 4000));
  await tick();
  await e.write(bad.subarray(4000, 4095));
  // All but the last byte are out; the last one waits for the verification.
  const deadline = Date.now() + 5000;
  while (Buffer.concat(got).length < 4095 && Date.now() < deadline) await delay(5);
  await delay(20);
  assert.equal(Buffer.concat(got).length, 4095);
  await assert.rejects(e.write(bad.subarray(4095)), /digest mismatch/);
  await assert.rejects(reader, /digest mismatch/);
  assert.equal(Buffer.concat(got).length, 4095, 'no reader saw the final byte of wrong content');
  assert.equal(e.state, 'failed');
  assert.equal(spool.get(e.digest), undefined);
  assert.equal(spool.usedBytes, 0, 'a failed entry returns its reservation');
});

test('the size cap and the free disk space bound new entries', async (t) => {
  let free = 1e12;
  const { spool } = await tempSpool(t, 10_000, async () => free);
  const a = await spool.create(digestOf(Buffer.from('a')));
  await a.begin(6000, undefined);
  const b = await spool.create(digestOf(Buffer.from('b')));
  await assert.rejects(
    b.begin(6000, undefined),
    (err: Error) => err instanceof SpoolError && /spool full/.test(err.message),
  );
  assert.equal(b.state, 'failed');
  free = 1000;
  const c = await spool.create(digestOf(Buffer.from('c')));
  await assert.rejects(c.begin(100, undefined), /spool disk full/);
  await spool.remove(a);
  assert.equal(spool.usedBytes, 0);
});

test('a write that hits a full disk (ENOSPC) fails the entry with a clear error', async (t) => {
  const { dir, spool } = await tempSpool(t);
  // The next entry's file is /dev/full: every write fails with ENOSPC.
  await symlink('/dev/full', join(dir, `${process.pid}-1.spool`));
  const data = randomBytes(1000);
  const e = await spool.create(digestOf(data));
  await e.begin(data.length, undefined);
  const reader = collect(e.read());
  await assert.rejects(e.write(data), /spool disk full/);
  await assert.rejects(reader, /spool disk full/);
});

test('remove unlinks the file; readers of a complete entry finish, of an incomplete one fail', async (t) => {
  const { dir, spool } = await tempSpool(t);
  const data = randomBytes(2 * 1024 * 1024 + 5);
  const done = await spool.create(digestOf(data));
  await done.begin(data.length, undefined);
  await done.write(data);
  const it = done.read();
  const first = await it.next();
  await spool.remove(done);
  const rest = await collect({ [Symbol.asyncIterator]: () => it });
  assert.deepEqual(Buffer.concat([first.value as Buffer, rest]), data);
  const half = await spool.create(digestOf(Buffer.from('x')));
  await half.begin(10, undefined);
  const r = assert.rejects(collect(half.read()), /entry removed/);
  await spool.remove(half);
  await r;
  assert.deepEqual(await readdir(dir), []);
});

test('a reader whose signal aborts stops waiting', async (t) => {
  const { spool } = await tempSpool(t);
  const e = await spool.create(digestOf(Buffer.from('never')));
  const ac = new AbortController();
  const r = collect(e.read(0, 10, ac.signal));
  ac.abort(new Error('client went away'));
  await assert.rejects(r, /client went away/);
  assert.equal(await e.sizeKnown(AbortSignal.abort()), undefined);
  assert.equal(e.readers, 0);
});

test('fill gathers small chunks into larger writes; a trickle still reaches readers; held bytes are written before a source error', async (t) => {
  const { spool } = await tempSpool(t);
  const data = randomBytes(2 * 1024 * 1024);
  // Many small chunks: the entry sees far fewer writes than chunks, and the right bytes.
  const e = await spool.create(digestOf(data));
  await e.begin(data.length, undefined);
  let writes = 0;
  const write = e.write.bind(e);
  e.write = (chunks: Buffer | Buffer[]) => {
    writes++;
    return write(chunks);
  };
  async function* small() {
    for (let off = 0; off < data.length; off += 16_384) yield data.subarray(off, off + 16_384);
  }
  let counted = 0;
  await fill(e, small(), {
    onBytes: (n) => {
      counted += n;
    },
  });
  assert.equal(e.state, 'complete');
  assert.equal(counted, data.length);
  assert.ok(writes <= 8, `${writes} writes for 128 chunks`);
  assert.ok((await collect(e.read())).equals(data));

  // Tiny chunks: a batch holds at most 64 of them (one vectored write each), in order.
  const tiny = randomBytes(7 * 3000);
  const te = await spool.create(digestOf(tiny));
  await te.begin(tiny.length, undefined);
  async function* sevens() {
    for (let off = 0; off < tiny.length; off += 7) yield tiny.subarray(off, off + 7);
  }
  await fill(te, sevens());
  assert.equal(te.state, 'complete');
  assert.ok((await collect(te.read())).equals(tiny));

  // A source that sends a few bytes and stalls: the bytes are written without waiting for more.
  const slow = randomBytes(4096);
  const s = await spool.create(digestOf(slow));
  await s.begin(slow.length, undefined);
  let release: () => void = () => {};
  const stalled = new Promise<void>((r) => {
    release = r;
  });
  async function* trickle() {
    yield slow.subarray(0, 1000);
    await stalled;
    yield slow.subarray(1000);
  }
  const filling = fill(s, trickle());
  const deadline = Date.now() + 5000;
  while (s.written < 1000 && Date.now() < deadline) await delay(5);
  assert.equal(s.written, 1000, 'the first bytes are written while the source stalls');
  release();
  await filling;
  assert.equal(s.state, 'complete');

  // A source that breaks: what it sent is in the entry (a resume starts after it).
  const broken = randomBytes(100_000);
  const b = await spool.create(digestOf(broken));
  await b.begin(broken.length, undefined);
  async function* breaks() {
    yield broken.subarray(0, 30_000);
    yield broken.subarray(30_000, 50_000);
    throw new Error('connection reset');
  }
  await assert.rejects(fill(b, breaks()), /connection reset/);
  assert.equal(b.written, 50_000);
  assert.equal(b.state, 'filling');
});

test('as a body file, an entry reads only what is readable: the last byte after the digest, an error once it failed', async (t) => {
  const { spool } = await tempSpool(t);
  const data = randomBytes(1024 * 1024 + 3);
  const e = await spool.create(digestOf(data));
  const body = e.body();
  const buf = Buffer.alloc(data.length);
  await e.begin(data.length, undefined);
  await e.write(data.subarray(0, 1000));
  assert.equal(await body.readableUpTo?.(0, AbortSignal.timeout(5000)), 1000);
  // A byte not yet readable is waited for; a read never goes past the readable bytes.
  const later = body.readableUpTo?.(1000, AbortSignal.timeout(5000));
  await e.write(data.subarray(1000, data.length));
  assert.equal(await later, data.length);
  const { bytesRead } = await body.read(buf, 0, buf.length, 0);
  assert.equal(bytesRead, data.length);
  assert.deepEqual(buf, data);
  await body.close();
  // Wrong bytes: the last byte is never readable and the reader gets the error.
  const bad = Buffer.from(data);
  bad[10] = (bad[10] as number) ^ 1;
  const f = await spool.create(digestOf(data).replace(/.$/, (c) => (c === '0' ? '1' : '0')));
  const fb = f.body();
  await f.begin(bad.length, undefined);
  await f.write(bad.subarray(0, bad.length - 1));
  assert.equal((await fb.read(buf, 0, buf.length, 0)).bytesRead, bad.length - 1);
  assert.equal(await fb.readableUpTo?.(0, AbortSignal.timeout(5000)), bad.length - 1);
  const waiting = fb.readableUpTo?.(bad.length - 1, AbortSignal.timeout(5000));
  await assert.rejects(f.write(bad.subarray(bad.length - 1)), SpoolError);
  await assert.rejects(waiting as Promise<number>, /digest mismatch/);
  await assert.rejects(fb.read(buf, 0, buf.length, 0), /digest mismatch/);
  await fb.close();
});
