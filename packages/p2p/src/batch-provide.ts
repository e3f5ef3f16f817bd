// Batched ADD_PROVIDER: the pieces of kad-dht's provide that Ferry does itself, so that thousands of
// keys cost one stream per peer instead of a closest-peers query plus k streams per key.
//
// Wire format (kad-dht 16.4.5 src/message/dht.proto, checked against the installed package):
//   Message  { MessageType type = 1; bytes key = 2; repeated PeerInfo providers = 9; ... }
//   PeerInfo { bytes id = 1; repeated bytes multiaddrs = 2; ConnectionType connection = 3 }
//   MessageType ADD_PROVIDER = 2, PING = 5
// Each message is a varint length-prefixed frame on a `/ferry/kad/1.0.0` stream. The receiver
// (rpc/index.ts onIncomingStream) handles the messages of a stream one after the other; ADD_PROVIDER
// has no reply, PING echoes the message. Its loop stops reading as soon as our write side is closed,
// even with frames still buffered, so a batch ends with a PING and is only closed after the echo:
// the echo also confirms that every record before it was stored.
import { createHash } from 'node:crypto';
import type { PeerId, Stream } from '@libp2p/interface';
import { lpStream } from '@libp2p/utils';

const MESSAGE_TYPE_ADD_PROVIDER = 2;
const MESSAGE_TYPE_PING = 5;

/** Upper bound for ADD_PROVIDER messages written on one stream (≈ 130 KB with one address). */
export const MAX_MESSAGES_PER_STREAM = 1_000;

/** The PING frame body that ends every batch (field 1, varint 5). */
const PING_MESSAGE = Uint8Array.of(0x08, MESSAGE_TYPE_PING);

/**
 * Kademlia id of a DHT key or peer: sha2-256 of the bytes. kad-dht's `convertBuffer` hashes the
 * key's multihash bytes; `convertPeerId` hashes `peerId.toMultihash().bytes`.
 */
export function kadId(bytes: Uint8Array): Uint8Array {
  return createHash('sha256').update(bytes).digest();
}

function varint(value: number): number[] {
  const out: number[] = [];
  let v = value;
  while (v >= 0x80) {
    out.push((v & 0x7f) | 0x80);
    v = Math.floor(v / 128);
  }
  out.push(v);
  return out;
}

/** Length-delimited field (wire type 2). */
function bytesField(field: number, value: Uint8Array): Uint8Array {
  const head = [...varint((field << 3) | 2), ...varint(value.length)];
  const out = new Uint8Array(head.length + value.length);
  out.set(head, 0);
  out.set(value, head.length);
  return out;
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** The `providers` entry (field 9) naming us: PeerInfo { id, multiaddrs }. Same for every key. */
export function encodeProviderField(peerIdBytes: Uint8Array, addrs: Uint8Array[]): Uint8Array {
  return bytesField(9, concat([bytesField(1, peerIdBytes), ...addrs.map((a) => bytesField(2, a))]));
}

/** An ADD_PROVIDER message body: type, key (the multihash bytes), providers. */
export function encodeAddProvider(multihash: Uint8Array, providerField: Uint8Array): Uint8Array {
  return concat([Uint8Array.of(0x08, MESSAGE_TYPE_ADD_PROVIDER), bytesField(2, multihash), providerField]);
}

/** The `type` (field 1) of a message body, or undefined when absent/unparseable. */
export function messageType(body: Uint8Array): number | undefined {
  let at = 0;
  const readVarint = (): number | undefined => {
    let value = 0;
    let scale = 1;
    while (at < body.length) {
      const byte = body[at++] as number;
      value += (byte & 0x7f) * scale;
      if ((byte & 0x80) === 0) {
        return value;
      }
      scale *= 128;
    }
    return undefined;
  };
  while (at < body.length) {
    const tag = readVarint();
    if (tag === undefined) {
      return undefined;
    }
    const wire = tag & 7;
    if (tag >>> 3 === 1 && wire === 0) {
      return readVarint();
    }
    if (wire === 0) {
      readVarint();
    } else if (wire === 2) {
      const len = readVarint();
      if (len === undefined) {
        return undefined;
      }
      at += len;
    } else {
      return undefined;
    }
  }
  // proto3 leaves a zero enum out; a message without field 1 is PUT_VALUE (0)
  return 0;
}

/** A peer we may send records to, with its Kademlia id. */
export interface Candidate {
  id: PeerId;
  /** `id.toString()` */
  key: string;
  kadId: Uint8Array;
}

/** Negative when `a` is closer to `target` than `b` by XOR distance. */
function compareDistance(target: Uint8Array, a: Uint8Array, b: Uint8Array): number {
  for (let i = 0; i < target.length; i++) {
    const t = target[i] as number;
    const da = (a[i] as number) ^ t;
    const db = (b[i] as number) ^ t;
    if (da !== db) {
      return da - db;
    }
  }
  return 0;
}

/** The `k` candidates closest to `target` (a Kademlia id), closest first; all of them when ≤ k. */
export function closestCandidates(target: Uint8Array, candidates: Candidate[], k: number): Candidate[] {
  if (candidates.length <= k) {
    return candidates;
  }
  return [...candidates].sort((a, b) => compareDistance(target, a.kadId, b.kadId)).slice(0, k);
}

/** What {@link sendAddProviders} needs from libp2p. */
export interface StreamOpener {
  dialProtocol: (peer: PeerId, protocols: string, options: { signal: AbortSignal }) => Promise<Stream>;
}

/**
 * Write `messages` (ADD_PROVIDER bodies) and a closing PING on one new stream to `peer`, wait for
 * the PING echo (so the peer handled every record), then close. Throws on any failure.
 */
export async function sendAddProviders(
  opener: StreamOpener,
  peer: PeerId,
  protocol: string,
  messages: Uint8Array[],
  signal: AbortSignal,
): Promise<void> {
  const stream = await opener.dialProtocol(peer, protocol, { signal });
  try {
    const lp = lpStream(stream);
    await lp.writeV([...messages, PING_MESSAGE], { signal });
    const reply = await lp.read({ signal });
    const type = messageType(reply.subarray());
    if (type !== MESSAGE_TYPE_PING) {
      throw new Error(`peer answered the batch with message type ${String(type)} instead of PING`);
    }
    await stream.close({ signal });
  } catch (err) {
    stream.abort(err instanceof Error ? err : new Error(String(err)));
    throw err;
  }
}
