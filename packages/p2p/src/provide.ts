// Ferry's provide: records sent in batches per peer instead of kad-dht's per-key provide (on
// Ferry's compact protocol, provider-batches.ts, to peers that speak it; as batched kad
// ADD_PROVIDER messages otherwise), refresh at half the record validity, retry of keys that
// reached no peer, every key sent again to a member a send failed to, and push of every advertised
// key to a DHT peer as soon as it connects. Up to `meshLimit` members every record goes to every
// connected member (kad-dht would send it to the k = 20 closest only, dialling them); beyond, to the
// k closest, as kad-dht does.
// kad-dht's RPC handler on every peer receives the records (into Ferry's provider store) and
// answers GET_PROVIDERS; Ferry decides what to send to whom, and when.
import { setMaxListeners } from 'node:events';
import type { KadDHT } from '@libp2p/kad-dht';
import type { Libp2p } from 'libp2p';
import type { CID } from 'multiformats/cid';
import PQueue from 'p-queue';
import {
  closestCandidates,
  encodeAddProvider,
  kadId,
  MAX_MESSAGES_PER_STREAM,
  providerInfo,
  sendAddProviders,
} from './batch-provide.ts';
import type { KadInternals } from './kad-internals.ts';
import { keyToCid } from './keys.ts';
import { DEFAULTS, errorText } from './options.ts';
import type { PeerBook } from './peer-book.ts';
import { MAX_KEYS_PER_FRAME, sendRecordBatch } from './provider-batches.ts';
import type { P2PLogger } from './types.ts';

/**
 * kad-dht 16 peers decode a DHT key with `CID.decode(multihash)`, which only works for sha2-256
 * multihashes (read as CIDv0). sha512 digests therefore cannot be advertised or found.
 */
export const SHA2_256 = 0x12;

/** Keys per stream on Ferry's compact protocol (16 frames, about 560 KB). */
const COMPACT_KEYS_PER_STREAM = MAX_KEYS_PER_FRAME * 16;

export interface ProviderInit {
  libp2p: Libp2p;
  dht: KadDHT;
  kad: KadInternals;
  peers: PeerBook;
  log: P2PLogger;
  protocol: string;
  provideConcurrency: number;
  provideTimeoutMs: number;
  recordValidityMs: number;
  /** Up to this many known members, every record goes to every member (not only the k closest). */
  meshLimit: number;
  /** Peers known dead get no records. */
  isDead: (id: string) => boolean;
}

/** A key the caller wants advertised. */
interface WantedKey {
  cid: CID;
  /** sha256 of the multihash bytes: the key's Kademlia id. */
  kadId: Uint8Array;
  /** When its records must be sent again (half the validity after the last send). */
  refreshAt: number;
}

export class Provider {
  private readonly init: ProviderInit;
  private readonly log: P2PLogger;
  private readonly queue: PQueue;
  private readonly stopController = new AbortController();
  /** Keys the caller wants advertised (advertise minus withdraw). */
  private readonly wanted = new Map<string, WantedKey>();
  /** Keys whose records reached at least one peer. */
  private readonly advertised = new Set<string>();
  /** Keys in a batch being sent (advertise, refresh or retry). */
  private readonly inflight = new Map<string, Promise<unknown>>();
  /** Keys to send again (reached no peer, or waiting for peers). */
  private readonly pending = new Set<string>();
  /** Batches running (advertise, refresh, retry, push to a new peer); awaited by stop(). */
  private readonly batches = new Set<Promise<unknown>>();
  /** Peers that got our advertised keys pushed since they connected. */
  private readonly pushedTo = new Set<string>();
  /** Peers a send of records failed to: they get every key again (bounded by the members). */
  private readonly repush = new Set<string>();
  private refreshing: Promise<unknown> | undefined;
  private nextRefreshAt = Number.POSITIVE_INFINITY;
  private nextPendingRetryAt = 0;
  private nextRepushAt = 0;

