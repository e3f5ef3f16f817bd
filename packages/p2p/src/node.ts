import { lookup as dnsLookup } from 'node:dns/promises';
import { setMaxListeners } from 'node:events';
import { isIP } from 'node:net';
import { networkInterfaces } from 'node:os';
import { noise } from '@chainsafe/libp2p-noise';
import { yamux } from '@chainsafe/libp2p-yamux';
import { type Identify, identify } from '@libp2p/identify';
import type { PeerId, PeerInfo } from '@libp2p/interface';
import { type KadDHT, kadDHT, passthroughMapper, type SingleKadDHT } from '@libp2p/kad-dht';
import { type Ping, ping } from '@libp2p/ping';
import { tcp } from '@libp2p/tcp';
import { type Multiaddr, multiaddr } from '@multiformats/multiaddr';
import { createLibp2p, type Libp2p } from 'libp2p';
import type { CID } from 'multiformats/cid';
import PQueue from 'p-queue';
import pkg from '../package.json' with { type: 'json' };
import {
  type BootstrapTarget,
  formatAgentVersion,
  type HostPort,
  ipAndPort,
  ipMultiaddr,
  parseBootstrapDns,
  parseBootstrapPeer,
  parseRegistryPort,
  peerIdOf,
  pickHost,
} from './address.ts';
import {
  type Candidate,
  closestCandidates,
  encodeAddProvider,
  encodeProviderField,
  kadId,
  MAX_MESSAGES_PER_STREAM,
  sendAddProviders,
} from './batch-provide.ts';
import { SortedMemoryDatastore } from './datastore.ts';
import { loadOrCreateKey } from './identity.ts';
import { keyToCid } from './keys.ts';
import type { P2PLogger, P2PNode, P2PNodeOptions, Peer } from './types.ts';

/** DHT protocol id: isolates Ferry clusters from IPFS and other DHTs. */
export const FERRY_KAD_PROTOCOL = '/ferry/kad/1.0.0';

/**
 * kad-dht 16 peers decode a DHT key with `CID.decode(multihash)`, which only works for sha2-256
 * multihashes (read as CIDv0). sha512 digests therefore cannot be advertised or found.
 */
const SHA2_256 = 0x12;

const DEFAULTS = {
  provideConcurrency: 64,
  recordValidityMs: 20 * 60_000,
  provideTimeoutMs: 30_000,
  dialTimeoutMs: 5_000,
  bootstrapRetryMs: 1_000,
  bootstrapRetryMaxMs: 30_000,
  /** While ready, keys whose provide failed are retried this often. */
  pendingRetryMs: 10_000,
  /** Housekeeping tick (bootstrap when empty, retry pending provides). */
  tickMs: 500,
  /** Bound for learning a provider's registry port through identify during a lookup. */
  identifyTimeoutMs: 2_000,
};

/** All-zero Kademlia id: any target works to list the whole routing table. */
const ZERO_KAD_ID = new Uint8Array(32);

/**
 * The parts of kad-dht 16's service object the batched provide uses (public class fields of
 * `KadDHT`, not part of its exported interface; checked at start so a changed version fails loudly).
 */
interface KadInternals {
  routingTable: {
    size: number;
    closestPeers(kadId: Uint8Array, options?: { count?: number }): PeerId[];
  };
  providers: {
    addProvider(cid: CID, provider: PeerId): Promise<void>;
    getProviders(cid: CID, options?: { signal?: AbortSignal }): Promise<PeerId[]>;
  };
}

function kadInternals(dht: KadDHT): KadInternals {
  const candidate = dht as unknown as Partial<KadInternals>;
  if (
    typeof candidate.routingTable?.closestPeers !== 'function' ||
    typeof candidate.providers?.addProvider !== 'function' ||
    typeof candidate.providers?.getProviders !== 'function'
  ) {
    throw new Error(
      '@libp2p/kad-dht: routingTable.closestPeers / providers.addProvider not found (version changed?)',
    );
  }
  return candidate as KadInternals;
}

const silentLogger: P2PLogger = { debug() {}, info() {}, warn() {}, error() {} };

