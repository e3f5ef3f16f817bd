// The members protocol against a hostile member (membership.ts): its answer names 100 made-up
// members, all at one address of its choosing (a plain TCP server here, standing for any host). A
// real Ferry node asks it on identify and again on its gossip round; the address is dialled at most
// once per NAMED_REDIAL_MS however many ids name it, not once per id on every answer.
import assert from 'node:assert/strict';
import { createServer, type Socket } from 'node:net';
import { test } from 'node:test';
import { noise } from '@chainsafe/libp2p-noise';
import { yamux } from '@chainsafe/libp2p-yamux';
import { generateKeyPair } from '@libp2p/crypto/keys';
import { identify } from '@libp2p/identify';
import { peerIdFromPrivateKey } from '@libp2p/peer-id';
import { tcp } from '@libp2p/tcp';
import { lpStream } from '@libp2p/utils';
import { multiaddr } from '@multiformats/multiaddr';
import { createLibp2p } from 'libp2p';
import { Message, MessageType } from '../generated/kad.js';
import { createP2PNode } from '../src/index.ts';
import { FERRY_MEMBERS_PROTOCOL } from '../src/membership.ts';
import { FERRY_KAD_PROTOCOL } from '../src/node.ts';
import { until } from './until.ts';

test('a member naming many made-up members at one address gets that address dialled once per period', async (t) => {
  // the address the hostile member points every node at: counts the connections it gets
  let hits = 0;
  const sockets = new Set<Socket>();
  const victim = createServer((socket) => {
    hits++;
    sockets.add(socket);
    socket.destroy();
  });
  await new Promise<void>((resolve) => victim.listen(0, '127.77.49.3', resolve));
  const victimPort = (victim.address() as { port: number }).port;

  const fakes = await Promise.all(
    Array.from({ length: 100 }, async () => peerIdFromPrivateKey(await generateKeyPair('Ed25519'))),
  );
  const answer = Message.encode({
    type: MessageType.FIND_NODE,
    closer: fakes.map((id) => ({
      id: id.toMultihash().bytes as Uint8Array<ArrayBuffer>,
      multiaddrs: [multiaddr(`/ip4/127.77.49.3/tcp/${victimPort}`).bytes as Uint8Array<ArrayBuffer>],
    })),
    providers: [],
  });
  const hostile = await createLibp2p({
    addresses: { listen: ['/ip4/127.77.49.2/tcp/0'] },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    services: { identify: identify() },
  });
  let asked = 0;
  // speaks Ferry's DHT protocol (so it counts as a member) and answers every members request
  await hostile.handle(FERRY_KAD_PROTOCOL, (stream) => {
    stream.abort(new Error('not answering'));
  });
  await hostile.handle(FERRY_MEMBERS_PROTOCOL, async (stream) => {
    asked++;
    const lp = lpStream(stream);
    await lp.read();
    await lp.write(answer);
    await stream.close();
  });
  const node = await createP2PNode({ listen: { host: '127.77.49.1', port: 0 }, registryPort: 5000 });
  t.after(async () => {
    await node.stop();
    await hostile.stop();
    victim.close();
    for (const s of sockets) {
      s.destroy();
    }
  });

  await hostile.dial(multiaddr(node.addresses[0] as string));
  // asked on identify, then again by the node's gossip round (every 5 s)
  await until('the node asked the hostile member twice', () => asked >= 2, 30_000);
  await until('the named address was dialled', () => hits >= 1, 10_000);
  // give the dials of the second answer time to start (each fails at once: the server closes)
  await new Promise((r) => setTimeout(r, 1_000));
  assert.equal(hits, 1, `the address named by 100 ids in ${asked} answers was dialled ${hits} times`);
});
