// The private network's stream cipher: chunking never changes the bytes, and a large write costs
// memory only while it is in flight (no cipher state grows with it: the `xsalsa20` package kept a
// WebAssembly memory as large as the largest write, and failed writes past 62.5 MiB). In memory (a libp2p connection pair), no sockets.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import type { MessageStream } from '@libp2p/interface';
import { multiaddrConnectionPair } from '@libp2p/utils';
import { xsalsa20 } from '@noble/ciphers/salsa.js';
import type { Uint8ArrayList } from 'uint8arraylist';
import { privateNetwork } from '../src/private-network.ts';
import { XSalsa20Stream } from '../src/stream-cipher.ts';

/** Deterministic pseudo-random piece lengths (0, 1, 63, 64, 65 and larger included). */
function* splits(total: number, seed: number): Generator<number> {
  const fixed = [0, 1, 63, 64, 65, 0, 127, 128, 129, 7];
  let x = seed;
  let at = 0;
  for (let i = 0; at < total; i++) {
    x = (x * 1103515245 + 12345) % 2 ** 31;
    const n = Math.min(total - at, i < fixed.length ? (fixed[i] as number) : x % 3000);
    at += n;
    yield n;
  }
}

test('a stream encrypted in any chunk split equals the one-shot XSalsa20 keystream', () => {
  const key = randomBytes(32);
  const nonce = randomBytes(24);
  const plain = randomBytes(200_000);
  const oneShot = xsalsa20(key, nonce, plain);
  for (let seed = 1; seed <= 20; seed++) {
    const cipher = new XSalsa20Stream(nonce, key);
    const pieces: Uint8Array[] = [];
    let at = 0;
    for (const n of splits(plain.length, seed)) {
      pieces.push(cipher.update(plain.subarray(at, at + n)));
      at += n;
    }
    assert.ok(Buffer.concat(pieces).equals(oneShot), `split seed ${seed}`);
  }
  // decryption is the same operation
  const back = new XSalsa20Stream(nonce, key);
  assert.ok(Buffer.from(back.update(oneShot.subarray(0, 1000))).equals(plain.subarray(0, 1000)));
  assert.throws(() => new XSalsa20Stream(nonce.subarray(0, 8), key), /24 bytes/);
});

/** Memory outside the V8 heap that JavaScript holds: buffers, and WebAssembly memories. */
function externalMiB(): number {
  return process.memoryUsage().external / 2 ** 20;
}

test('a 96 MiB write crosses the private network intact, and its buffers are freed once delivered', async () => {
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  const [outboundConn, inboundConn] = multiaddrConnectionPair();
  const key = randomBytes(32);
  const listening = privateNetwork([key])().protect(inboundConn);
  const dialer = await privateNetwork([key])().protect(outboundConn);
  const header = new TextEncoder().encode('\x13/multistream/1.0.0\n');
  const received = { bytes: 0, wrong: 0 };
  const send = async (stream: MessageStream, data: Uint8Array) => {
    if (!stream.send(data)) {
      await new Promise((r) => stream.addEventListener('drain', r, { once: true }));
    }
  };
  // the listener identifies the key from the multistream header, as libp2p sends it first
  await send(dialer, header);
  const listener = await listening;
  listener.addEventListener('message', (evt) => {
    const data: Uint8Array | Uint8ArrayList = evt.data;
    for (const buf of data instanceof Uint8Array ? [data] : data) {
      for (let i = 0; i < buf.length; i += i < 64 ? 1 : 997) {
        const at = received.bytes + i;
        if (buf[i] !== (at < header.length ? header[at] : 0x5a)) received.wrong++;
      }
      received.bytes += buf.byteLength;
    }
  });
  gc();
  const before = externalMiB();
  const size = 96 * 2 ** 20;
  // the 96 MiB buffer is made and handed over in a frame that ends before we wait (a suspended
  // frame would keep it alive)
  await send(dialer, new Uint8Array(size).fill(0x5a));
  const delivered = Date.now() + 60_000;
  while (received.bytes < 20 + size && Date.now() < delivered) {
    await new Promise((r) => setTimeout(r, 20));
  }
  assert.equal(received.bytes, 20 + size, 'every byte arrived');
  assert.equal(received.wrong, 0, 'and decrypted to what was sent');
  let after = Number.POSITIVE_INFINITY;
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    gc();
    after = externalMiB();
    if (after - before < 8) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.ok(
    after - before < 8,
    `external memory ${before.toFixed(0)} -> ${after.toFixed(0)} MiB after the write was delivered`,
  );
  dialer.abort(new Error('done'));
  listener.abort(new Error('done'));
});
