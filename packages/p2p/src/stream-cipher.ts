// XSalsa20 as a stream over any chunking: the keystream position is kept between calls, so
// encrypting a byte stream in arbitrary pieces gives the same bytes as one call over all of it (the
// cipher of @libp2p/pnet's wire protocol). Pure JavaScript (@noble/ciphers) and no state but 64
// bytes of keystream per direction: each call's output is an ordinary buffer the size of its input,
// freed with it. (The `xsalsa20` package @libp2p/pnet uses keeps one WebAssembly memory for every
// cipher in the process: it grows to the largest input ever passed, never shrinks, fails the write
// past 62.5 MiB, and keeps 64 bytes per cipher not finalized.)
import { hsalsa, salsa20 } from '@noble/ciphers/salsa.js';

const BLOCK = 64;
/** @noble/ciphers takes a 32-bit block counter: 256 GiB per direction of one connection. */
const MAX_BLOCKS = 2 ** 32;
const SIGMA = new TextEncoder().encode('expand 32-byte k');
/** 32-bit words over bytes in memory order, as @noble/ciphers' cores take them. */
const words = (bytes: Uint8Array) => new Uint32Array(Uint8Array.from(bytes).buffer);

export class XSalsa20Stream {
  /** XSalsa20 is Salsa20 under HSalsa20(key, nonce[0..16]) with nonce[16..24]: derived once. */
  private readonly subkey: Uint8Array;
  private readonly nonce8: Uint8Array;
  /** Counter of the next block whose keystream has not been generated. */
  private block = 0;
  /** Keystream of the block before `block`, of which `used` bytes are consumed. */
  private readonly rest = new Uint8Array(BLOCK);
  private used = BLOCK;

  constructor(nonce: Uint8Array, key: Uint8Array) {
    if (nonce.length !== 24 || key.length !== 32) {
      throw new Error('xsalsa20: the nonce is 24 bytes and the key 32');
    }
    const subkey = new Uint32Array(8);
    hsalsa(words(SIGMA), words(key), words(nonce.subarray(0, 16)), subkey);
    this.subkey = new Uint8Array(subkey.buffer);
    this.nonce8 = Uint8Array.from(nonce.subarray(16));
  }

  /** XORs `input` with the next `input.length` bytes of the keystream, into a new buffer. */
  update(input: Uint8Array): Uint8Array {
    const out = new Uint8Array(input.length);
    let i = 0;
    while (this.used < BLOCK && i < input.length) {
      out[i] = (input[i] as number) ^ (this.rest[this.used++] as number);
      i++;
    }
    const left = input.length - i;
    if (left === 0) {
      return out;
    }
    const blocks = Math.ceil(left / BLOCK);
    if (this.block + blocks > MAX_BLOCKS) {
      throw new Error('xsalsa20: keystream exhausted (256 GiB in one direction of one connection)');
    }
    const tail = left % BLOCK;
    if (tail === 0) {
      salsa20(this.subkey, this.nonce8, input.subarray(i), out.subarray(i), this.block);
    } else {
      // One call for the whole blocks and the partial last one: the input is padded with zeros
      // to a whole block, so the padding's output is the last block's unused keystream.
      const padded = new Uint8Array(blocks * BLOCK);
      padded.set(input.subarray(i));
      salsa20(this.subkey, this.nonce8, padded, padded, this.block);
      out.set(padded.subarray(0, left), i);
      this.rest.set(padded.subarray(left - tail));
      this.used = tail;
    }
    this.block += blocks;
    return out;
  }
}
