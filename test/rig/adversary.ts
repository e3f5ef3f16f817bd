/**
 * A hostile peer for the trust scenarios: a real Ferry P2P node (`createP2PNode` from @ferry/p2p, so the
 * same libp2p, private network and DHT code the agents run) plus a small HTTP registry that answers as a
 * member would, signed with its own identity (`createPeerAuth`), and lies as told:
 * - joins with the cluster's network key, a wrong one, or none;
 * - takes the lowest-sorting of many fresh identities (Sybil ids);
 * - advertises digests and tag keys, held or not;
 * - announces another service's IP and registry port;
 * - answers tags with any digest and `X-Ferry-Resolved-At` (future, too early);
 * - serves wrong bytes for a digest, claims a huge body, or answers 404 for what it advertised;
 * - fails every request (a signed 500 at once), held or not.
 */

import { once } from 'node:events';
import { mkdirSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { join } from 'node:path';
import { createP2PNode, createPeerAuth, type P2PNode, PEER_AUTH_HEADER, PEER_KEY_FILE } from '@ferry/p2p';
import { generateKeyPair, privateKeyToProtobuf } from '@libp2p/crypto/keys';
import { peerIdFromPrivateKey } from '@libp2p/peer-id';
import { AGENT_PORTS } from './agent.ts';

type PrivateKey = Awaited<ReturnType<typeof generateKeyPair>>;

/** How the adversary answers a blob request by digest (manifests are always answered as held). */
export type BlobLie =
  /** The bytes it holds (404 for others). */
  | 'honest'
  /** Random bytes of the right length, under the asked digest. */
  | 'corrupt'
  /** 404 for everything, though it advertises it. */
  | 'not-held'
  /** `Content-Length: claimBytes`: the held bytes, then zeros up to the claim. */
  | { claimBytes: number }
  /** The held bytes up to `cutAfter`, then the connection breaks (a peer dying mid-blob); shorter blobs whole. */
  | { cutAfter: number }
  /** 404 for a whole blob, the held bytes for a Range request (a peer that only takes over). */
  | 'ranges-only';

/** The answer to a tag: a digest and the resolution time it claims. */
export interface TagLie {
  digest: string;
  mediaType: string;
  size: number;
  /** `X-Ferry-Resolved-At` (ms epoch): in the future, or before the tag existed. */
  resolvedAt: number;
}

export interface AdversaryOptions {
  /** Its loopback address: the libp2p node and the registry listen (and dial) there. */
  host: string;
  /** Directory for its identity. */
  dir: string;
  /** Members to dial (`ip:port`). */
  bootstrapPeers: string[];
  /** The key it joins with (the cluster's, a wrong one); none: no private network. */
  networkKey?: Uint8Array;
  /** Take the lowest-sorting peer id of this many fresh identities (Sybil). Default 1. */
  lowestIdOf?: number;
  /** IP it announces as its own (another service's). */
  announceHost?: string;
  /** Registry port it announces (default: its own registry's). */
  announcePort?: number;
  /** Its libp2p and registry ports (default the agents' well-known ones). */
  routerPort?: number;
  registryPort?: number;
}

/** One request the adversary's registry received. */
export interface AdversaryRequest {
  method: string;
  path: string;
  /** It carried a peer signature (the adversary does not check it). */
  signed: boolean;
}

export interface Adversary {
  readonly peerId: string;
  readonly node: P2PNode;
  readonly registryUrl: string;
  readonly requests: AdversaryRequest[];
  /** How requests by digest are answered (default 'honest'). */
  blobs: BlobLie;
  /** When true, every request (manifest, blob, tag) gets a signed 500 at once: each costs an attempt. */
  failing: boolean;
  /** Tag answers by `<repository>:<tag>`. */
  readonly tags: Map<string, TagLie>;
  /** Content it can serve, by digest. */
  hold(items: { digest: string; bytes: Buffer; mediaType?: string }[]): void;
  advertise(keys: string[]): Promise<void>;
  stop(): Promise<void>;
}

/** The lowest-sorting peer id of `n` fresh Ed25519 identities. */
async function lowestIdentity(n: number): Promise<PrivateKey> {
  let best: { key: PrivateKey; id: string } | undefined;
  for (let i = 0; i < n; i++) {
    const key = await generateKeyPair('Ed25519');
    const id = peerIdFromPrivateKey(key).toString();
    if (best === undefined || id < best.id) best = { key, id };
  }
  return (best as { key: PrivateKey }).key;
}

const PATH = /^\/v2\/(.+)\/(manifests|blobs)\/([^/?]+)/;

/** Starts the adversary: its registry, then its P2P node (which dials the bootstrap peers). */
export async function startAdversary(opts: AdversaryOptions): Promise<Adversary> {
  const key = await lowestIdentity(opts.lowestIdOf ?? 1);
  const peerId = peerIdFromPrivateKey(key).toString();
  // createP2PNode loads its identity from <dataDir>/peer.key: the chosen one.
  mkdirSync(opts.dir, { recursive: true });
  writeFileSync(join(opts.dir, PEER_KEY_FILE), privateKeyToProtobuf(key), { mode: 0o600 });
  const registryPort = opts.registryPort ?? AGENT_PORTS.registry;
  const signer = { peerId, sign: async (d: Uint8Array) => key.sign(d) };
  const auth =
    opts.networkKey === undefined ? undefined : createPeerAuth({ keys: [opts.networkKey], node: signer });
  const held = new Map<string, { bytes: Buffer; mediaType: string }>();
  const requests: AdversaryRequest[] = [];

  const answer = async (req: IncomingMessage, res: ServerResponse) => {
    const header = req.headers[PEER_AUTH_HEADER];
    const nonce = typeof header === 'string' ? /nonce=([A-Za-z0-9_-]+)/.exec(header)?.[1] : undefined;
    requests.push({ method: req.method ?? '', path: req.url ?? '', signed: nonce !== undefined });
    const m = PATH.exec(req.url ?? '');
    type Body = Buffer | ((res: ServerResponse) => Promise<void>);
    const send = async (status: number, headers: Record<string, string>, body?: Body) => {
      if (auth !== undefined && nonce !== undefined)
        Object.assign(
          headers,
          await auth.signResponse({
            nonce,
            status,
            digest: headers['docker-content-digest'] ?? '',
            length: headers['content-length'] ?? '',
            ...(headers['x-ferry-resolved-at'] === undefined
              ? {}
              : { resolvedAt: headers['x-ferry-resolved-at'] }),
          }),
        );
      res.writeHead(status, headers);
      if (req.method === 'HEAD' || body === undefined) return void res.end();
      if (Buffer.isBuffer(body)) return void res.end(body);
      await body(res);
    };
    if (m === null) return send(404, {});
    if (adversary.failing) return send(500, {});
    const [, repository, kind, reference] = m as unknown as [string, string, string, string];
    let digest = reference;
    const extra: Record<string, string> = {};
    if (!reference.includes(':')) {
      const lie = adversary.tags.get(`${repository}:${reference}`);
      if (lie === undefined) return send(404, {});
      digest = lie.digest;
      extra['x-ferry-resolved-at'] = String(lie.resolvedAt);
    }
    const item = held.get(digest);
    const lie = kind === 'blobs' ? adversary.blobs : 'honest';
    if (lie === 'not-held' || item === undefined) return send(404, {});
    const base = {
      'docker-content-digest': digest,
      'content-type': kind === 'manifests' ? item.mediaType : 'application/octet-stream',
      ...extra,
    };
    const size = String(item.bytes.length);
    if (typeof lie === 'object' && 'claimBytes' in lie)
      return send(200, { ...base, 'content-length': String(lie.claimBytes) }, (r) =>
        streamClaim(r, item.bytes, lie.claimBytes),
      );
    // A blob no longer than the cut (the config) is sent whole, its connection kept: the node may reuse it.
    if (typeof lie === 'object' && item.bytes.length > lie.cutAfter)
      return send(200, { ...base, 'content-length': size }, async (r) => {
        r.write(item.bytes.subarray(0, lie.cutAfter));
        await new Promise((resolve) => setTimeout(resolve, 50));
        r.destroy();
      });
    const range = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
    if (lie === 'ranges-only' && range === null) return send(404, {});
    if (range !== null) {
      const from = Number(range[1]);
      const to = range[2] === '' ? item.bytes.length - 1 : Math.min(Number(range[2]), item.bytes.length - 1);
      const part = item.bytes.subarray(from, to + 1);
      const headers = {
        ...base,
        'content-length': String(part.length),
        'content-range': `bytes ${from}-${to}/${size}`,
      };
      return send(206, headers, part);
    }
    const bytes = lie === 'corrupt' ? Buffer.from(item.bytes.map((b) => b ^ 0x5a)) : item.bytes;
    return send(200, { ...base, 'content-length': String(bytes.length) }, bytes);
  };
  const server = createServer((req, res) => {
    answer(req, res).catch(() => res.destroy());
  });
  server.listen(registryPort, opts.host);
  await once(server, 'listening');

  let node: P2PNode;
  try {
    node = await createP2PNode({
      listen: { host: opts.host, port: opts.routerPort ?? AGENT_PORTS.router },
      registryPort: opts.announcePort ?? registryPort,
      dataDir: opts.dir,
      bootstrapPeers: opts.bootstrapPeers,
      ...(opts.announceHost === undefined ? {} : { announceHost: opts.announceHost }),
      ...(opts.networkKey === undefined ? {} : { networkKeys: [opts.networkKey] }),
    });
  } catch (err) {
    server.close();
    throw err;
  }

  const adversary: Adversary = {
    peerId,
    node,
    registryUrl: `http://${opts.host}:${registryPort}`,
    requests,
    blobs: 'honest',
    failing: false,
    tags: new Map(),
    hold(items) {
      for (const i of items)
        held.set(i.digest, { bytes: i.bytes, mediaType: i.mediaType ?? 'application/octet-stream' });
    },
    advertise: (keys) => node.advertise(keys),
    async stop() {
      server.closeAllConnections();
      server.close();
      await node.stop();
    },
  };
  return adversary;
}

/** Writes `bytes`, then zeros until `claim` bytes are sent (or the reader goes away). */
async function streamClaim(res: ServerResponse, bytes: Buffer, claim: number): Promise<void> {
  const zeros = Buffer.alloc(1 << 20);
  const gone = once(res, 'close').catch(() => undefined);
  let sent = 0;
  const write = async (chunk: Buffer) => {
    sent += chunk.length;
    if (!res.write(chunk)) await Promise.race([once(res, 'drain').catch(() => undefined), gone]);
  };
  await write(bytes.subarray(0, claim));
  while (sent < claim && !res.destroyed) await write(zeros.subarray(0, Math.min(zeros.length, claim - sent)));
  res.end();
}
