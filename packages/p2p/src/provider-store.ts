// Ferry's provider store, installed in place of kad-dht's (kad-internals.ts): kad-dht keeps each
// record as a datastore entry (`/dht/provider/<cid>/<peer>` string key, a varint time value, plus
// its index), several hundred bytes per record. Here a record is two small integers:
// - keys are the multihash bytes as a binary string (34 chars for sha2-256);
// - providers are indexes into one peer table (a peer's id is held once, whatever its records);
// - each key holds a flat `number[]` of [peer index, expiry in seconds since the store's start]
//   pairs (small integers, unboxed);
// - expiry is one sweep over the store (no timer per record), and all records of a peer go at once
//   when the peer is known dead (`removePeer`).
import type { PeerId } from '@libp2p/interface';

export interface ProviderStoreOptions {
  /** How long a record lives after it was (re)written. */
  validityMs: number;
  /** Most distinct provider peers held (a member flooding identities cannot grow the table past it). */
  maxPeers?: number;
  /** Most keys held (records for new keys are dropped beyond it). */
  maxKeys?: number;
  /** Most records one provider peer may hold (one member cannot fill the store for the others). */
  maxRecordsPerPeer?: number;
  now?: () => number;
}

interface PeerSlot {
  id: PeerId;
  key: string;
  /** Records naming this peer. */
  records: number;
}

export class ProviderStore {
  private readonly validitySec: number;
  private readonly maxPeers: number;
  private readonly maxKeys: number;
  private readonly maxRecordsPerPeer: number;
  private readonly now: () => number;
  /** Expiries are seconds since this epoch: small integers, which V8 stores unboxed. */
  private readonly epochSec: number;
  private readonly records = new Map<string, number[]>();
  private readonly peers: (PeerSlot | undefined)[] = [];
  private readonly peerIndex = new Map<string, number>();
  private readonly freeSlots: number[] = [];
  private recordCount = 0;

  constructor(opts: ProviderStoreOptions) {
    this.validitySec = Math.max(1, Math.ceil(opts.validityMs / 1000));
    this.maxPeers = opts.maxPeers ?? 4_096;
    this.maxKeys = opts.maxKeys ?? 1_000_000;
    this.maxRecordsPerPeer = opts.maxRecordsPerPeer ?? 262_144;
    this.now = opts.now ?? Date.now;
    this.epochSec = Math.floor(this.now() / 1000);
  }

  private nowSec(): number {
    return Math.floor(this.now() / 1000) - this.epochSec;
  }

  /** Records held (key × provider pairs). */
  get size(): number {
    return this.recordCount;
  }

  /** Keys held. */
  get keys(): number {
    return this.records.size;
  }

  /** Add or renew `peer`'s record for `key` (multihash bytes). False when a bound refused it. */
  add(key: Uint8Array, peer: PeerId): boolean {
    const k = Buffer.from(key).toString('latin1');
    const expires = this.nowSec() + this.validitySec;
    const list = this.records.get(k);
    const existing = this.peerIndex.get(peer.toString());
    if (list !== undefined && existing !== undefined) {
      for (let i = 0; i < list.length; i += 2) {
        if (list[i] === existing) {
          list[i + 1] = expires;
          return true;
        }
      }
    }
    if (list === undefined && this.records.size >= this.maxKeys) {
      return false;
    }
    const slot = existing ?? this.slotFor(peer);
    if (slot === undefined || (this.peers[slot] as PeerSlot).records >= this.maxRecordsPerPeer) {
      return false;
    }
    if (list === undefined) {
      // an array literal is allocated at its exact size (push would reserve room for 17 elements)
      this.records.set(k, [slot, expires]);
    } else {
      list.push(slot, expires);
    }
    (this.peers[slot] as PeerSlot).records++;
    this.recordCount++;
    return true;
  }

  /** Live providers of `key`, in insertion order. */
  get(key: Uint8Array): PeerId[] {
    const list = this.records.get(Buffer.from(key).toString('latin1'));
    if (list === undefined) {
      return [];
    }
    const now = this.nowSec();
    const out: PeerId[] = [];
    for (let i = 0; i < list.length; i += 2) {
      if ((list[i + 1] as number) >= now) {
        out.push((this.peers[list[i] as number] as PeerSlot).id);
      }
    }
    return out;
  }

  remove(key: Uint8Array, peer: PeerId): void {
    const k = Buffer.from(key).toString('latin1');
    const list = this.records.get(k);
    const slot = this.peerIndex.get(peer.toString());
    if (list === undefined || slot === undefined) {
      return;
    }
    for (let i = 0; i < list.length; i += 2) {
      if (list[i] === slot) {
        this.dropAt(k, list, i);
        return;
      }
    }
  }

  /** Drop every record of `peer` (known dead). Returns how many went. */
  removePeer(peer: string): number {
    const slot = this.peerIndex.get(peer);
    if (slot === undefined) {
      return 0;
    }
    const before = this.recordCount;
    for (const [k, list] of this.records) {
      for (let i = list.length - 2; i >= 0; i -= 2) {
        if (list[i] === slot) {
          this.dropAt(k, list, i);
        }
      }
    }
    return before - this.recordCount;
  }

  /** Drop expired records; `keep` exempts a peer (this node's own records, refreshed by Ferry). */
  sweep(keep?: string): number {
    const now = this.nowSec();
    const kept = keep === undefined ? undefined : this.peerIndex.get(keep);
    const before = this.recordCount;
    for (const [k, list] of this.records) {
      for (let i = list.length - 2; i >= 0; i -= 2) {
        if ((list[i + 1] as number) < now && list[i] !== kept) {
          this.dropAt(k, list, i);
        }
      }
    }
    return before - this.recordCount;
  }

  private dropAt(k: string, list: number[], i: number): void {
    const slot = list[i] as number;
    list.splice(i, 2);
    this.recordCount--;
    if (list.length === 0) {
      this.records.delete(k);
    }
    const peer = this.peers[slot] as PeerSlot;
    if (--peer.records === 0) {
      this.peers[slot] = undefined;
      this.peerIndex.delete(peer.key);
      this.freeSlots.push(slot);
    }
  }

  private slotFor(peer: PeerId): number | undefined {
    const key = peer.toString();
    if (this.peerIndex.size >= this.maxPeers) {
      return undefined;
    }
    const slot = this.freeSlots.pop() ?? this.peers.length;
    this.peers[slot] = { id: peer, key, records: 0 };
    this.peerIndex.set(key, slot);
    return slot;
  }
}
