/**
 * `bash scripts/demo.sh`: a three-node cluster on loopback pulls an image peer-to-peer.
 * Starts a real upstream registry, three real containerd daemons and three Ferry agents; pulls an image
 * on node 1 from the upstream; stops the upstream; pulls the image on nodes 2 and 3 through their agents;
 * prints where the bytes came from and how long each pull took. Everything is stopped at the end.
 * It opens with each node's status page address. Options: `--keep` waits for Enter before tearing down
 * (to look at the status pages).
 */
import { createInterface } from 'node:readline/promises';
import { buildImage, type Cluster, type ClusterNode, pushImage, startCluster } from './rig/index.ts';

const MiB = 1024 * 1024;
const keep = process.argv.includes('--keep');

function fmtBytes(n: number): string {
  return n >= MiB ? `${(n / MiB).toFixed(1)} MiB` : `${(n / 1024).toFixed(1)} KiB`;
}

async function timedPull(node: ClusterNode, ref: string): Promise<number> {
  const t0 = performance.now();
  await node.pull(ref);
  return performance.now() - t0;
}

async function bytesOf(node: ClusterNode) {
  const agent = node.agent!;
  return {
    fromPeers: await agent.metric('ferry_peer_fetched_bytes_total'),
    toPeers: await agent.metric('ferry_peer_served_bytes_total'),
    local: await agent.metric('ferry_mirror_requests_total', { outcome: 'local' }),
    peer: await agent.metric('ferry_mirror_requests_total', { outcome: 'peer' }),
    miss: await agent.metric('ferry_mirror_requests_total', { outcome: 'miss' }),
  };
}

async function main(): Promise<void> {
  let cluster: Cluster | undefined;
  const stop = async () => {
    await cluster?.dispose();
  };
  process.once('SIGINT', () => void stop().then(() => process.exit(130)));
  try {
    console.log('Ferry demo: starting an upstream registry, 3 containerd daemons and 3 agents on loopback…');
    cluster = await startCluster({ nodes: 3 });
    console.log('\nOpen a status page to watch the P2P pull happen (it refreshes itself):');
    for (const n of cluster.nodes) {
      console.log(`  ${n.name}  status page ${n.agent!.opsUrl}/   metrics ${n.agent!.opsUrl}/metrics`);
    }
    console.log(`  upstream registry   ${cluster.upstream.url}`);

    const image = await buildImage({ layers: [24 * MiB, 8 * MiB, 2 * MiB, 256 * 1024] });
    const size = image.layers.reduce((s, l) => s + l.size, 0);
    await pushImage(cluster.upstream.url, 'demo/app', 'v1', image);
    const ref = cluster.ref('demo/app:v1');
    console.log(`\nPushed ${ref} (${image.layers.length} layers, ${fmtBytes(size)}) digest ${image.digest}`);
    await Promise.all(cluster.nodes.map((n) => n.agent!.waitReady()));

    const [n1, n2, n3] = cluster.nodes as [ClusterNode, ClusterNode, ClusterNode];
    const rows: string[][] = [];
    const t1 = await timedPull(n1, ref);
    rows.push([n1.name, 'upstream (first pull in the cluster)', `${t1.toFixed(0)} ms`, '-']);
    console.log(`\n${n1.name} pulled ${ref} in ${t1.toFixed(0)} ms; waiting until its peers can find it…`);
    const t0 = performance.now();
    for (const d of [image.digest, ...image.layers.map((l) => l.digest)]) {
      for (;;) {
        const res = await fetch(
          `${n3.agent!.registryUrl}/v2/demo/app/blobs/${d}?ns=${cluster.upstream.host}`,
          {
            method: 'HEAD',
          },
        );
        if (res.status === 200) break;
        if (performance.now() - t0 > 60_000) throw new Error(`${d} not findable from ${n3.name} after 60 s`);
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    console.log(`advertised and findable after ${(performance.now() - t0).toFixed(0)} ms`);

    await cluster.upstream.stop();
    console.log('\nUpstream registry STOPPED. Pulling on the other nodes…');
    for (const node of [n2, n3]) {
      const before = await bytesOf(node);
      const t = await timedPull(node, ref);
      const after = await bytesOf(node);
      const fromPeers = after.fromPeers - before.fromPeers;
      rows.push([
        node.name,
        `peers: ${fmtBytes(fromPeers)} (${after.peer - before.peer} requests from peers, ${after.miss - before.miss} misses)`,
        `${t.toFixed(0)} ms`,
        `${((fromPeers / size) * 100).toFixed(0)}%`,
      ]);
    }
    console.log('\n| node | where the bytes came from | pull time | layer bytes from peers |');
    console.log('|---|---|---|---|');
    for (const r of rows) console.log(`| ${r.join(' | ')} |`);
    console.log('\nBytes each agent served to its peers:');
    for (const n of cluster.nodes) console.log(`  ${n.name}: ${fmtBytes((await bytesOf(n)).toPeers)}`);

    if (keep) {
      const rl = createInterface({ input: process.stdin, output: process.stdout });
      await rl.question('\nThe cluster is still running. Press Enter to stop it. ');
      rl.close();
    }
  } finally {
    console.log('\nStopping everything…');
    await stop();
  }
}

main().catch((err) => {
  console.error(`demo failed: ${(err as Error).stack ?? err}`);
  process.exitCode = 1;
});
