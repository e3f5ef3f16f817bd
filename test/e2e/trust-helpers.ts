/** Shared parts of the trust scenarios on the rig (trust-peers, trust-sybils): hostile members and what they hold. */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  type Adversary,
  type AdversaryOptions,
  AGENT_PORTS,
  type BuiltImage,
  type Cluster,
  type ClusterNode,
  startAdversary,
} from '../rig/index.ts';

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
