// Ferry's compact provider-record protocol (provider-batches.ts): frames round-trip; malformed
// frames are refused; a real Ferry node takes a batch from a peer as that peer's records, and a
// hostile peer cannot exceed the per-stream bounds (oversized frame, too many frames) nor crash it.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { noise } from '@chainsafe/libp2p-noise';
import { yamux } from '@chainsafe/libp2p-yamux';
import { tcp } from '@libp2p/tcp';
import { lpStream } from '@libp2p/utils';
import { multiaddr } from '@multiformats/multiaddr';
import { createLibp2p, type Libp2p } from 'libp2p';
import { createP2PNode, type P2PNode } from '../src/index.ts';
import {
  decodeRecordFrame,
  encodeRecordFrames,
  FERRY_PROVIDERS_PROTOCOL,
  MAX_FRAMES_PER_STREAM,
  MAX_KEYS_PER_FRAME,
  MULTIHASH_BYTES,
  sendRecordBatch,
} from '../src/provider-batches.ts';
import { until } from './until.ts';

const multihash = () => Uint8Array.from([0x12, 0x20, ...randomBytes(32)]);

test('records frames: keys round-trip in frames of at most MAX_KEYS_PER_FRAME; malformed frames throw', () => {
  const keys = Array.from({ length: MAX_KEYS_PER_FRAME + 5 }, multihash);
  const frames = encodeRecordFrames(keys);
  assert.equal(frames.length, 2);
  assert.equal(frames[0]?.length, MAX_KEYS_PER_FRAME * MULTIHASH_BYTES);
  assert.deepEqual(
    frames.flatMap((f) => decodeRecordFrame(f)),
    keys,
  );
  assert.throws(() => decodeRecordFrame(new Uint8Array(0)), /whole number/);
  assert.throws(() => decodeRecordFrame(new Uint8Array(MULTIHASH_BYTES + 1)), /whole number/);
  const sha512ish = multihash();
  sha512ish[0] = 0x13;
  assert.throws(() => decodeRecordFrame(sha512ish), /not a sha2-256 multihash/);
});

async function rawPeer(host: string): Promise<Libp2p> {
  return await createLibp2p({
    addresses: { listen: [`/ip4/${host}/tcp/0`] },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
  });
}

test('a Ferry node stores a batch as the sender’s records; a hostile sender is held to the stream bounds', async (t) => {
  const node: P2PNode = await createP2PNode({ listen: { host: '127.77.48.1', port: 0 }, registryPort: 5000 });
  const peer = await rawPeer('127.77.48.2');
  t.after(async () => {
    await peer.stop();
    await node.stop();
  });
  const target = multiaddr(node.addresses[0] as string);
  await peer.dial(target);
  const peerId = (await peer.dial(target)).remotePeer;

  // a well-formed batch: every key becomes the sender's record
  const keys = Array.from({ length: 3_000 }, multihash);
  await sendRecordBatch(peer, peerId, keys, AbortSignal.timeout(10_000));
  assert.equal(node.stats().records, 3_000);

  // a frame above the size bound: the stream is aborted, nothing of it is stored
  const big = await peer.dialProtocol(peerId, FERRY_PROVIDERS_PROTOCOL);
  const lpBig = lpStream(big);
  await lpBig.write(new Uint8Array((MAX_KEYS_PER_FRAME + 1) * MULTIHASH_BYTES).fill(0x12));
  await assert.rejects(lpBig.read({ signal: AbortSignal.timeout(5_000) }));
  assert.equal(node.stats().records, 3_000);

  // more frames than a stream may carry: the frames beyond the bound are not stored
  const many = await peer.dialProtocol(peerId, FERRY_PROVIDERS_PROTOCOL);
  const lpMany = lpStream(many);
  const frames = Array.from({ length: MAX_FRAMES_PER_STREAM + 4 }, () =>
    encodeRecordFrames(Array.from({ length: 16 }, multihash)),
  ).flat();
  await lpMany.writeV(frames).catch(() => {});
  await until(
    'the stream bound is reached',
    () => node.stats().records >= 3_000 + MAX_FRAMES_PER_STREAM * 16,
    10_000,
    50,
  );
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(node.stats().records, 3_000 + MAX_FRAMES_PER_STREAM * 16, 'no record beyond the bound');
  await assert.rejects(lpMany.read({ signal: AbortSignal.timeout(5_000) }));

  // the node still serves: a fresh batch is taken
  await sendRecordBatch(peer, peerId, [multihash()], AbortSignal.timeout(10_000));
  assert.equal(node.stats().records, 3_000 + MAX_FRAMES_PER_STREAM * 16 + 1);
});