  constructor(init: ProviderInit) {
    this.init = init;
    this.log = init.log;
    this.queue = new PQueue({ concurrency: init.provideConcurrency });
    // every queued provide listens on the stop signal
    setMaxListeners(Number.POSITIVE_INFINITY, this.stopController.signal);
  }

  private get stopped(): boolean {
    return this.stopController.signal.aborted;
  }

  async advertise(keys: string[]): Promise<void> {
    if (this.stopped) {
      return;
    }
    const waits: Promise<unknown>[] = [];
    const fresh: string[] = [];
    for (const key of new Set(keys)) {
      let cid: CID;
      try {
        cid = keyToCid(key);
      } catch (err) {
        this.log.warn({ key, err: errorText(err) }, 'not advertising an invalid key');
        continue;
      }
      if (cid.multihash.code !== SHA2_256) {
        this.log.warn({ key }, 'not advertising: kad-dht 16 only carries sha2-256 multihash keys');
        continue;
      }
      if (!this.wanted.has(key)) {
        this.wanted.set(key, { cid, kadId: kadId(cid.multihash.bytes), refreshAt: Number.POSITIVE_INFINITY });
      }
      const running = this.inflight.get(key);
      if (running !== undefined) {
        waits.push(running);
        continue;
      }
      if (this.advertised.has(key)) {
        continue;
      }
      this.pending.delete(key);
      fresh.push(key);
    }
    if (fresh.length > 0) {
      waits.push(this.runBatch(fresh, 'advertise'));
    }
    await Promise.all(waits);
  }

  async withdraw(keys: string[]): Promise<void> {
    for (const key of new Set(keys)) {
      let cid: CID;
      try {
        cid = keyToCid(key);
      } catch {
        continue;
      }
      const wasKnown = this.wanted.delete(key);
      this.advertised.delete(key);
      this.pending.delete(key);
      if (!wasKnown || this.stopped) {
        continue;
      }
      // no refresh from now on; a batch in flight removes the local record again when it ends
      try {
        await this.init.dht.cancelReprovide(cid);
      } catch (err) {
        this.log.warn({ key, err: errorText(err) }, 'cancelReprovide failed');
      }
    }
  }

  /** A DHT peer connected (identified): push it our records, once per connection. */
  onPeerIdentified(peer: string): void {
    if (this.pushedTo.has(peer)) {
      return;
    }
    this.pushedTo.add(peer);
    if (this.stopped || this.wanted.size === 0) {
      return;
    }
    const keys = [...this.wanted.keys()];
    const started = Date.now();
    this.runBatch(keys, 'new peer', peer).then((reached) => {
      this.log.info({ peer, keys: reached, ms: Date.now() - started }, 'pushed provider records to new peer');
    });
  }

  onPeerDisconnected(peer: string): void {
    this.pushedTo.delete(peer);
    this.repush.delete(peer); // a new connection pushes everything anyway
  }

  /**
   * Housekeeping: refresh records half-way to expiry; while ready, retry keys that reached no peer
   * and send every key again to members a send failed to.
   */
  tick(now: number, ready: boolean): void {
    this.refreshDue(now);
    if (ready && this.repush.size > 0 && now >= this.nextRepushAt) {
      this.nextRepushAt = now + DEFAULTS.pendingRetryMs;
      const members = new Set(this.init.peers.candidates(this.init.isDead).map((c) => c.key));
      for (const peer of [...this.repush]) {
        this.repush.delete(peer);
        if (members.has(peer) && this.wanted.size > 0) {
          this.runBatch([...this.wanted.keys()], 'retry peer', peer);
        }
      }
    }
    if (!ready || this.pending.size === 0 || now < this.nextPendingRetryAt) {
      return;
    }
    this.nextPendingRetryAt = now + DEFAULTS.pendingRetryMs;
    const keys = [...this.pending].filter((key) => !this.inflight.has(key));
    this.pending.clear();
    if (keys.length > 0) {
      this.runBatch(keys, 'retry');
    }
  }

