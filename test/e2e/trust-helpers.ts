/** Shared parts of the trust scenarios on the rig (trust-peers, trust-sybils): hostile members and what they hold. */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before } from 'node:test';
import {
  type Adversary,
  type AdversaryOptions,
  AGENT_PORTS,
  type BuiltImage,
  type Cluster,
  type ClusterNode,
  startAdversary,
  startCluster,
} from '../rig/index.ts';

export const ACCEPT = 'application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json';

/**
 * The trust scenarios' rig, set up by the calling file's before/after hooks: three nodes whose agents
 * hold the cluster's network key and mirror the rig's upstream; members started with `adversary` stop
 * with the rig.
 */
export function trustRig() {
  const state: { cluster?: Cluster } = {};
  const adversaries: Adversary[] = [];
  before(async () => {
    const cluster = await startCluster({ nodes: 3, startAgents: false });
    state.cluster = cluster;
    const args = [`--mirrored-registries=${cluster.upstream.url}`, '--mirror-resolve-timeout=300ms'];
    await Promise.all(cluster.nodes.map((n) => n.startAgent(args)));
    await Promise.all(cluster.nodes.map((n) => n.agent!.waitReady()));
  });
  after(async () => {
    for (const a of adversaries) await a.stop().catch(() => undefined);
    await state.cluster?.dispose();
  });
  return {
    get cluster(): Cluster {
      return state.cluster as Cluster;
    },
    /** Node i (1-based). */
    node: (i: number) => (state.cluster as Cluster).nodes[i - 1] as ClusterNode,
    /** An adversary on host `h` of the rig's block, bootstrapped from every node. */
    async adversary(h: number, opts: Partial<AdversaryOptions> = {}): Promise<Adversary> {
      const a = await startMember(state.cluster as Cluster, h, opts);
      adversaries.push(a);
      return a;
    },
  };
}

/** An adversary on host `h` of the cluster's block, bootstrapped from every node (stop it yourself). */
export function startMember(
  cluster: Cluster,
  h: number,
  opts: Partial<AdversaryOptions> = {},
): Promise<Adversary> {
  return startAdversary({
    host: cluster.block.host(h),
    dir: join((cluster.nodes[0] as ClusterNode).dir, '..', `adversary-${h}`),
    bootstrapPeers: cluster.nodes.map((n) => `${n.host}:${AGENT_PORTS.router}`),
    ...opts,
  });
}

/** Every blob of an image, with its bytes, as the adversary holds them. */
export function contentOf(img: BuiltImage) {
  return [
    { digest: img.manifest.digest, bytes: img.manifest.bytes, mediaType: img.manifest.mediaType },
    { digest: img.config.digest, bytes: img.config.bytes, mediaType: img.config.mediaType },
    ...img.layers.map((l) => ({ digest: l.digest, bytes: readFileSync(l.path), mediaType: l.mediaType })),
  ];
}

/** Peers the adversary's own DHT lookup yields for `key` within a short window. */
export async function lookupFrom(a: Adversary, key: string): Promise<string[]> {
  const found: string[] = [];
  for await (const p of a.node.lookup(key, { signal: AbortSignal.timeout(2_000) })) found.push(p.id);
  return found;
}

/** The digest containerd on `n` has for `ref`. */
export async function imageDigest(n: ClusterNode, ref: string): Promise<string | undefined> {
  return (await n.containerd.client.getImage(ref))?.target.digest;
}
