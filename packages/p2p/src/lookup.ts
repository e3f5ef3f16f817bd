// Lookup: the peers that provide a key, as registry endpoints. Reads the local provider store first;
// when the local view is not known complete (membership.ts), asks the connected members closest to
// the key at once with a short deadline (ask-peers.ts, Ferry's: 3 below the mesh limit, k at it),
// and only when that found nothing and this node is at the mesh limit (the cluster may be larger
// than the mesh) runs kad-dht's iterative GET_PROVIDERS query. Below the limit every connected
// member holds every record once settled, so the iterative query (which dials peers it hears of and
// runs until the caller's deadline) would only add load: while members join, every miss on every
// node started one.
// Rounds that ask peers are bounded per node (`MAX_ASKS_IN_FLIGHT`): while views are unsettled (a
// member joining, deaths being learnt) each lookup would otherwise cost k streams on k members, and
// a burst of lookups on every node multiplies into a storm that delays the very connections that
// settle the views. Beyond the bound a lookup answers from the local store alone (counted as shed).
import type { Connection, PeerInfo } from '@libp2p/interface';
import type { KadDHT } from '@libp2p/kad-dht';
import type { Libp2p } from 'libp2p';
import { ipAndPort, parseRegistryPort, withPeerId } from './address.ts';
import { askClosestMembers, type FoundProvider } from './ask-peers.ts';
import type { KadInternals } from './kad-internals.ts';
import { keyToCid } from './keys.ts';
import type { Membership } from './membership.ts';
import { DEFAULTS, errorText } from './options.ts';
import type { PeerBook } from './peer-book.ts';
import { SHA2_256 } from './provide.ts';
import type { P2PLogger, Peer } from './types.ts';

export interface LookupInit {
  libp2p: Libp2p<{ dht: KadDHT; identify: import('@libp2p/identify').Identify }>;
  kad: KadInternals;
  peers: PeerBook;
  log: P2PLogger;
  registryPort: number;
  membership: Membership;
  /** Peers suspected dead by a member and being checked (suspicion.ts): never yielded meanwhile. */
  isSuspect: (id: string) => boolean;
  /** Aborted when the node stops. */
  stopSignal: AbortSignal;
  /** DHT protocol id (for the direct GET_PROVIDERS round). */
  protocol: string;
}

/**
 * Members asked per round below the mesh limit: any settled member holds every record then, so a
 * few answers do; at the limit (the cluster may be larger than the mesh) the k closest are asked,
 * as kad-dht places records.
 */
const ASK_IN_MESH = 3;
/** Rounds asking peers (ask-peers.ts) in flight per node. */
const MAX_ASKS_IN_FLIGHT = 8;

export class Lookup {
  private readonly init: LookupInit;
  private readonly log: P2PLogger;
  /**
   * Lookups answered from the local store alone, those that asked peers, and those answered from the
   * local store alone because MAX_ASKS_IN_FLIGHT rounds were running (`shed`, also in `local`).
   */
  readonly counts = { local: 0, network: 0, shed: 0 };
  private asksInFlight = 0;

  constructor(init: LookupInit) {
    this.init = init;
    this.log = init.log;
  }

  /** Known dead, or suspected dead by a member while this node checks. */
  private avoided(id: string): boolean {
    return this.init.membership.isDead(id) || this.init.isSuspect(id);
  }