  /** Abort every batch and wait for them. */
  async stop(): Promise<void> {
    this.stopController.abort();
    await Promise.allSettled([...this.batches]);
    await this.queue.onIdle();
  }

  /**
   * Send again every key whose records are half-way to expiry, as one batch (one refresh at a
   * time). Runs whether or not peers are known: it also rewrites our local records.
   */
  private refreshDue(now: number): void {
    if (this.refreshing !== undefined || now < this.nextRefreshAt) {
      return;
    }
    const due: string[] = [];
    let next = Number.POSITIVE_INFINITY;
    for (const [key, entry] of this.wanted) {
      if (entry.refreshAt <= now && !this.inflight.has(key)) {
        due.push(key);
      } else {
        next = Math.min(next, entry.refreshAt);
      }
    }
    this.nextRefreshAt = next;
    if (due.length === 0) {
      return;
    }
    this.log.debug({ keys: due.length }, 'refreshing provider records');
    this.refreshing = this.runBatch(due, 'refresh').finally(() => {
      this.refreshing = undefined;
    });
  }

  /**
   * Start a batch for `keys` (marked in flight unless it only targets one peer). The promise never
   * rejects; the batch is awaited by stop().
   */
  private runBatch(keys: string[], reason: string, onlyPeer?: string): Promise<number> {
    const job: Promise<number> = this.provideBatch(keys, onlyPeer)
      .catch((err: unknown) => {
        if (!this.stopped) {
          this.log.warn({ reason, keys: keys.length, err: errorText(err) }, 'provide batch failed');
        }
        return 0;
      })
      .finally(() => {
        this.batches.delete(job);
        for (const key of keys) {
          if (this.inflight.get(key) === job) {
            this.inflight.delete(key);
          }
        }
      });
    this.batches.add(job);
    if (onlyPeer === undefined) {
      for (const key of keys) {
        this.inflight.set(key, job);
      }
    }
    return job;
  }

  /**
   * Record us as provider of `keys` locally, then send ADD_PROVIDER for each key to the k peers
   * closest to it (or only to `onlyPeer`, when it is among them). Keys that reached a peer become
   * advertised; the others wait in `pending` for peers. Resolves to how many keys reached a peer.
   */
  private async provideBatch(allKeys: string[], onlyPeer: string | undefined): Promise<number> {
    const keys = allKeys.filter((key) => this.wanted.has(key));
    if (keys.length === 0 || this.stopped) {
      return 0;
    }
    const self = this.init.libp2p.peerId;
    if (onlyPeer === undefined) {
      const refreshAt = Date.now() + Math.floor(this.init.recordValidityMs / 2);
      for (const key of keys) {
        const entry = this.wanted.get(key);
        if (entry === undefined) {
          continue;
        }
        entry.refreshAt = refreshAt;
        this.nextRefreshAt = Math.min(this.nextRefreshAt, refreshAt);
        // our own record: answers GET_PROVIDERS that reach us; rewriting it keeps kad-dht's
        // per-key reprovider idle
        await this.init.kad.providers.addProvider(entry.cid, self);
      }
    }
    const reached = await this.sendRecords(keys, onlyPeer);
    for (const key of keys) {
      const entry = this.wanted.get(key);
      if (entry === undefined) {
        // withdrawn while in flight: take back the local record written above
        await this.init.dht.cancelReprovide(keyToCid(key)).catch(() => {});
        continue;
      }
      if (reached.has(key)) {
        this.advertised.add(key);
        this.pending.delete(key);
      } else if (onlyPeer === undefined && !this.stopped) {
        this.pending.add(key);
      }
    }
    return reached.size;
  }

