// The Ferry P2P node: a libp2p host (TCP, noise, yamux, identify, ping) running kad-dht under
// Ferry's own protocol id, composed of the provide (provide.ts), bootstrap (bootstrap.ts), lookup
// (lookup.ts) and membership (membership.ts) modules, with Ferry's provider store (provider-store.ts)
// in place of kad-dht's. Everything read from kad-dht's internals is in kad-internals.ts.
import { isIP } from 'node:net';
import { noise } from '@chainsafe/libp2p-noise';
import { yamux } from '@chainsafe/libp2p-yamux';
import { type Identify, identify } from '@libp2p/identify';
import type { PrivateKey } from '@libp2p/interface';
import { type KadDHT, kadDHT, passthroughMapper } from '@libp2p/kad-dht';
import { type Ping, ping } from '@libp2p/ping';
import { type TCPSocketOptions, tcp } from '@libp2p/tcp';
import type { Multiaddr } from '@multiformats/multiaddr';
import { createLibp2p, type Libp2p } from 'libp2p';
import pkg from '../package.json' with { type: 'json' };
import {
  formatAgentVersion,
  ipAndPort,
  ipMultiaddr,
  parseBootstrapDns,
  parseBootstrapPeer,
} from './address.ts';
import { FERRY_ASK_PROTOCOL, handleAsks } from './ask-peers.ts';
import { Bootstrapper } from './bootstrap.ts';
import { SortedMemoryDatastore } from './datastore.ts';
import { loadOrCreateKey } from './identity.ts';
import {
  countInboundStreams,
  installProviderStore,
  type KadInternals,
  kadInternals,
  quietKadMaintenance,
} from './kad-internals.ts';
import { Liveness } from './liveness.ts';
import { Lookup } from './lookup.ts';
import { FERRY_INTRODUCE_PROTOCOL, FERRY_MEMBERS_PROTOCOL, Membership } from './membership.ts';
import { NETWORK_KEY_LENGTH } from './network-key.ts';
import { DEFAULTS, defaultResolver, parseList, positiveInt, validPort } from './options.ts';
import { PeerBook } from './peer-book.ts';
import { privateNetwork } from './private-network.ts';
import { Provider } from './provide.ts';
import { FERRY_PROVIDERS_PROTOCOL, handleRecordBatches } from './provider-batches.ts';
import { ProviderStore } from './provider-store.ts';
import { FERRY_SUSPECT_PROTOCOL, Suspicion } from './suspicion.ts';
import type { P2PLogger, P2PNode, P2PNodeOptions, P2PStats, Peer } from './types.ts';

/** DHT protocol id: isolates Ferry clusters from IPFS and other DHTs. */
export const FERRY_KAD_PROTOCOL = '/ferry/kad/1.0.0';

const silentLogger: P2PLogger = { debug() {}, info() {}, warn() {}, error() {} };

