// Batched ADD_PROVIDER: the pieces of kad-dht's provide that Ferry does itself, so that thousands of
// keys cost one stream per peer instead of a closest-peers query plus k streams per key.
//
// Wire format: kad-dht 16's `Message` (src/message/dht.proto), encoded with the codec protons
// generates from proto/kad.proto (the subset of fields Ferry uses). Each message is a varint
// length-prefixed frame on a `/ferry/kad/1.0.0` stream. The receiver (rpc/index.ts
// onIncomingStream) handles the messages of a stream one after the other; ADD_PROVIDER has no reply,
// PING echoes the message. Its loop stops reading as soon as our write side is closed, even with
// frames still buffered, so a batch ends with a PING and is only closed after the echo: the echo
// also confirms that every record before it was stored.
import { createHash } from 'node:crypto';
import type { PeerId, Stream } from '@libp2p/interface';
import { lpStream } from '@libp2p/utils';
import { Message, MessageType, type PeerInfo } from '../generated/kad.js';

/** Upper bound for ADD_PROVIDER messages written on one stream (≈ 130 KB with one address). */
export const MAX_MESSAGES_PER_STREAM = 1_000;

/** The PING that ends every batch. */
const PING_MESSAGE = Message.encode({ type: MessageType.PING, closer: [], providers: [] });

/**
 * Kademlia id of a DHT key or peer: sha2-256 of the bytes. kad-dht's `convertBuffer` hashes the
 * key's multihash bytes; `convertPeerId` hashes `peerId.toMultihash().bytes`.
 */
export function kadId(bytes: Uint8Array): Uint8Array {
  return createHash('sha256').update(bytes).digest();
}

/** The provider entry naming us: our peer id's multihash and our addresses. Same for every key. */
export function providerInfo(peerIdBytes: Uint8Array, addrs: Uint8Array[]): PeerInfo {
  return { id: peerIdBytes as Uint8Array<ArrayBuffer>, multiaddrs: addrs as Uint8Array<ArrayBuffer>[] };
}

/** An ADD_PROVIDER message body: type, key (the multihash bytes), providers. */
export function encodeAddProvider(multihash: Uint8Array, provider: PeerInfo): Uint8Array {
  return Message.encode({
    type: MessageType.ADD_PROVIDER,
    key: multihash as Uint8Array<ArrayBuffer>,
    closer: [],
    providers: [provider],
  });
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
    const type = Message.decode(reply).type;
    if (type !== MessageType.PING) {
      throw new Error(`peer answered the batch with message type ${String(type)} instead of PING`);
    }
    await stream.close({ signal });
  } catch (err) {
    stream.abort(err instanceof Error ? err : new Error(String(err)));
    throw err;
  }
}