  /**
   * Group `keys` per target peer (every connected member up to `meshLimit` members, else the k closest to
   * each key, as kad-dht would pick) and write them in chunks, one stream per chunk, through the
   * shared queue. A peer a chunk failed to gets every key again later (`repush`). Returns the keys
   * that reached at least one peer.
   */
  private async sendRecords(keys: string[], onlyPeer: string | undefined): Promise<Set<string>> {
    const reached = new Set<string>();
    const libp2p = this.init.libp2p;
    const known = this.init.peers.candidates(this.init.isDead);
    // Within the mesh, records go to the connected members only: every live member is connected or
    // about to be, and gets every key pushed once identified (onPeerIdentified). A routing-table
    // peer without a connection is one not seen alive in this life (a restarted node's persisted
    // peers): dialling it delayed every advertise behind dials to peers long gone.
    const mesh = known.length <= this.init.meshLimit;
    const candidates = mesh
      ? known.filter((c) => libp2p.getConnections(c.id).some((conn) => conn.status === 'open'))
      : known;
    if (candidates.length === 0) {
      return reached;
    }
    const k = mesh ? candidates.length : this.init.dht.k;
    const perPeer = new Map<string, { peer: (typeof candidates)[number]; keys: string[] }>();
    for (const key of keys) {
      const entry = this.wanted.get(key);
      if (entry === undefined) {
        continue;
      }
      for (const peer of closestCandidates(entry.kadId, candidates, k)) {
        if (onlyPeer !== undefined && peer.key !== onlyPeer) {
          continue;
        }
        let group = perPeer.get(peer.key);
        if (group === undefined) {
          group = { peer, keys: [] };
          perPeer.set(peer.key, group);
        }
        group.keys.push(key);
      }
    }
    const provider = providerInfo(
      libp2p.peerId.toMultihash().bytes,
      libp2p.getMultiaddrs().map((a) => a.bytes),
    );
    // a key's ADD_PROVIDER message is the same for every peer: encoded once
    const encoded = new Map<string, Uint8Array>();
    const addProvider = (key: string, entry: WantedKey) => {
      let body = encoded.get(key);
      if (body === undefined) {
        body = encodeAddProvider(entry.cid.multihash.bytes, provider);
        encoded.set(key, body);
      }
      return body;
    };
    const jobs: Promise<void>[] = [];
    for (const { peer, keys: peerKeys } of perPeer.values()) {
      // peers that speak Ferry's compact protocol get the keys alone, in large batches
      const compact = this.init.peers.get(peer.key)?.batches === true;
      const chunkSize = compact ? COMPACT_KEYS_PER_STREAM : MAX_MESSAGES_PER_STREAM;
      for (let i = 0; i < peerKeys.length; i += chunkSize) {
        const chunk = peerKeys.slice(i, i + chunkSize);
        const send = async () => {
          const signal = AbortSignal.any([
            AbortSignal.timeout(this.init.provideTimeoutMs),
            this.stopController.signal,
          ]);
          const live = chunk.flatMap((key) => {
            const entry = this.wanted.get(key);
            return entry === undefined ? [] : [[key, entry] as const];
          });
          if (live.length === 0) {
            return;
          }
          const once = () =>
            compact
              ? sendRecordBatch(
                  libp2p,
                  peer.id,
                  live.map(([, entry]) => entry.cid.multihash.bytes),
                  signal,
                )
              : sendAddProviders(
                  libp2p,
                  peer.id,
                  this.init.protocol,
                  live.map(([key, entry]) => addProvider(key, entry)),
                  signal,
                );
          try {
            await once();
          } catch (err) {
            // its connection closed under the stream (a duplicate closed, liveness) while another
            // stays: once more at once
            if (signal.aborted || !libp2p.getConnections(peer.id).some((c) => c.status === 'open')) {
              throw err;
            }
            await once();
          }
          for (const key of chunk) {
            reached.add(key);
          }
        };
        jobs.push(
          this.queue.add(send, { signal: this.stopController.signal }).catch((err: unknown) => {
            if (!this.stopped) {
              // sent again to this peer alone (every key) once it is still a member then
              this.repush.add(peer.key);
              this.log.warn(
                { peer: peer.key, keys: chunk.length, err: errorText(err) },
                'sending provider records failed',
              );
            }
          }),
        );
      }
    }
    await Promise.all(jobs);
    return reached;
  }
}