type Services = { identify: Identify; ping: Ping; dht: KadDHT };

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function positiveInt(name: string, value: number | undefined, fallback: number, min = 1): number {
  if (value === undefined) {
    return fallback;
  }
  if (!Number.isInteger(value) || value < min) {
    throw new Error(`p2p option ${name} must be an integer >= ${min} (got ${String(value)})`);
  }
  return value;
}

function validPort(name: string, value: number, allowZero: boolean): number {
  if (!Number.isInteger(value) || value < (allowZero ? 0 : 1) || value > 65535) {
    throw new Error(`p2p option ${name} must be a port number (got ${String(value)})`);
  }
  return value;
}

function parseList<T>(name: string, entries: string[] | undefined, parse: (entry: string) => T): T[] {
  return (entries ?? []).map((entry, i) => {
    try {
      return parse(entry);
    } catch (err) {
      throw new Error(`p2p option ${name}[${i}]: ${errorText(err)}`);
    }
  });
}

async function defaultResolver(name: string): Promise<string[]> {
  const answers = await dnsLookup(name, { all: true });
  return answers.map((a) => a.address);
}

/** Create and start a Ferry P2P node. Rejects with an error naming the bad option on invalid input. */
export async function createP2PNode(opts: P2PNodeOptions): Promise<P2PNode> {
  const log = opts.logger ?? silentLogger;
  if (isIP(opts.listen?.host ?? '') === 0) {
    throw new Error(`p2p option listen.host must be an IP address (got ${String(opts.listen?.host)})`);
  }
  validPort('listen.port', opts.listen.port, true);
  const registryPort = validPort('registryPort', opts.registryPort, false);
  if (opts.announceHost !== undefined && isIP(opts.announceHost) === 0) {
    throw new Error(`p2p option announceHost must be an IP address (got ${opts.announceHost})`);
  }
  const provideConcurrency = positiveInt(
    'provideConcurrency',
    opts.provideConcurrency,
    DEFAULTS.provideConcurrency,
  );
  const validity = positiveInt('recordValidityMs', opts.recordValidityMs, DEFAULTS.recordValidityMs, 1_000);
  const provideTimeoutMs = positiveInt('provideTimeoutMs', opts.provideTimeoutMs, DEFAULTS.provideTimeoutMs);
  const dialTimeoutMs = positiveInt('dialTimeoutMs', opts.dialTimeoutMs, DEFAULTS.dialTimeoutMs);
  const bootstrapRetryMs = positiveInt('bootstrapRetryMs', opts.bootstrapRetryMs, DEFAULTS.bootstrapRetryMs);
  const staticTargets = parseList('bootstrapPeers', opts.bootstrapPeers, parseBootstrapPeer);
  const dnsTargets = parseList('bootstrapDns', opts.bootstrapDns, parseBootstrapDns);
  const resolver = opts.resolver ?? defaultResolver;
  const version = opts.version ?? pkg.version;
  const privateKey = await loadOrCreateKey(opts.dataDir);

  const listenAddr = ipMultiaddr(opts.listen.host, opts.listen.port);
  const announceHost = opts.announceHost;
  // stream limits sized for the provide concurrency: each provide opens a stream per peer
  const streamLimit = Math.max(64, provideConcurrency * 4);

  const libp2p: Libp2p<Services> = await createLibp2p({
    start: false,
    privateKey,
    // prefix queries (one per provider lookup) must not scan the whole store
    datastore: new SortedMemoryDatastore(),
    nodeInfo: { name: 'ferry', version, userAgent: formatAgentVersion(version, registryPort) },
    addresses: {
      listen: [listenAddr.toString()],
      ...(announceHost === undefined
        ? {}
        : { announceFilter: (addrs: Multiaddr[]) => announceAs(addrs, announceHost) }),
    },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    connectionManager: {
      // private cluster: many nodes may sit behind one IP (tests, SNAT); the default of 5 new
      // connections per second per host resets legitimate peers
      inboundConnectionThreshold: 200,
      maxIncomingPendingConnections: 64,
      maxConnections: 400,
      dialTimeout: dialTimeoutMs,
    },
    services: {
      identify: identify(),
      ping: ping(),
      dht: kadDHT({
        protocol: FERRY_KAD_PROTOCOL,
        clientMode: false,
        peerInfoMapper: passthroughMapper,
        allowQueryWithZeroPeers: false,
        maxInboundStreams: streamLimit,
        maxOutboundStreams: streamLimit,
        reprovide: {
          validity,
          // Ferry refreshes its own records (batched) every validity/2 and rewrites the local
          // record then; kad-dht's per-key reprovide only fires if that fell far behind
          threshold: Math.max(1, Math.floor(validity / 10)),
          interval: Math.max(100, Math.min(Math.floor(validity / 10), 60_000)),
          concurrency: Math.min(provideConcurrency, 32),
        },
      }),
    },
  });

  const node = new FerryNode(libp2p, {
    log,
    registryPort,
    provideConcurrency,
    provideTimeoutMs,
    recordValidityMs: validity,
    dialTimeoutMs,
    bootstrapRetryMs,
    staticTargets,
    dnsTargets,
    resolver,
    listenHost: opts.listen.host,
  });
  await node.start();
  return node;
}

