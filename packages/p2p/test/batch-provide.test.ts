// Pure parts of the batched provide: wire encoding (checked with kad-dht's own decoder), XOR
// closeness, the sorted datastore's prefix queries.
import assert from 'node:assert/strict';
import { realpath } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { pathToFileURL } from 'node:url';
import { generateKeyPair } from '@libp2p/crypto/keys';
import { peerIdFromPrivateKey } from '@libp2p/peer-id';
import { multiaddr } from '@multiformats/multiaddr';
import { Key } from 'interface-datastore/key';
import { Message, MessageType } from '../generated/kad.js';
import {
  type Candidate,
  closestCandidates,
  encodeAddProvider,
  kadId,
  providerInfo,
} from '../src/batch-provide.ts';
import { SortedMemoryDatastore } from '../src/datastore.ts';
import { keyToCid } from '../src/keys.ts';

interface KadMessage {
  type: string;
  key?: Uint8Array;
  providers: { id: Uint8Array; multiaddrs: Uint8Array[] }[];
  closer: unknown[];
}

/** A module of the installed kad-dht (its codec and utils are not exported by the package). */
async function kadModule<T>(file: string): Promise<T> {
  const pkg = await realpath(join(import.meta.dirname, '../node_modules/@libp2p/kad-dht'));
  return (await import(pathToFileURL(join(pkg, 'dist/src', file)).href)) as T;
}

async function kadMessageCodec(): Promise<{ decode(buf: Uint8Array): KadMessage }> {
  return (await kadModule<{ Message: { decode(buf: Uint8Array): KadMessage } }>('message/dht.js')).Message;
}

test('ADD_PROVIDER encoding decodes with kad-dht 16 own Message codec', async () => {
  const Message = await kadMessageCodec();
  const peer = peerIdFromPrivateKey(await generateKeyPair('Ed25519'));
  const addrs = [multiaddr('/ip4/127.0.0.1/tcp/4001'), multiaddr(`/ip4/10.1.2.3/tcp/4001/p2p/${peer}`)];
  const cid = keyToCid(`sha256:${'ab'.repeat(32)}`);
  const body = encodeAddProvider(
    cid.multihash.bytes,
    providerInfo(
      peer.toMultihash().bytes,
      addrs.map((a) => a.bytes),
    ),
  );
  const msg = Message.decode(body);
  assert.equal(msg.type, 'ADD_PROVIDER');
  assert.deepEqual(msg.key, cid.multihash.bytes);
  assert.equal(msg.closer.length, 0);
  assert.equal(msg.providers.length, 1);
  assert.deepEqual(msg.providers[0]?.id, peer.toMultihash().bytes);
  assert.deepEqual(
    msg.providers[0]?.multiaddrs.map((b) => multiaddr(b).toString()),
    addrs.map((a) => a.toString()),
  );
});

test('generated codec reads kad-dht 16 messages: GET_PROVIDERS answers and PING', async () => {
  const KadMessage = await kadModule<{
    Message: { encode(m: object): Uint8Array };
  }>('message/dht.js');
  const peer = peerIdFromPrivateKey(await generateKeyPair('Ed25519'));
  const addr = multiaddr('/ip4/127.0.0.1/tcp/4001');
  const key = keyToCid(`sha256:${'cd'.repeat(32)}`).multihash.bytes;
  const answer = KadMessage.Message.encode({
    type: 'GET_PROVIDERS',
    key,
    clusterLevel: 3,
    record: Uint8Array.of(1, 2),
    closer: [{ id: peer.toMultihash().bytes, multiaddrs: [addr.bytes] }],
    providers: [{ id: peer.toMultihash().bytes, multiaddrs: [addr.bytes], connection: 'CONNECTED' }],
  });
  const decoded = Message.decode(answer);
  assert.equal(decoded.type, MessageType.GET_PROVIDERS);
  assert.deepEqual(decoded.key, key);
  assert.deepEqual(decoded.providers[0]?.id, peer.toMultihash().bytes);
  assert.equal(multiaddr(decoded.providers[0]?.multiaddrs[0] as Uint8Array).toString(), addr.toString());
  assert.equal(decoded.closer.length, 1);
  const ping = KadMessage.Message.encode({ type: 'PING', closer: [], providers: [] });
  assert.equal(Message.decode(ping).type, MessageType.PING);
});