  async *lookup(key: string, opts: { signal: AbortSignal }): AsyncGenerator<Peer, void, undefined> {
    const cid = keyToCid(key);
    const { libp2p, stopSignal, membership } = this.init;
    // peers reject any other multihash in DHT messages (they parse the key as a CIDv0/v1)
    if (cid.multihash.code !== SHA2_256 || opts.signal.aborted || stopSignal.aborted) {
      return;
    }
    const signal = AbortSignal.any([opts.signal, stopSignal]);
    const seen = new Set<string>([libp2p.peerId.toString()]);
    // Our own provider store first. While the cluster fits the mesh (membership.ts), every member
    // sends every record to every member, so once the mesh is settled the store is complete: a hit
    // lists every provider and a miss ends at once, with no network query (one per request would
    // cost every node CPU for nothing). Otherwise the closest members are asked after the local hits
    // (askMembers), and at the mesh limit kad-dht's iterative query after them.
    const complete = membership.settled();
    let found = 0;
    let stored = 0;
    try {
      const local = await this.init.kad.providers.getProviders(cid, { signal });
      stored = local.length;
      for await (const peer of this.yieldPeers(
        local.map((id) => ({ id, multiaddrs: [] })),
        seen,
        signal,
      )) {
        found++;
        yield peer;
      }
    } catch (err) {
      if (!signal.aborted) {
        this.log.warn({ key, err: errorText(err) }, 'local provider lookup failed');
      }
    }
    const shed = !complete && this.asksInFlight >= MAX_ASKS_IN_FLIGHT;
    if (complete || shed || signal.aborted) {
      this.counts.local++;
      if (shed) {
        this.counts.shed++;
      }
      if (found === 0 && !signal.aborted) {
        // a miss answered from the store alone: the records it held (of peers known dead, or unreachable)
        this.log.debug({ key, stored }, 'lookup: no provider in the settled local store');
      }
      return;
    }
    this.counts.network++;
    for await (const peer of this.askMembers(cid.multihash.bytes, seen, signal)) {
      found++;
      yield peer;
    }
    if (found > 0 || signal.aborted || membership.memberCount() < membership.meshLimit) {
      if (found === 0 && !signal.aborted) {
        this.log.debug({ key, stored }, 'lookup: no provider from the store or the closest members');
      }
      return;
    }
    try {
      for await (const event of libp2p.services.dht.findProviders(cid, { signal })) {
        if (event.name === 'PROVIDER') {
          for await (const peer of this.yieldPeers(event.providers, seen, signal)) {
            found++;
            yield peer;
          }
        }
      }
    } catch (err) {
      if (!signal.aborted) {
        this.log.warn({ key, err: errorText(err) }, 'provider lookup failed');
      }
    }
    if (found === 0 && !signal.aborted) {
      this.log.debug({ key, stored }, 'lookup: no provider from the store, the closest members or the DHT');
    }
  }

  /** One parallel GET_PROVIDERS round to the k closest connected members; providers as they come. */
  private async *askMembers(
    multihash: Uint8Array,
    seen: Set<string>,
    signal: AbortSignal,
  ): AsyncGenerator<Peer, void, undefined> {
    const { libp2p, peers, protocol } = this.init;
    const answers: FoundProvider[][] = [];
    let wake: (() => void) | undefined;
    let done = false;
    const round = AbortSignal.any([signal, AbortSignal.timeout(DEFAULTS.askPeersMs)]);
    const init = {
      getConnection: (id: import('@libp2p/interface').PeerId) =>
        libp2p.getConnections(id).find((c) => c.status === 'open'),
      peers,
      protocol,
      isDead: (id: string) => this.avoided(id),
    };
    // counted until the round ends (its deadline bounds it), whatever the caller does meanwhile
    this.asksInFlight++;
    const { membership } = this.init;
    const count = membership.memberCount() < membership.meshLimit ? ASK_IN_MESH : libp2p.services.dht.k;
    askClosestMembers(init, multihash, count, round, (providers) => {
      answers.push(providers);
      wake?.();
    }).finally(() => {
      this.asksInFlight--;
      done = true;
      wake?.();
    });
    for (;;) {
      const next = answers.shift();
      if (next !== undefined) {
        yield* this.yieldPeers(next, seen, signal);
        continue;
      }
      if (done || signal.aborted) {
        return;
      }
      await new Promise<void>((resolve) => {
        wake = resolve;
      });
      wake = undefined;
    }
  }