function announceAs(addrs: Multiaddr[], host: string): Multiaddr[] {
  const out = new Map<string, Multiaddr>();
  for (const addr of addrs) {
    const parsed = ipAndPort(addr);
    if (parsed?.port === undefined) {
      continue;
    }
    const mapped = ipMultiaddr(host, parsed.port);
    out.set(mapped.toString(), mapped);
  }
  return [...out.values()];
}

interface FerryNodeInit {
  log: P2PLogger;
  registryPort: number;
  provideConcurrency: number;
  provideTimeoutMs: number;
  recordValidityMs: number;
  dialTimeoutMs: number;
  bootstrapRetryMs: number;
  staticTargets: BootstrapTarget[];
  dnsTargets: HostPort[];
  resolver: (name: string) => Promise<string[]>;
  listenHost: string;
}

interface IdentifiedPeer {
  agentVersion?: string;
  listenAddrs: Multiaddr[];
  /** The peer speaks our DHT protocol (a candidate for records). */
  dht: boolean;
}

/** A key the caller wants advertised. */
interface WantedKey {
  cid: CID;
  /** sha256 of the multihash bytes: the key's Kademlia id. */
  kadId: Uint8Array;
  /** When its records must be sent again (half the validity after the last send). */
  refreshAt: number;
}

class FerryNode implements P2PNode {
  readonly peerId: string;
  private readonly libp2p: Libp2p<Services>;
  private readonly init: FerryNodeInit;
  private readonly log: P2PLogger;
  private readonly queue: PQueue;
  private readonly kad: KadInternals;
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
  /** What identify told us about connected peers. */
  private readonly identified = new Map<string, IdentifiedPeer>();
  private refreshing: Promise<unknown> | undefined;
  private nextRefreshAt = Number.POSITIVE_INFINITY;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private bootstrapping: Promise<void> | undefined;
  private bootstrapDelay: number;
  private nextBootstrapAt = 0;
  private nextPendingRetryAt = 0;
  private stopping: Promise<void> | undefined;

  constructor(libp2p: Libp2p<Services>, init: FerryNodeInit) {
    this.libp2p = libp2p;
    this.init = init;
    this.log = init.log;
    this.peerId = libp2p.peerId.toString();
    this.queue = new PQueue({ concurrency: init.provideConcurrency });
    this.kad = kadInternals(libp2p.services.dht);
    this.bootstrapDelay = init.bootstrapRetryMs;
    // every queued provide listens on the stop signal
    setMaxListeners(Number.POSITIVE_INFINITY, this.stopController.signal);
  }

  get addresses(): string[] {
    return this.libp2p.getMultiaddrs().map((a) => a.toString());
  }

