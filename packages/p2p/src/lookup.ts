// Lookup: the peers that provide a key, as registry endpoints. Reads the local provider store first,
// then (in a cluster larger than the local view covers) runs kad-dht's iterative GET_PROVIDERS query.
import type { Connection, PeerId, PeerInfo } from '@libp2p/interface';
import type { KadDHT } from '@libp2p/kad-dht';
import { type Multiaddr, multiaddr } from '@multiformats/multiaddr';
import type { Libp2p } from 'libp2p';
import { ipAndPort, parseRegistryPort, peerIdOf } from './address.ts';
import type { KadInternals } from './kad-internals.ts';
import { keyToCid } from './keys.ts';
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
  /** Aborted when the node stops. */
  stopSignal: AbortSignal;
}

export class Lookup {
  private readonly init: LookupInit;
  private readonly log: P2PLogger;

  constructor(init: LookupInit) {
    this.init = init;
    this.log = init.log;
  }

  async *lookup(key: string, opts: { signal: AbortSignal }): AsyncGenerator<Peer, void, undefined> {
    const cid = keyToCid(key);
    const { libp2p, stopSignal } = this.init;
    // peers reject any other multihash in DHT messages (they parse the key as a CIDv0/v1)
    if (cid.multihash.code !== SHA2_256 || opts.signal.aborted || stopSignal.aborted) {
      return;
    }
    const self = libp2p.peerId.toString();
    const signal = AbortSignal.any([opts.signal, stopSignal]);
    const seen = new Set<string>();
    // Our own provider store first: the batched provide pushes every record to the k peers closest to
    // its key, so while we know fewer than k DHT peers (a cluster of up to k+1 nodes) every node's
    // records land here. A hit then costs no network round trip, and a key nobody pushed to us is a
    // miss at once, so containerd falls back to the upstream without waiting for a deadline; and a hit
    // lists every provider there is, so no network query runs (it would cost every node CPU on each
    // request for nothing). In a larger cluster the network query follows for more providers (the
    // caller stops it once one wins).
    const known = this.init.peers.candidates().length;
    const complete = known > 0 && known < libp2p.services.dht.k;
    try {
      for (const id of await this.init.kad.providers.getProviders(cid, { signal })) {
        const key = id.toString();
        if (key === self || seen.has(key)) {
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
      for await (const event of libp2p.services.dht.findProviders(cid, { signal })) {
        if (event.name !== 'PROVIDER') {
          continue;
        }
        for (const provider of event.providers) {
          const id = provider.id.toString();
          if (id === self || seen.has(id)) {
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
      const addrs = provider.multiaddrs.map((a) => withPeerId(a, provider.id));
      return await libp2p.dial(addrs.length > 0 ? addrs : provider.id, { signal: bounded });
    } catch (err) {
      this.log.debug({ peer: provider.id.toString(), err: errorText(err) }, 'provider not reachable');
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

function withPeerId(addr: Multiaddr, id: PeerId): Multiaddr {
  return peerIdOf(addr) === undefined ? addr.encapsulate(multiaddr(`/p2p/${id.toString()}`)) : addr;
}