test('kadId matches kad-dht 16 convertBuffer (keys) and convertPeerId (peers)', async () => {
  const utils = await kadModule<{
    convertBuffer(buf: Uint8Array): Promise<Uint8Array>;
    convertPeerId(id: unknown): Promise<Uint8Array>;
  }>('utils.js');
  const cid = keyToCid('docker.io/library/nginx:1.27');
  assert.deepEqual(
    Uint8Array.from(kadId(cid.multihash.bytes)),
    await utils.convertBuffer(cid.multihash.bytes),
  );
  const peer = peerIdFromPrivateKey(await generateKeyPair('Ed25519'));
  assert.deepEqual(Uint8Array.from(kadId(peer.toMultihash().bytes)), await utils.convertPeerId(peer));
});

test('closestCandidates: XOR order, all candidates when ≤ k', () => {
  const mk = (first: number, name: string): Candidate => {
    const id = new Uint8Array(32);
    id[0] = first;
    // PeerId is not used by the selection
    return { id: undefined as never, key: name, kadId: id };
  };
  const cands = [mk(0b1000_0000, 'far'), mk(0b0000_0011, 'b'), mk(0b0000_0001, 'a'), mk(0b0100_0000, 'mid')];
  const target = new Uint8Array(32); // zero
  assert.deepEqual(
    closestCandidates(target, cands, 2).map((c) => c.key),
    ['a', 'b'],
  );
  assert.deepEqual(
    closestCandidates(target, cands, 3).map((c) => c.key),
    ['a', 'b', 'mid'],
  );
  assert.equal(closestCandidates(target, cands, 20), cands, 'all of them, untouched');
  const t2 = new Uint8Array(32);
  t2[0] = 0b1000_0001; // XOR: far=1, a=0x80, b=0x82, mid=0xc1
  assert.deepEqual(
    closestCandidates(t2, cands, 2).map((c) => c.key),
    ['far', 'a'],
  );
});

test('SortedMemoryDatastore: get/has/delete, prefix queries see only their range', async () => {
  const ds = new SortedMemoryDatastore();
  const v = (n: number) => Uint8Array.of(n);
  await ds.put(new Key('/dht/provider/aa/p1'), v(1));
  await ds.put(new Key('/dht/provider/aa/p2'), v(2));
  await ds.put(new Key('/dht/provider/ab/p1'), v(3));
  await ds.put(new Key('/peers/x'), v(4));
  assert.deepEqual(await ds.get(new Key('/peers/x')), v(4));
  await assert.rejects(async () => ds.get(new Key('/nope')), { name: 'NotFoundError' });
  assert.equal(await ds.has(new Key('/dht/provider/ab/p1')), true);

  const keys = async (prefix?: string) => {
    const out: string[] = [];
    for await (const { key } of ds.query(prefix === undefined ? {} : { prefix })) {
      out.push(key.toString());
    }
    return out.sort();
  };
  assert.deepEqual(await keys('/dht/provider/aa'), ['/dht/provider/aa/p1', '/dht/provider/aa/p2']);
  assert.deepEqual(await keys('/dht/provider'), [
    '/dht/provider/aa/p1',
    '/dht/provider/aa/p2',
    '/dht/provider/ab/p1',
  ]);
  assert.equal((await keys()).length, 4);
  const onlyKeys: string[] = [];
  for await (const key of ds.queryKeys({ prefix: '/peers' })) {
    onlyKeys.push(key.toString());
  }
  assert.deepEqual(onlyKeys, ['/peers/x']);

  // deleting while iterating a query is safe
  for await (const { key } of ds.query({ prefix: '/dht/provider' })) {
    await ds.delete(key);
  }
  assert.deepEqual(await keys(), ['/peers/x']);
  // batches go through put/delete
  const batch = ds.batch();
  batch.put(new Key('/a/1'), v(5));
  batch.delete(new Key('/peers/x'));
  await batch.commit();
  assert.deepEqual(await keys(), ['/a/1']);
});