  async start(): Promise<void> {
    this.libp2p.addEventListener('peer:identify', (evt) => {
      const result = evt.detail;
      const id = result.peerId.toString();
      const entry: IdentifiedPeer = {
        listenAddrs: result.listenAddrs,
        dht: result.protocols.includes(FERRY_KAD_PROTOCOL),
      };
      if (result.agentVersion !== undefined) {
        entry.agentVersion = result.agentVersion;
      }
      this.identified.set(id, entry);
      if (entry.dht && !this.pushedTo.has(id)) {
        this.pushedTo.add(id);
        this.pushToNewPeer(id);
      }
    });
    this.libp2p.addEventListener('peer:disconnect', (evt) => {
      const id = evt.detail.toString();
      this.identified.delete(id);
      this.pushedTo.delete(id);
    });
    await this.libp2p.start();
    this.log.info({ peerId: this.peerId, addresses: this.addresses }, 'p2p node started');
    this.nextBootstrapAt = Date.now() + this.bootstrapDelay;
    this.bootstrapping = this.bootstrap().finally(() => {
      this.bootstrapping = undefined;
    });
    this.schedule();
  }

  ready(): boolean {
    return this.routingTableSize() > 0;
  }

  private routingTableSize(): number {
    return (this.libp2p.services.dht as SingleKadDHT).routingTable.size;
  }

  peers(): { id: string; addresses: string[] }[] {
    const byPeer = new Map<string, Set<string>>();
    for (const conn of this.libp2p.getConnections()) {
      const id = conn.remotePeer.toString();
      let set = byPeer.get(id);
      if (set === undefined) {
        set = new Set();
        byPeer.set(id, set);
      }
      const known = this.identified.get(id)?.listenAddrs ?? [];
      for (const addr of known.length > 0 ? known : [conn.remoteAddr]) {
        set.add(addr.toString());
      }
    }
    return [...byPeer].map(([id, addrs]) => ({ id, addresses: [...addrs] }));
  }

  // ---------------------------------------------------------------- advertise / withdraw

