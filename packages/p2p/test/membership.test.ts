// The members and introduce protocols (membership.ts). A hostile member's answer names 100 made-up
// members, all at one address of its choosing (a plain TCP server here, standing for any host). A
// real Ferry node asks it on identify and again on its gossip round; the address is dialled at most
// once per NAMED_REDIAL_MS however many ids name it, not once per id on every answer. Introductions:
// a newcomer that dials one settled member is dialled by all the others; a hostile introduction
// names one newcomer at most, under the same address bound, and is taken from members only.
import assert from 'node:assert/strict';
import { createServer, type Server, type Socket } from 'node:net';
import { test } from 'node:test';
import { generateKeyPair } from '@libp2p/crypto/keys';
import { peerIdFromPrivateKey } from '@libp2p/peer-id';
import { lpStream } from '@libp2p/utils';
import { multiaddr } from '@multiformats/multiaddr';
import { Message, MessageType } from '../generated/kad.js';
import { createP2PNode, type P2PNode } from '../src/index.ts';
import { FERRY_INTRODUCE_PROTOCOL, FERRY_MEMBERS_PROTOCOL } from '../src/membership.ts';
import { FERRY_KAD_PROTOCOL } from '../src/node.ts';
import { plainPeer } from './plain-peer.ts';
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
  const hostile = await plainPeer('127.77.49.2');
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

/** A TCP server at `host` that counts and closes every connection: a stand-in for any host. */
async function counter(host: string): Promise<{ hits: () => number; addr: string; server: Server }> {
  let hits = 0;
  const server = createServer((socket) => {
    hits++;
    socket.destroy();
  });
  await new Promise<void>((resolve) => server.listen(0, host, resolve));
  const port = (server.address() as { port: number }).port;
  return { hits: () => hits, addr: `/ip4/${host}/tcp/${port}`, server };
}

function hostPort(node: P2PNode): string {
  const m = /^\/ip4\/([^/]+)\/tcp\/(\d+)/.exec(node.addresses[0] ?? '');
  assert.ok(m, `no ip4 address in ${node.addresses.join(',')}`);
  return `${m[1]}:${m[2]}`;
}

test('a newcomer that dials one settled member is introduced to the others, who dial it', async (t) => {
  const nodes: P2PNode[] = [];
  t.after(() => Promise.all(nodes.map((n) => n.stop())));
  for (let i = 1; i <= 4; i++) {
    nodes.push(
      await createP2PNode({
        listen: { host: `127.77.51.${i}`, port: 0 },
        registryPort: 5000,
        bootstrapPeers: i === 1 ? [] : [hostPort(nodes[0] as P2PNode)],
      }),
    );
  }
  await until('a settled mesh of 4', () => nodes.every((n) => n.stats().members === 3 && n.stats().settled));
  const [first, ...others] = nodes as [P2PNode, ...P2PNode[]];
  const newcomer = await createP2PNode({
    listen: { host: '127.77.51.9', port: 0 },
    registryPort: 5000,
    bootstrapPeers: [hostPort(first)],
  });
  nodes.push(newcomer);
  await until('every member connected to the newcomer', () => nodes.every((n) => n.stats().members === 4));
  assert.equal(first.stats().introductions.sent, 3, 'the member it dialled told the 3 others');
  for (const member of others) {
    assert.ok(member.stats().introductions.received >= 1, 'each other member heard of it');
  }
});

test('a hostile introduction names one newcomer, under the address bound, and only from a member', async (t) => {
  const servers = await Promise.all([1, 2, 3, 4].map(() => counter('127.77.52.3')));
  const outsiderTarget = await counter('127.77.52.4');
  const fakes = await Promise.all(
    Array.from({ length: 40 }, async () => peerIdFromPrivateKey(await generateKeyPair('Ed25519'))),
  );
  const introduce = (ids: typeof fakes, addrs: string[]) =>
    Message.encode({
      type: MessageType.FIND_NODE,
      closer: ids.map((id, i) => ({
        id: id.toMultihash().bytes as Uint8Array<ArrayBuffer>,
        multiaddrs: [multiaddr(addrs[i % addrs.length] as string).bytes as Uint8Array<ArrayBuffer>],
      })),
      providers: [],
    });
  const peer = async (host: string, member: boolean) => {
    const p = await plainPeer(host);
    if (member) {
      await p.handle(FERRY_KAD_PROTOCOL, (stream) => stream.abort(new Error('not answering')));
    }
    return p;
  };
  const hostile = await peer('127.77.52.2', true);
  const outsider = await peer('127.77.52.5', false);
  const node = await createP2PNode({ listen: { host: '127.77.52.1', port: 0 }, registryPort: 5000 });
  t.after(async () => {
    await node.stop();
    await hostile.stop();
    await outsider.stop();
    for (const s of [...servers, outsiderTarget]) {
      s.server.close();
    }
  });
  const send = async (from: typeof hostile, body: Uint8Array) => {
    const stream = await from.dialProtocol(multiaddr(node.addresses[0] as string), FERRY_INTRODUCE_PROTOCOL);
    await lpStream(stream).write(body);
    await stream.close().catch(() => undefined);
  };
  await hostile.dial(multiaddr(node.addresses[0] as string));
  await until('the hostile peer is a member', () => node.stats().members === 1);

  // one introduction naming 4 made-up members at 4 addresses: only the first is taken
  await send(
    hostile,
    introduce(
      fakes.slice(0, 4),
      servers.map((s) => s.addr),
    ),
  );
  await until('the first named address was dialled', () => (servers[0]?.hits() ?? 0) >= 1);
  // 30 more, each naming new ids at that same address: it is not dialled again within the period
  for (let i = 0; i < 30; i++) {
    await send(
      hostile,
      introduce([fakes[4 + (i % 36)] as (typeof fakes)[number]], [servers[0]?.addr as string]),
    );
  }
  await until('31 introductions received', () => node.stats().introductions.received >= 31);
  // a peer that is not a member (no DHT protocol) is not taken at its word
  await outsider.dial(multiaddr(node.addresses[0] as string));
  await send(outsider, introduce(fakes.slice(0, 1), [outsiderTarget.addr]));
  await until('the outsider introduction ignored', () => node.stats().introductions.ignored >= 1);
  // give any dial it would have started time to reach its server
  await new Promise((r) => setTimeout(r, 1_000));
  assert.deepEqual(
    servers.map((s) => s.hits()),
    [1, 0, 0, 0],
    'one newcomer per introduction, its address dialled once',
  );
  assert.equal(outsiderTarget.hits(), 0, 'an outsider introduction is ignored');
  assert.equal(node.stats().introductions.ignored, 1);
});