  /**
   * Yield the providers not seen yet, in an order no peer id can steer: connected ones first,
   * shuffled, then the others, shuffled (each dialled before it is yielded). Peers known dead are
   * never yielded.
   */
  private async *yieldPeers(
    providers: PeerInfo[],
    seen: Set<string>,
    signal: AbortSignal,
  ): AsyncGenerator<Peer, void, undefined> {
    const { libp2p } = this.init;
    const connected: PeerInfo[] = [];
    const other: PeerInfo[] = [];
    for (const provider of providers) {
      const id = provider.id.toString();
      if (seen.has(id) || this.avoided(id)) {
        continue;
      }
      seen.add(id);
      (libp2p.getConnections(provider.id).length > 0 ? connected : other).push(provider);
    }
    for (const provider of [...shuffle(connected), ...shuffle(other)]) {
      // known dead or suspected meanwhile (a closed connection's redial failed, a dial of an
      // earlier one, a member's suspicion)
      if (this.avoided(provider.id.toString())) {
        continue;
      }
      const peer = await this.toPeer(provider, signal);
      if (signal.aborted) {
        return;
      }
      if (peer !== undefined) {
        yield peer;
      }
    }
  }

  /**
   * Registry endpoint of a provider: the remote IP of the live libp2p connection to it (noise
   * authenticated that peer id), opened briefly if there is none; port from its agent version.
   * An announced address is only ever used to dial, never yielded: a provider that cannot be
   * reached now is not yielded at all.
   */
  private async toPeer(provider: PeerInfo, signal: AbortSignal): Promise<Peer | undefined> {
    const id = provider.id.toString();
    const conn = await this.connectionTo(provider, signal);
    const host = conn === undefined ? undefined : ipAndPort(conn.remoteAddr)?.ip;
    if (conn === undefined || host === undefined) {
      return undefined;
    }
    const port = (await this.registryPortOf(id, conn, signal)) ?? this.init.registryPort;
    return { id, host, port };
  }

  /** An open connection to the provider, dialled (bounded) when there is none. */
  private async connectionTo(provider: PeerInfo, signal: AbortSignal): Promise<Connection | undefined> {
    const { libp2p } = this.init;
    const open = libp2p.getConnections(provider.id).find((c) => c.status === 'open');
    if (open !== undefined) {
      return open;
    }
    try {
      const bounded = AbortSignal.any([signal, AbortSignal.timeout(DEFAULTS.identifyTimeoutMs)]);
      const addrs = provider.multiaddrs.map((a) => withPeerId(a, provider.id.toString()));
      return await libp2p.dial(addrs.length > 0 ? addrs : provider.id, { signal: bounded });
    } catch (err) {
      if (!signal.aborted) {
        this.log.debug({ peer: provider.id.toString(), err: errorText(err) }, 'provider not reachable');
        this.init.membership.onDialFailed(provider.id.toString());
      }
      return undefined;
    }
  }

  private async registryPortOf(
    id: string,
    conn: Connection,
    signal: AbortSignal,
  ): Promise<number | undefined> {
    const { libp2p } = this.init;
    const cached = parseRegistryPort(this.init.peers.get(id)?.agentVersion);
    if (cached !== undefined) {
      return cached;
    }
    try {
      const stored = await libp2p.peerStore.get(conn.remotePeer, { signal });
      const agent = stored.metadata.get('AgentVersion');
      const port = parseRegistryPort(agent === undefined ? undefined : new TextDecoder().decode(agent));
      if (port !== undefined) {
        return port;
      }
    } catch {
      // not in the peer store yet
    }
    // not identified yet: ask it (identify), briefly
    try {
      const bounded = AbortSignal.any([signal, AbortSignal.timeout(DEFAULTS.identifyTimeoutMs)]);
      const result = await libp2p.services.identify.identify(conn, { signal: bounded });
      return parseRegistryPort(result.agentVersion);
    } catch (err) {
      this.log.debug({ peer: id, err: errorText(err) }, 'could not learn registry port');
      return undefined;
    }
  }
}

/** Fisher–Yates, in place. */
function shuffle<T>(items: T[]): T[] {
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [items[i], items[j]] = [items[j] as T, items[i] as T];
  }
  return items;
}