  async advertise(keys: string[]): Promise<void> {
    if (this.stopping !== undefined) {
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

  /**
   * Start a batch for `keys` (marked in flight unless it only targets one peer). The promise never
   * rejects; the batch is awaited by stop().
   */
  private runBatch(keys: string[], reason: string, onlyPeer?: string): Promise<number> {
    const job: Promise<number> = this.provideBatch(keys, onlyPeer)
      .catch((err: unknown) => {
        if (!this.stopController.signal.aborted) {
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
    if (keys.length === 0 || this.stopController.signal.aborted) {
      return 0;
    }
    const self = this.libp2p.peerId;
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
        await this.kad.providers.addProvider(entry.cid, self);
      }
    }
    const reached = await this.sendRecords(keys, onlyPeer);
    const dht = this.libp2p.services.dht;
    for (const key of keys) {
      const entry = this.wanted.get(key);
      if (entry === undefined) {
        // withdrawn while in flight: take back the local record written above
        const cid = keyToCid(key);
        await dht.cancelReprovide(cid).catch(() => {});
        continue;
      }
      if (reached.has(key)) {
        this.advertised.add(key);
        this.pending.delete(key);
      } else if (onlyPeer === undefined && !this.stopController.signal.aborted) {
        this.pending.add(key);
      }
    }
    return reached.size;
  }

  /** DHT peers we know: the routing table plus connected peers identified as speaking our DHT. */
  private candidates(): Candidate[] {
    const ids = new Map<string, PeerId>();
    const table = this.kad.routingTable;
    if (table.size > 0) {
      for (const id of table.closestPeers(ZERO_KAD_ID, { count: table.size })) {
        ids.set(id.toString(), id);
      }
    }
    for (const conn of this.libp2p.getConnections()) {
      const id = conn.remotePeer.toString();
      if (this.identified.get(id)?.dht === true) {
        ids.set(id, conn.remotePeer);
      }
    }
    ids.delete(this.peerId);
    return [...ids].map(([key, id]) => ({ id, key, kadId: kadId(id.toMultihash().bytes) }));
  }

  /**
   * Group `keys` per target peer (the k closest to each key) and write them in chunks, one stream
   * per chunk, through the shared queue. Returns the keys that reached at least one peer.
   */
  private async sendRecords(keys: string[], onlyPeer: string | undefined): Promise<Set<string>> {
    const reached = new Set<string>();
    const candidates = this.candidates();
    if (candidates.length === 0) {
      return reached;
    }
    const k = this.libp2p.services.dht.k;
    const perPeer = new Map<string, { peer: Candidate; keys: string[] }>();
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
    const provider = encodeProviderField(
      this.libp2p.peerId.toMultihash().bytes,
      this.libp2p.getMultiaddrs().map((a) => a.bytes),
    );
    const jobs: Promise<void>[] = [];
    for (const { peer, keys: peerKeys } of perPeer.values()) {
      for (let i = 0; i < peerKeys.length; i += MAX_MESSAGES_PER_STREAM) {
        const chunk = peerKeys.slice(i, i + MAX_MESSAGES_PER_STREAM);
        jobs.push(
          this.queue
            .add(
              async () => {
                const messages: Uint8Array[] = [];
                for (const key of chunk) {
                  const entry = this.wanted.get(key);
                  if (entry !== undefined) {
                    messages.push(encodeAddProvider(entry.cid.multihash.bytes, provider));
                  }
                }
                if (messages.length === 0) {
                  return;
                }
                const signal = AbortSignal.any([
                  AbortSignal.timeout(this.init.provideTimeoutMs),
                  this.stopController.signal,
                ]);
                await sendAddProviders(this.libp2p, peer.id, FERRY_KAD_PROTOCOL, messages, signal);
                for (const key of chunk) {
                  reached.add(key);
                }
              },
              { signal: this.stopController.signal },
            )
            .catch((err: unknown) => {
              if (!this.stopController.signal.aborted) {
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

  /** A DHT peer connected: send it every advertised key whose k closest peers include it. */
  private pushToNewPeer(peer: string): void {
    if (this.stopping !== undefined || this.wanted.size === 0) {
      return;
    }
    const keys = [...this.wanted.keys()];
    const started = Date.now();
    this.runBatch(keys, 'new peer', peer).then((reached) => {
      this.log.info({ peer, keys: reached, ms: Date.now() - started }, 'pushed provider records to new peer');
    });
  }

  async withdraw(keys: string[]): Promise<void> {
    const dht = this.libp2p.services.dht;
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
      if (!wasKnown || this.stopping !== undefined) {
        continue;
      }
      // no refresh from now on; a batch in flight removes the local record again when it ends
      try {
        await dht.cancelReprovide(cid);
      } catch (err) {
        this.log.warn({ key, err: errorText(err) }, 'cancelReprovide failed');
      }
    }
  }

  // ---------------------------------------------------------------- lookup

  async *lookup(key: string, opts: { signal: AbortSignal }): AsyncGenerator<Peer, void, undefined> {
    const cid = keyToCid(key);
    // peers reject any other multihash in DHT messages (they parse the key as a CIDv0/v1)
    if (cid.multihash.code !== SHA2_256 || opts.signal.aborted || this.stopping !== undefined) {
      return;
    }
    const signal = AbortSignal.any([opts.signal, this.stopController.signal]);
    const seen = new Set<string>();
    // Our own provider store first: the batched provide pushes every record to the k peers closest to
    // its key, so while we know fewer than k DHT peers (a cluster of up to k+1 nodes) every node's
    // records land here. A hit then costs no network round trip, and a key nobody pushed to us is a
    // miss at once, so containerd falls back to the upstream without waiting for a deadline; and a hit
    // lists every provider there is, so no network query runs (it would cost every node CPU on each
    // request for nothing). In a larger cluster the network query follows for more providers (the
    // caller stops it once one wins).
    const known = this.candidates().length;
    const complete = known > 0 && known < this.libp2p.services.dht.k;
    try {
      for (const id of await this.kad.providers.getProviders(cid, { signal })) {
        const key = id.toString();
        if (key === this.peerId || seen.has(key)) {
          continue;
        }
        seen.add(key);
        const peer = await this.toPeer({ id, multiaddrs: [] }, signal);
        if (signal.aborted) {
          return;
        }
        if (peer !== undefined) {
          yield peer;
        }
      }
    } catch (err) {
      if (!signal.aborted) {
        this.log.warn({ key, err: errorText(err) }, 'local provider lookup failed');
      }
    }
    if (complete || signal.aborted) {
      return;
    }
    try {
      for await (const event of this.libp2p.services.dht.findProviders(cid, { signal })) {
        if (event.name !== 'PROVIDER') {
          continue;
        }
        for (const provider of event.providers) {
          const id = provider.id.toString();
          if (id === this.peerId || seen.has(id)) {
            continue;
          }
          seen.add(id);
          const peer = await this.toPeer(provider, signal);
          if (signal.aborted) {
            return;
          }
          if (peer !== undefined) {
            yield peer;
          }
        }
      }
    } catch (err) {
      if (!signal.aborted) {
        this.log.warn({ key, err: errorText(err) }, 'provider lookup failed');
      }
    }
  }

  /** Registry endpoint of a provider: IP from its addresses, port from its agent version. */
  private async toPeer(provider: PeerInfo, signal: AbortSignal): Promise<Peer | undefined> {
    const id = provider.id.toString();
    let addrs: Multiaddr[] = provider.multiaddrs;
    if (addrs.length === 0) {
      addrs = this.identified.get(id)?.listenAddrs ?? [];
    }
    if (addrs.length === 0) {
      addrs = await this.libp2p.peerStore
        .get(provider.id, { signal })
        .then((p) => p.addresses.map((a) => a.multiaddr))
        .catch(() => []);
    }
    if (addrs.length === 0) {
      addrs = this.libp2p.getConnections(provider.id).map((c) => c.remoteAddr);
    }
    const host = pickHost(addrs);
    if (host === undefined) {
      this.log.debug({ peer: id }, 'provider has no IP address');
      return undefined;
    }
    const port = (await this.registryPortOf(provider, signal)) ?? this.init.registryPort;
    return { id, host, port };
  }

  private async registryPortOf(provider: PeerInfo, signal: AbortSignal): Promise<number | undefined> {
    const id = provider.id;
    const cached = parseRegistryPort(this.identified.get(id.toString())?.agentVersion);
    if (cached !== undefined) {
      return cached;
    }
    try {
      const stored = await this.libp2p.peerStore.get(id, { signal });
      const agent = stored.metadata.get('AgentVersion');
      const port = parseRegistryPort(agent === undefined ? undefined : new TextDecoder().decode(agent));
      if (port !== undefined) {
        return port;
      }
    } catch {
      // not in the peer store yet
    }
    // unknown peer: connect and ask it (identify), briefly
    try {
      const bounded = AbortSignal.any([signal, AbortSignal.timeout(DEFAULTS.identifyTimeoutMs)]);
      const conn =
        this.libp2p.getConnections(id)[0] ??
        (await this.libp2p.dial(
          provider.multiaddrs.length > 0 ? provider.multiaddrs.map((a) => withPeerId(a, id)) : id,
          { signal: bounded },
        ));
      const result = await this.libp2p.services.identify.identify(conn, { signal: bounded });
      return parseRegistryPort(result.agentVersion);
    } catch (err) {
      this.log.debug({ peer: id.toString(), err: errorText(err) }, 'could not learn registry port');
      return undefined;
    }
  }

  // ---------------------------------------------------------------- bootstrap

  private schedule(): void {
    if (this.stopping !== undefined) {
      return;
    }
    this.timer = setTimeout(() => {
      this.tick();
      this.schedule();
    }, DEFAULTS.tickMs);
    this.timer.unref();
  }

  private tick(): void {
    const now = Date.now();
    this.refreshDue(now);
    if (!this.ready()) {
      if (this.bootstrapping === undefined && now >= this.nextBootstrapAt) {
        this.nextBootstrapAt = now + this.bootstrapDelay;
        this.bootstrapDelay = Math.min(this.bootstrapDelay * 2, DEFAULTS.bootstrapRetryMaxMs);
        this.bootstrapping = this.bootstrap().finally(() => {
          this.bootstrapping = undefined;
        });
      }
      return;
    }
    this.bootstrapDelay = this.init.bootstrapRetryMs;
    if (this.pending.size > 0 && now >= this.nextPendingRetryAt) {
      this.nextPendingRetryAt = now + DEFAULTS.pendingRetryMs;
      const keys = [...this.pending].filter((key) => !this.inflight.has(key));
      this.pending.clear();
      if (keys.length > 0) {
        this.runBatch(keys, 'retry');
      }
    }
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

  /** Dial every bootstrap target (static and DNS) that is not this node. Never throws. */
  private async bootstrap(): Promise<void> {
    const targets: BootstrapTarget[] = [...this.init.staticTargets];
    await Promise.all(
      this.init.dnsTargets.map(async ({ host, port }) => {
        try {
          const ips = isIP(host) !== 0 ? [host] : await this.init.resolver(host);
          for (const ip of ips) {
            if (isIP(ip) !== 0) {
              targets.push({ addr: ipMultiaddr(ip, port), source: `${host}:${port}` });
            }
          }
        } catch (err) {
          this.log.warn({ name: host, err: errorText(err) }, 'bootstrap DNS lookup failed');
        }
      }),
    );
    if (targets.length === 0 || this.stopping !== undefined) {
      return;
    }
    const own = this.ownEndpoints();
    const connected = new Set(this.libp2p.getConnections().map((c) => c.remotePeer.toString()));
    const dials = targets.filter(({ addr }) => {
      const id = peerIdOf(addr);
      if (id !== undefined) {
        return id !== this.peerId && !connected.has(id);
      }
      const ep = ipAndPort(addr);
      return ep?.port === undefined || !own.has(`${ep.ip}|${ep.port}`);
    });
    this.log.debug({ targets: dials.map((t) => t.addr.toString()) }, 'bootstrapping');
    await Promise.all(
      dials.map(async ({ addr, source }) => {
        try {
          const signal = AbortSignal.any([
            AbortSignal.timeout(this.init.dialTimeoutMs),
            this.stopController.signal,
          ]);
          const conn = await this.libp2p.dial(addr, { signal });
          this.log.debug(
            { peer: conn.remotePeer.toString(), addr: addr.toString() },
            'bootstrap peer connected',
          );
        } catch (err) {
          if (!this.stopController.signal.aborted) {
            this.log.debug({ source, addr: addr.toString(), err: errorText(err) }, 'bootstrap dial failed');
          }
        }
      }),
    );
  }

  /** `ip|port` pairs that reach this node (listen and announced addresses, all interfaces if unspecified). */
  private ownEndpoints(): Set<string> {
    const out = new Set<string>();
    const ports = new Set<number>();
    for (const addr of this.libp2p.getMultiaddrs()) {
      const ep = ipAndPort(addr);
      if (ep?.port !== undefined) {
        out.add(`${ep.ip}|${ep.port}`);
        ports.add(ep.port);
      }
    }
    const hosts = [this.init.listenHost];
    if (this.init.listenHost === '0.0.0.0' || this.init.listenHost === '::') {
      for (const list of Object.values(networkInterfaces())) {
        for (const info of list ?? []) {
          hosts.push(info.address);
        }
      }
    }
    for (const host of hosts) {
      for (const port of ports) {
        out.add(`${host}|${port}`);
      }
    }
    return out;
  }

  // ---------------------------------------------------------------- stop

  stop(): Promise<void> {
    this.stopping ??= (async () => {
      clearTimeout(this.timer);
      this.stopController.abort();
      await Promise.allSettled([...this.batches]);
      await this.queue.onIdle();
      await this.bootstrapping;
      await this.libp2p.stop();
      this.log.info({ peerId: this.peerId }, 'p2p node stopped');
    })();
    return this.stopping;
  }
}

function withPeerId(addr: Multiaddr, id: PeerId): Multiaddr {
  return peerIdOf(addr) === undefined ? addr.encapsulate(multiaddr(`/p2p/${id.toString()}`)) : addr;
}
