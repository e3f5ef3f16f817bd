// Everything Ferry reads from kad-dht 16 beyond its exported interface, in one place: when kad-dht
// changes, this file is the one to adapt. The members used are public class fields of `KadDHT`; they
// are checked at start so that a changed version fails loudly instead of misbehaving.
import type { Connection, PeerId } from '@libp2p/interface';
import type { KadDHT } from '@libp2p/kad-dht';
import type { CID } from 'multiformats/cid';
import type { ProviderStore } from './provider-store.ts';

/** The parts of kad-dht 16's service object Ferry uses. */
export interface KadInternals {
  routingTable: {
    size: number;
    closestPeers(kadId: Uint8Array, options?: { count?: number }): PeerId[];
  };
  providers: {
    addProvider(cid: CID, provider: PeerId): Promise<void>;
    getProviders(cid: CID, options?: { signal?: AbortSignal }): Promise<PeerId[]>;
    removeProvider(cid: CID, provider: PeerId): Promise<void>;
  };
}

/** All-zero Kademlia id: any target works to list the whole routing table. */
const ZERO_KAD_ID = new Uint8Array(32);

export function kadInternals(dht: KadDHT): KadInternals {
  const candidate = dht as unknown as Partial<KadInternals>;
  if (
    typeof candidate.routingTable?.closestPeers !== 'function' ||
    typeof candidate.routingTable?.size !== 'number' ||
    typeof candidate.providers?.addProvider !== 'function' ||
    typeof candidate.providers?.getProviders !== 'function' ||
    typeof candidate.providers?.removeProvider !== 'function'
  ) {
    throw new Error(
      '@libp2p/kad-dht: routingTable.closestPeers / providers.addProvider not found (version changed?)',
    );
  }
  return candidate as KadInternals;
}

/** Every peer in the routing table. */
export function routingTablePeers(kad: KadInternals): PeerId[] {
  const table = kad.routingTable;
  return table.size > 0 ? table.closestPeers(ZERO_KAD_ID, { count: table.size }) : [];
}

/**
 * Make kad-dht keep its provider records in Ferry's `store`: its ADD_PROVIDER and GET_PROVIDERS
 * handlers, its provide/cancelReprovide and Ferry's own calls all go through `dht.providers`, whose
 * three methods are replaced on the instance. kad-dht's reprovider then finds no records in the
 * datastore: Ferry refreshes its own records (provide.ts) and the store expires the others.
 */
export function installProviderStore(kad: KadInternals, store: ProviderStore): void {
  const providers = kad.providers;
  providers.addProvider = async (cid, provider) => {
    store.add(cid.multihash.bytes, provider);
  };
  providers.getProviders = async (cid) => store.get(cid.multihash.bytes);
  providers.removeProvider = async (cid, provider) => {
    store.remove(cid.multihash.bytes, provider);
  };
}

/**
 * Call `onStream` for every stream a peer opens for `protocol` (for the stats): wraps the handler
 * registered in libp2p's registrar (`components.registrar`, not in its typed interface), in place.
 */
export function countInboundStreams(libp2p: object, protocol: string, onStream: () => void): void {
  const registrar = (libp2p as { components?: { registrar?: { getHandler?: unknown } } }).components
    ?.registrar as { getHandler(p: string): { handler: (...args: unknown[]) => unknown } } | undefined;
  if (typeof registrar?.getHandler !== 'function') {
    throw new Error('libp2p: components.registrar.getHandler not found (version changed?)');
  }
  const entry = registrar.getHandler(protocol);
  const handler = entry.handler;
  entry.handler = (...args: unknown[]) => {
    onStream();
    return handler(...args);
  };
}

/** What liveness.ts uses of a connection's yamux muxer (`Connection.muxer`, not in the interface). */
export interface MuxerInternals {
  /** Called with every chunk read from the connection (replaced on the instance to watch it). */
  onData(buf: unknown): void;
  /**
   * Send a yamux PING frame (or join the one in flight); resolves with the round trip once the peer
   * answered. yamux forgets a ping whose `signal` aborted, and takes its late answer for a protocol
   * error that aborts the connection: liveness.ts passes no signal.
   */
  ping(options?: { signal?: AbortSignal }): Promise<number>;
}

/** The yamux muxer of a connection, or undefined if libp2p no longer exposes it this way. */
export function connectionMuxer(conn: Connection): MuxerInternals | undefined {
  const muxer = (conn as unknown as { muxer?: Partial<MuxerInternals> }).muxer;
  return typeof muxer?.onData === 'function' && typeof muxer.ping === 'function'
    ? (muxer as MuxerInternals)
    : undefined;
}

/**
 * Turn off the kad-dht 16 maintenance Ferry does not need below the mesh limit, where the
 * members protocol (membership.ts) connects every node to every other: the routing-table refresh
 * (random-walk queries every 5 minutes, not configurable) is moved to `refreshMs`, and a peer that
 * connected is added to the routing table without the ping kad-dht sends it first (it just
 * completed a noise handshake and identify with us). Full buckets still ping their old contacts.
 */
export function quietKadMaintenance(dht: KadDHT, refreshMs: number): void {
  const internals = dht as unknown as {
    routingTableRefresh?: { refreshInterval?: number };
    routingTable?: { kb?: { verify?: unknown } };
  };
  const refresh = internals.routingTableRefresh;
  const kb = internals.routingTable?.kb;
  if (typeof refresh?.refreshInterval !== 'number' || typeof kb?.verify !== 'function') {
    throw new Error('@libp2p/kad-dht: routingTableRefresh / routingTable.kb not found (version changed?)');
  }
  refresh.refreshInterval = refreshMs;
  kb.verify = async () => true;
}
