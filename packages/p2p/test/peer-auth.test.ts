import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { generateKeyPair } from '@libp2p/crypto/keys';
import { peerIdFromPrivateKey } from '@libp2p/peer-id';
import { createPeerAuth, PEER_AUTH_HEADER } from '../src/index.ts';

async function identity() {
  const key = await generateKeyPair('Ed25519');
  return { peerId: peerIdFromPrivateKey(key).toString(), sign: async (d: Uint8Array) => key.sign(d) };
}

describe('peer auth', () => {
  const req = { method: 'GET', pathAndQuery: '/v2/a/blobs/sha256:00?ns=docker.io' };

  it('accepts a signed request once, under any listed key; refuses replays, other paths, stale times, other keys', async () => {
    const k1 = randomBytes(32);
    const k2 = randomBytes(32);
    let clock = 1_000_000;
    const a = createPeerAuth({ keys: [k2, k1], node: await identity(), now: () => clock });
    const b = createPeerAuth({ keys: [k1, k2], node: await identity(), now: () => clock });
    const outsider = createPeerAuth({ keys: [randomBytes(32)], node: await identity(), now: () => clock });
    const { headers } = a.signRequest(req);
    assert.equal(
      b.verifyRequest({ ...req, pathAndQuery: '/v2/a/blobs/sha256:01?ns=docker.io' }, headers),
      undefined,
    );
    assert.equal(b.verifyRequest({ ...req, method: 'HEAD' }, headers), undefined);
    assert.equal(b.verifyRequest(req, headers), a.peerId, 'rotation: b lists a primary key second');
    assert.equal(b.verifyRequest(req, headers), undefined, 'a replay is refused');
    assert.equal(b.verifyRequest(req, outsider.signRequest(req).headers), undefined);
    const late = a.signRequest(req).headers;
    clock += 31_000;
    assert.equal(b.verifyRequest(req, late), undefined, 'outside the window');
    const tampered = a.signRequest(req).headers;
    tampered[PEER_AUTH_HEADER] = (tampered[PEER_AUTH_HEADER] as string).replace(
      /peer=\w+/,
      `peer=${b.peerId}`,
    );
    assert.equal(b.verifyRequest(req, tampered), undefined, 'the peer id is under the MAC');
    assert.equal(b.verifyRequest(req, {}), undefined);
    assert.equal(b.verifyRequest(req, { [PEER_AUTH_HEADER]: 'v1 garbage' }), undefined);
  });

  it('the answer is signed by the answering node: another member cannot answer for it', async () => {
    const k = randomBytes(32);
    const a = createPeerAuth({ keys: [k], node: await identity() });
    const b = createPeerAuth({ keys: [k], node: await identity() });
    const proof = { nonce: 'n'.repeat(22), status: 200, digest: 'sha256:00', length: '10' };
    const h = await b.signResponse(proof);
    assert.equal(await a.verifyResponse(b.peerId, proof, h), true);
    assert.equal(await a.verifyResponse(a.peerId, proof, h), false, 'not signed by a');
    assert.equal(await a.verifyResponse(b.peerId, { ...proof, length: '11' }, h), false);
    assert.equal(await a.verifyResponse(b.peerId, { ...proof, nonce: 'm'.repeat(22) }, h), false);
    assert.equal(await a.verifyResponse(b.peerId, proof, {}), false);
  });

  it("a tag answer's X-Ferry-Resolved-At is under the signature: changed, added or stripped, it fails", async () => {
    const k = randomBytes(32);
    const a = createPeerAuth({ keys: [k], node: await identity() });
    const b = createPeerAuth({ keys: [k], node: await identity() });
    const proof = { nonce: 'n'.repeat(22), status: 200, digest: 'sha256:00', length: '10' };
    const tag = { ...proof, resolvedAt: '1700000000000' };
    const h = await b.signResponse(tag);
    assert.equal(await a.verifyResponse(b.peerId, tag, h), true);
    assert.equal(await a.verifyResponse(b.peerId, { ...tag, resolvedAt: '1900000000000' }, h), false);
    assert.equal(await a.verifyResponse(b.peerId, proof, h), false, 'stripped');
    assert.equal(await a.verifyResponse(b.peerId, tag, await b.signResponse(proof)), false, 'added');
  });

  it('the nonce cache is bounded', async () => {
    const k = randomBytes(32);
    const a = createPeerAuth({ keys: [k], node: await identity() });
    const b = createPeerAuth({ keys: [k], node: await identity(), maxNonces: 10 });
    for (let i = 0; i < 50; i++) assert.ok(b.verifyRequest(req, a.signRequest(req).headers));
  });
});
