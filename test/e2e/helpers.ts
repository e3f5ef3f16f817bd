import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { BuiltImage, BuiltIndex, Cluster, ClusterNode } from '../rig/index.ts';
import { waitFor } from '../rig/index.ts';

/** Every digest a pull of `img` on this machine's platform stores: manifest(s), config, layers. */
export function digestsOf(img: BuiltImage | BuiltIndex): string[] {
  if (img.kind === 'index') {
    const own = img.images[0]!; // the node's platform comes first
    return [img.index.digest, ...digestsOf(own)];
  }
  return [img.manifest.digest, img.config.digest, ...img.layers.map((l) => l.digest)];
}

/** Total bytes of an image's layers. */
export function layerBytes(img: BuiltImage): number {
  return img.layers.reduce((n, l) => n + l.size, 0);
}

/** HEAD (or GET) a path on a node's agent registry, as containerd would (`?ns=<upstream>`). */
export async function registryRequest(
  node: ClusterNode,
  cluster: Cluster,
  path: string,
  init: { method?: string; headers?: Record<string, string> } = {},
): Promise<Response> {
  const ns = encodeURIComponent(cluster.upstream.host);
  const sep = path.includes('?') ? '&' : '?';
  return fetch(`${node.agent!.registryUrl}${path}${sep}ns=${ns}`, {
    method: init.method ?? 'GET',
    headers: init.headers ?? {},
  });
}

/**
 * Waits until `from`'s agent finds every digest on a peer: HEAD of the blob through its mirror path
 * answers 200 (any stored digest is addressable as a blob). `from` must not hold them itself.
 */
export async function waitFindable(from: ClusterNode, cluster: Cluster, repo: string, digests: string[]) {
  for (const d of digests) {
    await waitFor(
      async () =>
        (await registryRequest(from, cluster, `/v2/${repo}/blobs/${d}`, { method: 'HEAD' })).status === 200,
      { timeoutMs: 60_000, intervalMs: 100, what: `${d} findable from ${from.name}` },
    );
  }
}

export const sha256File = (path: string) =>
  `sha256:${createHash('sha256').update(readFileSync(path)).digest('hex')}`;
