// A plain libp2p peer for protocol tests: TCP, noise, yamux and identify, no DHT and no Ferry
// protocols unless the test handles them (a hostile or foreign peer, an asker).
import { noise } from '@chainsafe/libp2p-noise';
import { yamux } from '@chainsafe/libp2p-yamux';
import { identify } from '@libp2p/identify';
import { tcp } from '@libp2p/tcp';
import { createLibp2p } from 'libp2p';

/**
 * A started peer listening on `host` (a free port). The caller stops it. `ferryLiveness`: without
 * libp2p's connection monitor and yamux keep-alive, as a Ferry node runs (its own liveness.ts).
 */
export function plainPeer(host: string, opts: { ferryLiveness?: boolean } = {}) {
  const libp2pLiveness = opts.ferryLiveness !== true;
  return createLibp2p({
    addresses: { listen: [`/ip4/${host}/tcp/0`] },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux({ enableKeepAlive: libp2pLiveness })],
    connectionMonitor: { enabled: libp2pLiveness },
    services: { identify: identify() },
  });
}
