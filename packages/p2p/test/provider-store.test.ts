import assert from 'node:assert/strict';
import { test } from 'node:test';
import { generateKeyPair } from '@libp2p/crypto/keys';
import { peerIdFromPrivateKey } from '@libp2p/peer-id';
import { ProviderStore } from '../src/provider-store.ts';

const peer = async () => peerIdFromPrivateKey(await generateKeyPair('Ed25519'));
const key = (n: number) => Uint8Array.of(0x12, 0x20, ...new Uint8Array(31), n);

test('provider store: add/renew/get/remove; a dead peer’s records go at once', async () => {
  let now = 1_000_000;
  const store = new ProviderStore({ validityMs: 10_000, now: () => now });
  const [a, b] = [await peer(), await peer()];
  assert.equal(store.add(key(1), a), true);
  assert.equal(store.add(key(1), b), true);
  assert.equal(store.add(key(1), a), true, 'renewal');
  assert.equal(store.add(key(2), a), true);
  assert.equal(store.size, 3);
  assert.deepEqual(store.get(key(1)).map(String), [a, b].map(String));
  assert.deepEqual(store.get(key(3)), []);
  store.remove(key(1), b);
  assert.deepEqual(store.get(key(1)).map(String), [String(a)]);
  assert.equal(store.removePeer(a.toString()), 2);
  assert.equal(store.size, 0);
  assert.equal(store.keys, 0);
  assert.deepEqual(store.get(key(2)), []);
  assert.equal(store.removePeer(a.toString()), 0, 'unknown peer');
  now += 1;
});

test('provider store: expiry by sweep (own records kept), renewal extends; bounds refuse, never grow', async () => {
  let now = 1_000_000;
  const store = new ProviderStore({ validityMs: 10_000, maxPeers: 2, maxKeys: 3, now: () => now });
  const [self, a, b] = [await peer(), await peer(), await peer()];
  store.add(key(1), self);
  store.add(key(1), a);
  store.add(key(2), a);
  now += 6_000;
  store.add(key(2), a); // renewed
  now += 5_000; // key 1 of a expired, key 2 renewed
  assert.deepEqual(store.get(key(1)).map(String), [], 'expired records are not returned before the sweep');
  assert.equal(store.sweep(self.toString()), 1);
  store.add(key(1), self); // a fresh own record
  assert.deepEqual(store.get(key(2)).map(String), [String(a)]);
  assert.equal(store.size, 2);
  // bounds: a third peer and a fourth key are refused
  assert.equal(store.add(key(3), b), false, 'peer table full');
  store.add(key(3), a);
  assert.equal(store.add(key(4), a), false, 'key table full');
  assert.equal(store.keys, 3);
  // a peer slot frees with its last record
  store.removePeer(a.toString());
  assert.equal(store.add(key(3), b), true);
});

test('provider store: one provider peer holds at most maxRecordsPerPeer records; others still fit', async () => {
  const store = new ProviderStore({ validityMs: 10_000, maxRecordsPerPeer: 3 });
  const [a, b] = [await peer(), await peer()];
  for (let i = 0; i < 3; i++) {
    assert.equal(store.add(key(i), a), true);
  }
  assert.equal(store.add(key(3), a), false, 'a fourth record of the same peer is refused');
  assert.equal(store.add(key(1), a), true, 'renewing a held record still works');
  assert.equal(store.add(key(3), b), true, 'another peer is not limited by it');
  assert.equal(store.size, 4);
});
