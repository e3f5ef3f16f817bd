// The DHT as a libp2p private network with several accepted keys. Wire protocol of @libp2p/pnet
// (its PSK is one of our keys): each side sends a random 24-byte nonce, then everything it writes
// is XSalsa20-encrypted with (its nonce, key). @libp2p/pnet takes exactly one key; this protector
// accepts every key of the network key file, so a key can be rotated without an outage:
// - the dialling side always encrypts with the primary key (the file's first);
// - the listening side reads the dialler's first 20 encrypted bytes, which are always the
//   multistream-select header (`\x13/multistream/1.0.0\n`, the first thing libp2p's upgrader
//   writes), tries each accepted key on them and answers with the key that decrypts them. If none
//   does, the connection is closed having sent nothing but a random nonce, so a peer without an
//   accepted key learns nothing about the keys.
// Two nodes connect when the dialler's primary key is in the listener's list; a rotation (add the
// new key second, roll; make it first, roll; drop the old one, roll) keeps every pair connected.
import { randomBytes } from 'node:crypto';
import type {
  AbortOptions,
  ConnectionProtector,
  MessageStream,
  MultiaddrConnection,
} from '@libp2p/interface';
import { AbstractMultiaddrConnection, byteStream } from '@libp2p/utils';
import { Uint8ArrayList } from 'uint8arraylist';
import { NETWORK_KEY_LENGTH } from './network-key.ts';
import { XSalsa20Stream } from './stream-cipher.ts';

const NONCE_LENGTH = 24;
/** The first plaintext bytes of every libp2p connection: multistream-select's length-prefixed header. */
const FIRST_PLAINTEXT = new TextEncoder().encode('\x13/multistream/1.0.0\n');
/** Bound for the nonce exchange and the first bytes when the upgrader gives no signal. */
const DEFAULT_TIMEOUT_MS = 5_000;

/** libp2p `connectionProtector` accepting every key of `keys`; the first one dials. */
export function privateNetwork(keys: Uint8Array[]): () => ConnectionProtector {
  if (keys.length === 0 || keys.some((k) => k.length !== NETWORK_KEY_LENGTH)) {
    throw new Error(`private network: every key must be ${NETWORK_KEY_LENGTH} bytes, at least one key`);
  }
  const copy = keys.map((k) => Uint8Array.from(k));
  return () => new MultiKeyProtector(copy);
}

export class NoAcceptedKeyError extends Error {
  override name = 'NoAcceptedKeyError';
  constructor() {
    super('private network: the peer does not use an accepted network key');
  }
}

class MultiKeyProtector implements ConnectionProtector {
  readonly [Symbol.toStringTag] = '@ferry/p2p/private-network';
  private readonly keys: Uint8Array[];

  constructor(keys: Uint8Array[]) {
    this.keys = keys;
  }

  async protect(connection: MessageStream, options?: AbortOptions): Promise<MessageStream> {
    const signal = options?.signal ?? AbortSignal.timeout(DEFAULT_TIMEOUT_MS);
    const bytes = byteStream(connection);
    const localNonce = randomBytes(NONCE_LENGTH);
    const [nonce] = await Promise.all([
      bytes.read({ bytes: NONCE_LENGTH, signal }),
      bytes.write(localNonce, { signal }),
    ]);
    const remoteNonce = nonce.subarray();
    let key = this.keys[0] as Uint8Array;
    let inbound: XSalsa20Stream;
    let first: Uint8Array | undefined;
    if (connection.direction === 'inbound') {
      const head = (await bytes.read({ bytes: FIRST_PLAINTEXT.length, signal })).subarray();
      const match = this.identify(remoteNonce, head);
      if (match === undefined) {
        const err = new NoAcceptedKeyError();
        connection.abort(err);
        throw err;
      }
      ({ key, cipher: inbound, plain: first } = match);
    } else {
      inbound = new XSalsa20Stream(remoteNonce, key);
    }
    return new PrivateConnection({
      maConn: bytes.unwrap() as MultiaddrConnection,
      inbound,
      outbound: new XSalsa20Stream(localNonce, key),
      first,
    });
  }

  /** The accepted key under which `head` decrypts to the multistream header, with its cipher state. */
  private identify(
    remoteNonce: Uint8Array,
    head: Uint8Array,
  ): { key: Uint8Array; cipher: XSalsa20Stream; plain: Uint8Array } | undefined {
    for (const key of this.keys) {
      const cipher = new XSalsa20Stream(remoteNonce, key);
      const plain = cipher.update(head);
      if (Buffer.from(plain).equals(FIRST_PLAINTEXT)) {
        return { key, cipher, plain };
      }
    }
    return undefined;
  }
}

interface PrivateConnectionInit {
  maConn: MultiaddrConnection;
  inbound: XSalsa20Stream;
  outbound: XSalsa20Stream;
  /** Plaintext already read and decrypted while identifying the key. */
  first: Uint8Array | undefined;
}

/** The encrypted connection (as @libp2p/pnet's, with the cipher states given). */
class PrivateConnection extends AbstractMultiaddrConnection {
  private readonly maConn: MultiaddrConnection;
  private readonly outbound: XSalsa20Stream;

  constructor(init: PrivateConnectionInit) {
    super({ log: init.maConn.log, remoteAddr: init.maConn.remoteAddr, direction: init.maConn.direction });
    this.maConn = init.maConn;
    this.outbound = init.outbound;
    if (init.first !== undefined) {
      this.onData(init.first);
    }
    const inbound = init.inbound;
    this.maConn.addEventListener('message', (evt) => {
      const data: Uint8Array | Uint8ArrayList = evt.data;
      if (data instanceof Uint8Array) {
        this.onData(inbound.update(data));
      } else {
        for (const buf of data) {
          this.onData(inbound.update(buf));
        }
      }
    });
    this.maConn.addEventListener('drain', () => {
      this.onMuxerDrain();
    });
    this.maConn.addEventListener('close', (evt) => {
      if (evt.error != null) {
        if (evt.local) {
          this.abort(evt.error);
        } else {
          this.onRemoteReset();
        }
      } else {
        this.onTransportClosed();
      }
    });
  }

  override async sendClose(options?: AbortOptions): Promise<void> {
    await this.maConn.close(options);
  }

  override sendData(data: Uint8ArrayList): { sentBytes: number; canSendMore: boolean } {
    // Piece by piece, as queued: no copy of the whole backlog into one buffer.
    const encrypted = new Uint8ArrayList();
    for (const buf of data) {
      encrypted.append(this.outbound.update(buf));
    }
    return { sentBytes: data.byteLength, canSendMore: this.maConn.send(encrypted) };
  }

  override sendReset(err: Error): void {
    this.maConn.abort(err);
  }

  override sendPause(): void {
    this.maConn.pause();
  }

  override sendResume(): void {
    this.maConn.resume();
  }
}
