import type { Peer, Router } from '@ferry/interface';
import type { CID } from 'multiformats/cid';

/** A pino-compatible logger; only these four levels are used. */
export interface P2PLogger {
  debug(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

export interface P2PNodeOptions {
  /** TCP address libp2p listens on. `host` must be an IP (`0.0.0.0`/`::` for all); port 0 picks one. */
  listen: { host: string; port: number };
  /** IP announced to peers instead of the listen host (e.g. the pod IP when listening on 0.0.0.0). */
  announceHost?: string;
  /** Port of this node's registry; announced to peers in identify's agent version `ferry/<v> registry=<port>`. */
  registryPort: number;
  /** Directory holding `peer.key` (mode 0600) so the peer id survives restarts; ephemeral identity when absent. */
  dataDir?: string;
  /** Static bootstrap peers: `ip:port`, `[v6]:port`, or a multiaddr with optional `/p2p/<id>`. */
  bootstrapPeers?: string[];
  /** DNS bootstrap entries `name:port`; every A/AAAA address of the name is dialled (headless Service). */
  bootstrapDns?: string[];
  /**
   * Do not dial the bootstrap targets at start, only once `join()` is called (the agent first lists
   * what its containerd holds, so that its first connections carry its records). Peers may still
   * dial in meanwhile.
   */
  joinLater?: boolean;
  /** Resolves a name to its IP addresses (default: `dns.lookup` with `all: true`). Injectable for tests. */
  resolver?: (name: string) => Promise<string[]>;
  /**
   * How many provider-record streams run at the same time (default 64). Records are sent in
   * batches: one stream per peer carries up to 1,000 keys.
   */
  provideConcurrency?: number;
  /**
   * Lifetime of provider records (default 20 min, min 1 s). Peers drop our records this long after
   * the last (re)send; we send each key again when half of it has passed. Withdrawn keys vanish
   * from peers within this time plus one sweep (validity/10, at most 60 s).
   */
  recordValidityMs?: number;
  /**
   * Cluster size up to which every node keeps a connection to every other member and sends every
   * provider record to every member (default 128); beyond it records go to the k = 20 closest
   * peers and lookups query the DHT, as plain Kademlia does.
   */
  meshLimit?: number;
  /** Upper bound for one stream of provider records (open, write, peer's acknowledgement), default 30 s. */
  provideTimeoutMs?: number;
  /**
   * Deadline for the answer to a liveness ping (sent on a connection quiet for 3 s, from one end):
   * a peer silent that long is taken as gone, its connections closed and its records dropped
   * (default 5 s).
   */
  pingTimeoutMs?: number;
  /** Upper bound for one bootstrap dial, default 5 s. */
  dialTimeoutMs?: number;
  /** First delay before re-bootstrapping while the routing table is empty (default 1 s; doubles up to 30 s). */
  bootstrapRetryMs?: number;
  /**
   * The cluster's network keys (32 bytes each, e.g. from `readNetworkKeyFile`): the DHT runs as a
   * private network only their holders can join. The first key dials; every key is accepted
   * (rotation). Without keys anyone who reaches the listen address can join.
   */
  networkKeys?: Uint8Array[];
  /** Version announced in the agent version (default: this package's version). */
  version?: string;
  /** pino-like logger (default: silent). */
  logger?: P2PLogger;
}

export interface P2PNode extends Router {
  /** This node's peer id (base58btc). */
  readonly peerId: string;
  /** Multiaddrs this node announces, each ending in `/p2p/<peerId>`. */
  readonly addresses: string[];
  /**
   * Provide keys (digests or tag keys) to the DHT: each key's record goes to the k (20) known peers
   * closest to it, batched per peer. Keys already advertised or in flight are not sent again.
   * Resolves when every key reached a peer or failed (failures are logged and retried in the
   * background; with no peer yet, keys wait for one; invalid keys are logged and skipped).
   * sha512 digests are skipped with a warning: kad-dht 16 peers reject non-sha2-256 DHT keys.
   */
  advertise(keys: string[]): Promise<void>;
  /**
   * Stop advertising keys: their local provider records are removed and they are no longer
   * refreshed or pushed to new peers. Kademlia has no "unprovide": copies held by peers expire after `recordValidityMs`.
   */
  withdraw(keys: string[]): Promise<void>;
  /**
   * Peers that provide `key`, as registry endpoints. Never yields this node, never the same peer
   * twice; ends when the query is exhausted or `signal` aborts (never throws on abort).
   * A sha512 digest ends at once with no peers (see `advertise`).
   * @throws InvalidKeyError (on first iteration) for a malformed digest.
   */
  lookup(key: string, opts: { signal: AbortSignal }): AsyncIterable<Peer>;
  /** True when the DHT routing table holds at least one peer (queries can run). */
  ready(): boolean;
  /** Start dialling the bootstrap targets (with `joinLater`; a no-op once started or stopped). */
  join(): void;
  /** Connected peers with their listen addresses (from identify; the connection's address otherwise). */
  peers(): { id: string; addresses: string[] }[];
  /**
   * Sign `data` with this node's libp2p identity key (Ed25519). Peers check it with
   * `verifyPeerSignature(peerId, data, signature)`.
   */
  sign(data: Uint8Array): Promise<Uint8Array>;
  /** Counters for tests and benchmarks. */
  stats(): P2PStats;
  /** Stop timers, abort queries and provides, close every connection. Idempotent. */
  stop(): Promise<void>;
}

export interface P2PStats {
  /** DHT members connected. */
  members: number;
  /** The local provider store is taken as the whole cluster's (membership.ts). */
  settled: boolean;
  /** Provider records held (key × provider), this node's own included, and keys. */
  records: number;
  keys: number;
  /** Streams peers opened to this node since start, per protocol (kad, members). */
  inboundStreams: Record<string, number>;
  /**
   * Lookups since start: answered locally, those that asked peers, and those answered locally only
   * because the node's bound on rounds asking peers was reached (also counted in `local`).
   */
  lookups: { local: number; network: number; shed: number };
  /** Open connections (a peer has one unless a duplicate is closing). */
  connections: number;
  /**
   * Newcomers introduced since start (membership.ts): introductions this node sent (one per member
   * told), received, and of those ignored (not from an identified member).
   */
  introductions: { sent: number; received: number; ignored: number };
  /**
   * Liveness since start (liveness.ts): pings sent, duplicate connections closed, peers that left
   * this node's ping unanswered, deadlines waited again because this node's own event loop let
   * them pass late; suspicions (suspicion.ts): suspects this node told its members
   * of, suspicions received, confirmed by this node's own ping, cleared (the peer answered), and
   * ignored (rate, bounds, malformed, not from a member, about a peer not connected).
   */
  liveness: {
    pings: number;
    duplicatesClosed: number;
    unresponsive: number;
    stalledProbes: number;
    suspicions: { told: number; received: number; confirmed: number; cleared: number; ignored: number };
  };
}

export type { CID, Peer, Router };
