// What this node knows about other DHT peers: identify results of connected peers, and the set of
// peers provider records may go to (routing table plus connected peers speaking our DHT protocol).
import type { IdentifyResult, PeerId } from '@libp2p/interface';
import type { Multiaddr } from '@multiformats/multiaddr';
import type { Libp2p } from 'libp2p';
import { ipAndPort } from './address.ts';
import { FERRY_ASK_PROTOCOL } from './ask-peers.ts';
import { type Candidate, kadId } from './batch-provide.ts';
import { type KadInternals, routingTablePeers } from './kad-internals.ts';
import { FERRY_PROVIDERS_PROTOCOL } from './provider-batches.ts';

export interface IdentifiedPeer {
  agentVersion?: string;
  listenAddrs: Multiaddr[];
  /** The peer speaks our DHT protocol (a candidate for records). */
  dht: boolean;
  /** The peer takes records on Ferry's compact protocol (provider-batches.ts). */
  batches: boolean;
  /** The peer answers provider questions on Ferry's protocol (ask-peers.ts). */
  ask: boolean;
}

export class PeerBook {
  private readonly identified = new Map<string, IdentifiedPeer>();
  private readonly libp2p: Libp2p;
  private readonly kad: KadInternals;
  private readonly protocol: string;

  constructor(libp2p: Libp2p, kad: KadInternals, protocol: string) {
    this.libp2p = libp2p;
    this.kad = kad;
    this.protocol = protocol;
  }

  /** Record an identify result; true when the peer speaks our DHT protocol. */
  onIdentify(result: IdentifyResult): boolean {
    const entry: IdentifiedPeer = {
      listenAddrs: result.listenAddrs,
      dht: result.protocols.includes(this.protocol),
      batches: result.protocols.includes(FERRY_PROVIDERS_PROTOCOL),
      ask: result.protocols.includes(FERRY_ASK_PROTOCOL),
    };
    if (result.agentVersion !== undefined) {
      entry.agentVersion = result.agentVersion;
    }
    this.identified.set(result.peerId.toString(), entry);
    return entry.dht;
  }

  onDisconnect(id: string): void {
    this.identified.delete(id);
  }

  get(id: string): IdentifiedPeer | undefined {
    return this.identified.get(id);
  }

  /** Connected peers identified as speaking our DHT, with their listen addresses. */
  dhtConnected(): { id: PeerId; addrs: Multiaddr[] }[] {
    const out = new Map<string, { id: PeerId; addrs: Multiaddr[] }>();
    for (const conn of this.libp2p.getConnections()) {
      const key = conn.remotePeer.toString();
      const info = this.identified.get(key);
      if (info?.dht === true && !out.has(key)) {
        out.set(key, { id: conn.remotePeer, addrs: info.listenAddrs });
      }
    }
    return [...out.values()];
  }

  /**
   * DHT peers we know: the routing table plus connected peers identified as speaking our DHT,
   * less the ones `isDead` names.
   */
  candidates(isDead: (id: string) => boolean = () => false): Candidate[] {
    const ids = new Map<string, PeerId>();
    for (const id of routingTablePeers(this.kad)) {
      if (!isDead(id.toString())) {
        ids.set(id.toString(), id);
      }
    }
    for (const conn of this.libp2p.getConnections()) {
      const id = conn.remotePeer.toString();
      if (this.identified.get(id)?.dht === true) {
        ids.set(id, conn.remotePeer);
      }
    }
    ids.delete(this.libp2p.peerId.toString());
    return [...ids].map(([key, id]) => ({ id, key, kadId: kadId(id.toMultihash().bytes) }));
  }

  /** Whether a connected peer said (identify) it listens on `ip`:`port`. */
  listensAt(ip: string, port: number): boolean {
    for (const conn of this.libp2p.getConnections()) {
      for (const addr of this.identified.get(conn.remotePeer.toString())?.listenAddrs ?? []) {
        const ep = ipAndPort(addr);
        if (ep?.ip === ip && ep.port === port) {
          return true;
        }
      }
    }
    return false;
  }

  /** Connected peers with their listen addresses (from identify; the connection's address otherwise). */
  connected(): { id: string; addresses: string[] }[] {
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
}
