// Ferry's ask protocol (ask-peers.ts) from a peer's side: a GET_PROVIDERS question is answered from
// the provider store alone (no closer peers), and a request that is oversized or not a
// GET_PROVIDERS question gets no answer: the stream is aborted, nothing is echoed. And from the
// asking side (lookup.ts): however many lookups run while the view is unsettled, at most
// MAX_ASKS_IN_FLIGHT (8) rounds ask peers at once; the rest answer from the local store (shed).
import assert from 'node:assert/strict';
import { createServer, type Socket } from 'node:net';
import { test } from 'node:test';
import { generateKeyPair } from '@libp2p/crypto/keys';
import { peerIdFromMultihash, peerIdFromPrivateKey } from '@libp2p/peer-id';
import { lpStream } from '@libp2p/utils';
import { multiaddr } from '@multiformats/multiaddr';
import * as Digest from 'multiformats/hashes/digest';
import { Message, MessageType } from '../generated/kad.js';
import { FERRY_ASK_PROTOCOL } from '../src/ask-peers.ts';
import { createP2PNode } from '../src/index.ts';
import { FERRY_MEMBERS_PROTOCOL } from '../src/membership.ts';
import { FERRY_KAD_PROTOCOL } from '../src/node.ts';
import { plainPeer } from './plain-peer.ts';
import { until } from './until.ts';

const hex = (n: number) => n.toString(16).padStart(64, '0');
const key = (n: number) => Digest.create(0x12, Buffer.from(hex(n), 'hex')).bytes;

test('the ask protocol answers from the provider store and refuses anything else', async (t) => {
  const node = await createP2PNode({ listen: { host: '127.77.53.1', port: 0 }, registryPort: 5000 });
  const asker = await plainPeer('127.77.53.2');
  t.after(async () => {
    await asker.stop();
    await node.stop();
  });
  await node.advertise([`sha256:${hex(1)}`]);
  const ask = async (body: Uint8Array): Promise<Message> => {
    const stream = await asker.dialProtocol(multiaddr(node.addresses[0] as string), FERRY_ASK_PROTOCOL);
    const lp = lpStream(stream);
    await lp.write(body);
    return Message.decode(await lp.read({ signal: AbortSignal.timeout(5_000) }));
  };
  const question = (k: Uint8Array, type = MessageType.GET_PROVIDERS) =>
    Message.encode({ type, key: k as Uint8Array<ArrayBuffer>, closer: [], providers: [] });

  const held = await ask(question(key(1)));
  assert.equal(held.type, MessageType.GET_PROVIDERS);
  assert.deepEqual(
    held.providers.map((p) => peerIdFromMultihash(Digest.decode(p.id)).toString()),
    [node.peerId],
  );
  assert.deepEqual(held.closer, [], 'no closer peers: the store alone answers');
  assert.deepEqual((await ask(question(key(2)))).providers, [], 'an absent key has no providers');

  await assert.rejects(ask(question(key(1), MessageType.FIND_NODE)), 'not a GET_PROVIDERS question');
  await assert.rejects(ask(question(new Uint8Array(300))), 'an oversized request');
  await assert.rejects(ask(Uint8Array.from([0xff, 0xff, 0xff])), 'bytes that are not a Message');
});

test('lookups while the view is unsettled ask peers at most 8 rounds at once; the rest are shed', async (t) => {
  // a host that accepts and never speaks: the node's dial to the member named there hangs, so its
  // view stays unsettled (a dial in flight) for the whole test
  const sockets = new Set<Socket>();
  const tarpit = createServer((socket) => sockets.add(socket));
  await new Promise<void>((resolve) => tarpit.listen(0, '127.77.54.3', resolve));
  const tarpitPort = (tarpit.address() as { port: number }).port;
  const ghost = peerIdFromPrivateKey(await generateKeyPair('Ed25519'));
  const hostile = await plainPeer('127.77.54.2');
  await hostile.handle(FERRY_KAD_PROTOCOL, (stream) => stream.abort(new Error('not answering')));
  await hostile.handle(FERRY_MEMBERS_PROTOCOL, async (stream) => {
    const lp = lpStream(stream);
    await lp.read();
    await lp.write(
      Message.encode({
        type: MessageType.FIND_NODE,
        closer: [
          {
            id: ghost.toMultihash().bytes as Uint8Array<ArrayBuffer>,
            multiaddrs: [multiaddr(`/ip4/127.77.54.3/tcp/${tarpitPort}`).bytes as Uint8Array<ArrayBuffer>],
          },
        ],
        providers: [],
      }),
    );
    await stream.close();
  });
  // takes every question and never answers it
  let asked = 0;
  await hostile.handle(
    FERRY_ASK_PROTOCOL,
    () => {
      asked++;
    },
    { maxInboundStreams: 64 },
  );
  const node = await createP2PNode({ listen: { host: '127.77.54.1', port: 0 }, registryPort: 5000 });
  t.after(async () => {
    await node.stop();
    await hostile.stop();
    tarpit.close();
    for (const s of sockets) {
      s.destroy();
    }
  });
  await hostile.dial(multiaddr(node.addresses[0] as string));
  await until('the dial to the named member', () => sockets.size > 0, 10_000);
  assert.equal(node.stats().settled, false);

  const lookups = Array.from({ length: 20 }, async (_, i) => {
    const found: string[] = [];
    for await (const peer of node.lookup(`sha256:${hex(100 + i)}`, { signal: AbortSignal.timeout(4_000) })) {
      found.push(peer.host);
    }
    return found;
  });
  assert.deepEqual(
    await Promise.all(lookups),
    Array.from({ length: 20 }, () => []),
  );
  const { lookups: counts } = node.stats();
  assert.equal(asked, 8, 'rounds asking peers at once are bounded');
  assert.equal(counts.network, 8);
  assert.equal(counts.shed, 12);
});
