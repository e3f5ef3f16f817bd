/**
 * Trust scenario 9 and peer HTTP auth, with real registry servers and real peer auth (@ferry/p2p) on
 * loopback: a client that is neither the node's own nor an authenticated peer gets 403; `X-Ferry-Mirrored`
 * grants nothing; a captured request is useless when replayed; an answer must be signed by the provider
 * found. Each assertion fails without its rule.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { after, test } from 'node:test';
import type { Peer, PeerAuth } from '@ferry/interface';
import { MediaTypes } from '@ferry/oci';
import { createPeerAuth } from '@ferry/p2p';
import { createMemoryContentSource, createMemoryRouter, createRegistryServer } from '@ferry/registry';
import { generateKeyPair } from '@libp2p/crypto/keys';
import { peerIdFromPrivateKey } from '@libp2p/peer-id';
import { allocateBlock } from '../rig/index.ts';
import { getFrom } from './helpers.ts';

const block = allocateBlock();
after(() => block.release());
const KEY = randomBytes(32);
const sha256 = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const layer = randomBytes(100_000);
const config = Buffer.from('{"architecture":"amd64","os":"linux","rootfs":{"type":"layers"}}');
const manifest = Buffer.from(
  JSON.stringify({
    schemaVersion: 2,
    mediaType: MediaTypes.ociManifest,
    config: { mediaType: MediaTypes.ociConfig, digest: sha256(config), size: config.length },
    layers: [{ mediaType: MediaTypes.ociLayerGzip, digest: sha256(layer), size: layer.length }],
  }),
);

async function auth(key: Buffer = KEY): Promise<PeerAuth> {
  const k = await generateKeyPair('Ed25519');
  return createPeerAuth({
    keys: [key],
    node: { peerId: peerIdFromPrivateKey(k).toString(), sign: async (d) => k.sign(d) },
  });
}

/** A node on `host` whose own containerd is at 127.0.0.1 only; it holds the layer when `holds`. */
async function startNode(host: string, peerAuth: PeerAuth, holds: boolean, providers: Peer[] = []) {
  const source = createMemoryContentSource();
  if (holds) {
    source.add(layer);
    source.add(manifest, MediaTypes.ociManifest);
  }
  const app = await createRegistryServer({
    source,
    router: createMemoryRouter({ [sha256(layer)]: providers }),
    peerAuth,
    isLocalClient: (ip) => ip === '127.0.0.1' || ip === '::ffff:127.0.0.1',
    randomPeerOrder: false,
    mirrorResolveTimeoutMs: 200,
  });
  await app.listen({ host, port: 0 });
  after(() => app.close());
  const port = (app.server.address() as { port: number }).port;
  return { app, port, peer: { id: peerAuth.peerId, host, port } satisfies Peer };
}

const get = getFrom;

const PATH = `/v2/library/app/blobs/${sha256(layer)}?ns=docker.io`;

test('9. a non-local client without peer auth gets 403 with an OCI body; X-Ferry-Mirrored grants nothing', async () => {
  const b = await startNode(block.node(1), await auth(), true);
  for (const headers of [{}, { 'x-ferry-mirrored': 'true' }] as Record<string, string>[]) {
    const res = await get(`http://${block.node(1)}:${b.port}${PATH}`, block.node(9), headers);
    assert.equal(res.statusCode, 403);
    assert.equal(
      (JSON.parse(res.body.toString()) as { errors: { code: string }[] }).errors[0]?.code,
      'DENIED',
    );
  }
  // The node's own containerd (a local address) is served.
  const own = await get(`http://${block.node(1)}:${b.port}${PATH}`, '127.0.0.1');
  assert.equal(own.statusCode, 200);
});

test('an authenticated peer is served once per signature: a replay, or the headers on another path, get 403', async () => {
  const a = await auth();
  const b = await startNode(block.node(2), await auth(), true);
  const { headers } = a.signRequest({ method: 'GET', pathAndQuery: PATH });
  const url = `http://${block.node(2)}:${b.port}`;
  const ok = await get(`${url}${PATH}`, block.node(9), headers);
  assert.equal(ok.statusCode, 200);
  assert.ok(ok.body.equals(layer));
  const replay = await get(`${url}${PATH}`, block.node(9), headers);
  assert.equal(replay.statusCode, 403);
  const fresh = a.signRequest({ method: 'GET', pathAndQuery: PATH }).headers;
  const other = await get(
    `${url}/v2/library/app/manifests/${sha256(manifest)}?ns=docker.io`,
    block.node(9),
    fresh,
  );
  assert.equal(other.statusCode, 403);
  const outsider = await auth(randomBytes(32));
  const foreign = await get(
    `${url}${PATH}`,
    block.node(9),
    outsider.signRequest({ method: 'GET', pathAndQuery: PATH }).headers,
  );
  assert.equal(foreign.statusCode, 403, 'without the network key');
});

test('the mirror fetches from a member, and only takes an answer signed by the provider it found', async () => {
  const holder = await startNode(block.node(3), await auth(), true);
  // A member that holds the content too, announced under the holder's peer id: its answers are not the holder's.
  const impostor = await startNode(block.node(4), await auth(), true);
  const viaImpostor = await startNode(block.node(5), await auth(), false, [
    { ...holder.peer, host: block.node(4), port: impostor.port },
  ]);
  const res1 = await get(`http://${block.node(5)}:${viaImpostor.port}${PATH}`, '127.0.0.1');
  assert.equal(res1.statusCode, 404, 'an answer signed by another member is refused');
  const direct = await startNode(block.node(6), await auth(), false, [holder.peer]);
  const res2 = await get(`http://${block.node(6)}:${direct.port}${PATH}`, '127.0.0.1');
  assert.equal(res2.statusCode, 200);
  assert.ok(res2.body.equals(layer));
});