type Services = { identify: Identify; ping: Ping; dht: KadDHT };

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
  const pingTimeoutMs = positiveInt('pingTimeoutMs', opts.pingTimeoutMs, DEFAULTS.pingTimeoutMs, 100);
  const bootstrapRetryMs = positiveInt('bootstrapRetryMs', opts.bootstrapRetryMs, DEFAULTS.bootstrapRetryMs);
  const staticTargets = parseList('bootstrapPeers', opts.bootstrapPeers, parseBootstrapPeer);
  const dnsTargets = parseList('bootstrapDns', opts.bootstrapDns, parseBootstrapDns);
  const resolver = opts.resolver ?? defaultResolver;
  const version = opts.version ?? pkg.version;
  const networkKeys = opts.networkKeys ?? [];
  if (networkKeys.some((k) => !(k instanceof Uint8Array) || k.length !== NETWORK_KEY_LENGTH)) {
    throw new Error(`p2p option networkKeys: every key must be ${NETWORK_KEY_LENGTH} bytes`);
  }
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
    // outgoing connections leave from the listen IP when it is a specific one, so peers see the
    // same IP as the one we announce (lookups yield a provider at its connection's address)
    // no socket inactivity timeout (libp2p's default closes a socket silent for 2 minutes): in the
    // mesh most connections are idle by design, and liveness.ts finds a silent dead peer
    transports: [
      tcp({
        ...localDialAddress(opts.listen.host),
        inboundSocketInactivityTimeout: 0,
        outboundSocketInactivityTimeout: 0,
      }),
    ],
    // with network keys, only holders of an accepted key get past the first bytes (private-network.ts)
    ...(networkKeys.length > 0 ? { connectionProtector: privateNetwork(networkKeys) } : {}),
    connectionEncrypters: [noise()],
    streamMuxers: [yamux({ enableKeepAlive: false })],
    connectionManager: {
      // private cluster: many nodes may sit behind one IP (tests, SNAT); the default of 5 new
      // connections per second per host resets legitimate peers
      inboundConnectionThreshold: 200,
      maxIncomingPendingConnections: 64,
      maxConnections: 400,
      dialTimeout: dialTimeoutMs,
    },
    // liveness is Ferry's (liveness.ts): one yamux PING from one end of a quiet connection, in
    // place of a new ping stream on every connection every 10 s from both ends
    connectionMonitor: { enabled: false },
    services: {
      identify: identify(),
      ping: ping(),
      dht: kadDHT({
        protocol: FERRY_KAD_PROTOCOL,
        clientMode: false,
        peerInfoMapper: passthroughMapper,
        allowQueryWithZeroPeers: false,
        // the members protocol keeps the mesh (membership.ts): kad-dht's own periodic self query
        // (and its routing-table refresh, kad-internals.ts) run hourly instead of every 5 minutes
        querySelfInterval: DEFAULTS.kadMaintenanceMs,
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

  const meshLimit = positiveInt('meshLimit', opts.meshLimit, DEFAULTS.meshLimit);
  const node = new FerryNode(
    libp2p,
    log,
    privateKey,
    validity,
    pingTimeoutMs,
    (kad, peers, stopSignal, isSuspect) => {
      const store = new ProviderStore({ validityMs: validity });
      installProviderStore(kad, store);
      const membership = new Membership({
        libp2p,
        peers,
        store,
        log,
        meshLimit,
        settleMs: DEFAULTS.settleMs,
        dialTimeoutMs,
        stopSignal,
      });
      return {
        store,
        membership,
        provider: new Provider({
          libp2p,
          dht: libp2p.services.dht,
          kad,
          peers,
          log,
          protocol: FERRY_KAD_PROTOCOL,
          provideConcurrency,
          provideTimeoutMs,
          recordValidityMs: validity,
          meshLimit,
          isDead: (id) => membership.isDead(id) || isSuspect(id),
        }),
        bootstrapper: new Bootstrapper({
          libp2p,
          log,
          staticTargets,
          dnsTargets,
          resolver,
          listenHost: opts.listen.host,
          dialTimeoutMs,
          bootstrapRetryMs,
          connectedAt: (ip, port) => peers.listensAt(ip, port),
        }),
        finder: new Lookup({
          libp2p,
          kad,
          peers,
          log,
          registryPort,
          membership,
          isSuspect,
          stopSignal,
          protocol: FERRY_KAD_PROTOCOL,
        }),
      };
    },
  );
  await node.start(opts.joinLater !== true);
  return node;
}

function localDialAddress(host: string): { dialOpts?: TCPSocketOptions } {
  if (host === '0.0.0.0' || host === '::') {
    return {};
  }
  // net.connect's localAddress: @libp2p/tcp spreads dialOpts into the socket options
  return { dialOpts: { localAddress: host } as TCPSocketOptions };
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

interface Parts {
  store: ProviderStore;
  membership: Membership;
  provider: Provider;
  bootstrapper: Bootstrapper;
  finder: Lookup;
}

class FerryNode implements P2PNode {
  readonly peerId: string;
  private readonly libp2p: Libp2p<Services>;
  private readonly log: P2PLogger;
  private readonly kad: KadInternals;
  private readonly privateKey: PrivateKey;
  private readonly peerBook: PeerBook;
  private readonly provider: Provider;
  private readonly bootstrapper: Bootstrapper;
  private readonly finder: Lookup;
  private readonly store: ProviderStore;
  private readonly membership: Membership;
  private readonly liveness: Liveness;
  private readonly suspicion: Suspicion;
  private readonly sweepMs: number;
  private nextSweepAt = 0;
  private readonly stopController = new AbortController();
  private readonly inbound: Record<string, number> = {};
  private timer: ReturnType<typeof setTimeout> | undefined;
  private stopping: Promise<void> | undefined;

  constructor(
    libp2p: Libp2p<Services>,
    log: P2PLogger,
    privateKey: PrivateKey,
    validityMs: number,
    pingTimeoutMs: number,
    parts: (
      kad: KadInternals,
      peers: PeerBook,
      stopSignal: AbortSignal,
      isSuspect: (id: string) => boolean,
    ) => Parts,
  ) {
    this.libp2p = libp2p;
    this.log = log;
    this.privateKey = privateKey;
    this.peerId = libp2p.peerId.toString();
    this.kad = kadInternals(libp2p.services.dht);
    quietKadMaintenance(libp2p.services.dht, DEFAULTS.kadMaintenanceMs);
    this.peerBook = new PeerBook(libp2p, this.kad, FERRY_KAD_PROTOCOL);
    const stopSignal = this.stopController.signal;
    const suspicion = new Suspicion({
      libp2p,
      log,
      timeoutMs: pingTimeoutMs,
      isMember: (id) => this.peerBook.get(id)?.dht === true,
      check: (peer) => this.liveness.check(peer),
      onConfirmed: (peer, reason) => this.membership.declareDead(peer, reason),
      stopSignal,
    });
    this.suspicion = suspicion;
    const built = parts(this.kad, this.peerBook, stopSignal, (id) => suspicion.isSuspect(id));
    this.provider = built.provider;
    this.bootstrapper = built.bootstrapper;
    this.finder = built.finder;
    this.store = built.store;
    this.membership = built.membership;
    this.liveness = new Liveness({
      libp2p,
      log,
      quietMs: DEFAULTS.livenessQuietMs,
      timeoutMs: pingTimeoutMs,
      skip: (peer) => suspicion.isSuspect(peer),
      // found by this node's own probe: dead here, and every member told (suspicion.ts)
      onUnresponsive: (peer, reason) => {
        this.membership.declareDead(peer, reason);
        suspicion.tell(
          peer,
          this.peerBook.dhtConnected().map((m) => m.id),
        );
      },
      stopSignal,
    });
    this.sweepMs = Math.max(1_000, Math.min(Math.floor(validityMs / 10), 30_000));
  }

  get addresses(): string[] {
    return this.libp2p.getMultiaddrs().map((a) => a.toString());
  }

  async start(join: boolean): Promise<void> {
    this.libp2p.addEventListener('connection:open', (evt) => this.liveness.onConnectionOpen(evt.detail));
    this.libp2p.addEventListener('peer:identify', (evt) => {
      if (this.peerBook.onIdentify(evt.detail)) {
        this.membership.onMemberIdentified(evt.detail.peerId, evt.detail.connection);
        this.provider.onPeerIdentified(evt.detail.peerId.toString());
      }
    });
    this.libp2p.addEventListener('peer:disconnect', (evt) => {
      const id = evt.detail.toString();
      const wasMember = this.peerBook.get(id)?.dht === true;
      this.peerBook.onDisconnect(id);
      this.provider.onPeerDisconnected(id);
      if (wasMember) {
        this.membership.onDisconnected(evt.detail);
      }
    });
    await this.membership.start();
    await this.suspicion.start();
    await handleRecordBatches(this.libp2p, this.store);
    await handleAsks(this.libp2p, this.store, this.peerBook, (id) => this.membership.isDead(id));
    await this.libp2p.start();
    for (const protocol of [
      FERRY_KAD_PROTOCOL,
      FERRY_MEMBERS_PROTOCOL,
      FERRY_INTRODUCE_PROTOCOL,
      FERRY_PROVIDERS_PROTOCOL,
      FERRY_ASK_PROTOCOL,
      FERRY_SUSPECT_PROTOCOL,
    ]) {
      countInboundStreams(this.libp2p, protocol, () => {
        this.inbound[protocol] = (this.inbound[protocol] ?? 0) + 1;
      });
    }
    this.log.info({ peerId: this.peerId, addresses: this.addresses }, 'p2p node started');
    if (join) {
      this.bootstrapper.start();
    }
    this.schedule();
  }

  ready(): boolean {
    return this.kad.routingTable.size > 0;
  }

  join(): void {
    this.bootstrapper.start();
  }

  peers(): { id: string; addresses: string[] }[] {
    return this.peerBook.connected();
  }

  advertise(keys: string[]): Promise<void> {
    return this.provider.advertise(keys);
  }

  withdraw(keys: string[]): Promise<void> {
    return this.provider.withdraw(keys);
  }

  lookup(key: string, opts: { signal: AbortSignal }): AsyncGenerator<Peer, void, undefined> {
    return this.finder.lookup(key, opts);
  }

  stats(): P2PStats {
    return {
      members: this.membership.memberCount(),
      settled: this.membership.settled(),
      records: this.store.size,
      keys: this.store.keys,
      inboundStreams: { ...this.inbound },
      lookups: { ...this.finder.counts },
      connections: this.libp2p.getConnections().length,
      introductions: {
        sent: this.membership.counts.introductionsSent,
        received: this.membership.counts.introductionsReceived,
        ignored: this.membership.counts.introductionsIgnored,
      },
      liveness: { ...this.liveness.counts, suspicions: { ...this.suspicion.counts } },
    };
  }

  async sign(data: Uint8Array): Promise<Uint8Array> {
    return await this.privateKey.sign(data);
  }

  private schedule(): void {
    if (this.stopping !== undefined) {
      return;
    }
    this.timer = setTimeout(() => {
      const now = Date.now();
      const ready = this.ready();
      this.provider.tick(now, ready);
      if (now >= this.nextSweepAt) {
        this.nextSweepAt = now + this.sweepMs;
        this.store.sweep(this.peerId);
      }
      this.membership.tick(now, DEFAULTS.gossipMs);
      this.liveness.tick(now);
      this.bootstrapper.tick(now, ready);
      this.schedule();
    }, DEFAULTS.tickMs);
    this.timer.unref();
  }

  stop(): Promise<void> {
    this.stopping ??= (async () => {
      clearTimeout(this.timer);
      this.stopController.abort();
      await Promise.all([this.provider.stop(), this.bootstrapper.stop()]);
      await this.libp2p.stop();
      this.log.info({ peerId: this.peerId }, 'p2p node stopped');
    })();
    return this.stopping;
  }
}
