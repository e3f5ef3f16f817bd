// Helpers of the many-node scenarios (test/e2e/scale-25.test.ts, test/bench/agents.ts): the bundled
// build the image runs, kad-dht's distance, a listener that stands in for a dead node's registry, and
// per-node figures read from the agents.
import { createHash } from 'node:crypto';
import { rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { dirname, join } from 'node:path';
import { keyToCid, PEER_AUTH_HEADER } from '@ferry/p2p';
import { peerIdFromString } from '@libp2p/peer-id';
import { buildBundle, bundleFile } from '../../scripts/build.ts';
import { AGENT_PORTS } from './agent.ts';
import type { Cluster, ClusterNode } from './cluster.ts';

/**
 * The bundled build (scripts/build.ts), built afresh from the sources under test, next to the
 * production bundle (it imports classic-level by its relative path) under its own name; `remove()`
 * deletes it.
 */
export async function buildTestBundle(tag: string): Promise<{ file: string; remove: () => void }> {
  const file = join(dirname(bundleFile), `ferry-${tag}-${process.pid}.mjs`);
  await buildBundle({ outfile: file });
  return { file, remove: () => rmSync(file, { force: true }) };
}

/** kad-dht's distance: XOR of the SHA-256 of the peer id's multihash and of the key's multihash. */
export function kadDistance(peerId: string, digest: string): bigint {
  const a = createHash('sha256').update(peerIdFromString(peerId).toMultihash().bytes).digest('hex');
  const b = createHash('sha256').update(keyToCid(digest).multihash.bytes).digest('hex');
  return BigInt(`0x${a}`) ^ BigInt(`0x${b}`);
}

export interface DeadAddress {
  /** Requests by the peer id that signed them ('unsigned' when none did). */
  readonly byPeer: Map<string, number>;
  /** Connections accepted since the listener started (or the last `reset()`). */
  connections(): number;
  reset(): void;
  close(): Promise<void>;
}

/**
 * A listener on a killed node's registry address: it closes every connection (as the killed agent's
 * closed port refuses it, the same failure for the asking node) and counts each request by the peer
 * id it is signed with. Checks itself once with an unsigned request, then counts from zero.
 */
export async function listenAsDead(host: string): Promise<DeadAddress> {
  const byPeer = new Map<string, number>();
  let connections = 0;
  const server: Server = createServer((req) => {
    const auth = req.headers[PEER_AUTH_HEADER];
    const peer = /\bpeer=(\S+)/.exec(typeof auth === 'string' ? auth : '')?.[1] ?? 'unsigned';
    byPeer.set(peer, (byPeer.get(peer) ?? 0) + 1);
    req.socket.destroy();
  });
  server.on('connection', () => connections++);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(AGENT_PORTS.registry, host, resolve);
  });
  const probe = await fetch(`http://${host}:${AGENT_PORTS.registry}/v2/`).then(
    () => 'answered',
    () => 'failed',
  );
  if (probe !== 'failed' || connections !== 1 || byPeer.get('unsigned') !== 1) {
    server.close();
    throw new Error(`dead-node listener on ${host}: the probe ${probe}, ${connections} connections`);
  }
  const reset = () => {
    connections = 0;
    byPeer.clear();
  };
  reset();
  return {
    byPeer,
    connections: () => connections,
    reset,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** Bytes of blobs the node's agent got from peers, by peer id (its /status recent requests). */
export async function blobBytesByPeer(n: ClusterNode): Promise<Map<string, number>> {
  const status = (await n.agent!.status()) as {
    recentRequests: { kind?: string; outcome: string; peers?: { id: string; bytes: number }[] }[];
  };
  const out = new Map<string, number>();
  for (const r of status.recentRequests) {
    if (r.kind !== 'blobs' || r.outcome !== 'peer') continue;
    for (const p of r.peers ?? []) out.set(p.id, (out.get(p.id) ?? 0) + p.bytes);
  }
  return out;
}

/** CPU seconds of every running agent of the cluster (process_cpu_seconds_total, summed). */
export async function agentCpu(cluster: Cluster): Promise<number> {
  const running = cluster.nodes.filter((n) => n.agent?.running());
  const cpu = await Promise.all(running.map((n) => n.agent!.metric('process_cpu_seconds_total')));
  return cpu.reduce((a, b) => a + b, 0);
}

/** Peer ids each running agent is connected to (its /status), by node index. */
export async function connectedPeers(cluster: Cluster): Promise<Map<number, string[]>> {
  const running = cluster.nodes.filter((n) => n.agent?.running());
  const out = new Map<number, string[]>();
  await Promise.all(
    running.map(async (n) => {
      const peers = ((await n.agent!.status()).peers as { id: string }[] | undefined) ?? [];
      out.set(
        n.index,
        peers.map((p) => p.id),
      );
    }),
  );
  return out;
}
