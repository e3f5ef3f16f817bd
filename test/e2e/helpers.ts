import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import type { PeerAuth } from '@ferry/interface';
import { createPeerAuth } from '@ferry/p2p';
import { generateKeyPair } from '@libp2p/crypto/keys';
import { peerIdFromPrivateKey } from '@libp2p/peer-id';
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
  init: { method?: string; headers?: Record<string, string>; asPeer?: boolean } = {},
): Promise<Response> {
  const ns = encodeURIComponent(cluster.upstream.host);
  const sep = path.includes('?') ? '&' : '?';
  const pathAndQuery = `${path}${sep}ns=${ns}`;
  const method = init.method ?? 'GET';
  const headers = { ...init.headers };
  if (init.asPeer === true) {
    // A member's request: `X-Ferry-Mirrored` plus the peer signature under the cluster's network key.
    if (cluster.networkKey === undefined) throw new Error('asPeer needs a cluster with a network key');
    headers['x-ferry-mirrored'] = 'true';
    Object.assign(
      headers,
      (await memberAuth(cluster.networkKey)).signRequest({ method, pathAndQuery }).headers,
    );
  }
  return fetch(`${node.agent!.registryUrl}${pathAndQuery}`, { method, headers });
}

/** A member of the cluster (a fresh identity holding the network key) for tests that ask as a peer. */
async function memberAuth(networkKey: Uint8Array): Promise<PeerAuth> {
  const key = await generateKeyPair('Ed25519');
  return createPeerAuth({
    keys: [networkKey],
    node: { peerId: peerIdFromPrivateKey(key).toString(), sign: async (d) => key.sign(d) },
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

/** GET `url` from the local address `from` (node:http's localAddress): status and body. */
export function getFrom(
  url: string,
  from: string,
  headers: Record<string, string> = {},
): Promise<{ statusCode: number; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(url, { headers, localAddress: from }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ statusCode: res.statusCode ?? 0, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}
