// A member's suspicion is evidence, not truth (suspicion.ts), on 3 nodes (127.77.47.x): a peer
// that claims a live member is dead cannot get its records dropped (the told node checks with its
// own ping and clears the suspicion), and suspicions from one peer are rate-limited.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { peerIdFromString } from '@libp2p/peer-id';
import { lpStream } from '@libp2p/utils';
import type { Libp2p } from 'libp2p';
import { createP2PNode, type P2PLogger, type P2PNode } from '../src/index.ts';
import { FERRY_SUSPECT_PROTOCOL, PER_SENDER_PER_MINUTE } from '../src/suspicion.ts';
import { until } from './until.ts';

async function providers(node: P2PNode, key: string): Promise<string[]> {
  const out: string[] = [];
  for await (const p of node.lookup(key, { signal: AbortSignal.timeout(5_000) })) {
    out.push(p.id);
  }
  return out;
}

/** What a hostile member does: tell `to` that `suspect` is dead, over its connection to `to`. */
async function lie(from: P2PNode, to: P2PNode, suspect: string): Promise<void> {
  const libp2p = (from as unknown as { libp2p: Libp2p }).libp2p;
  const conn = libp2p.getConnections(peerIdFromString(to.peerId)).find((c) => c.status === 'open');
  assert.ok(conn, 'the liar is connected to its target');
  const stream = await conn.newStream(FERRY_SUSPECT_PROTOCOL, { signal: AbortSignal.timeout(5_000) });
  await lpStream(stream).write(peerIdFromString(suspect).toMultihash().bytes);
  await stream.close();
}

test('a member claiming a live member is dead cannot get its records dropped; its suspicions are rate-limited', async (t) => {
  const gone: string[] = [];
  const logger: P2PLogger = {
    debug() {},
    info(obj: object, msg?: string) {
      if (msg === 'peer gone: its provider records dropped') {
        gone.push((obj as { peer: string }).peer);
      }
    },
    warn() {},
    error() {},
  };
  const nodes: P2PNode[] = [];
  t.after(() => Promise.all(nodes.map((n) => n.stop())));
  for (let i = 0; i < 3; i++) {
    const first = nodes[0];
    nodes.push(
      await createP2PNode({
        listen: { host: `127.77.47.${i + 1}`, port: 0 },
        registryPort: 5000 + i,
        ...(i === 0 ? { logger } : {}),
        ...(first === undefined ? {} : { bootstrapPeers: [first.addresses[0] as string] }),
      }),
    );
  }
  const [told, holder, liar] = nodes as [P2PNode, P2PNode, P2PNode];
  await until('full mesh', () => nodes.every((n) => n.peers().length === 2), 30_000, 50);
  const key = `sha256:${'7e'.repeat(32)}`;
  await holder.advertise([key]);
  await until('the told node finds the holder', async () =>
    (await providers(told, key)).includes(holder.peerId),
  );

  await lie(liar, told, holder.peerId);
  await until(
    'the suspicion checked',
    () => {
      const s = told.stats().liveness.suspicions;
      return s.cleared + s.confirmed === 1;
    },
    10_000,
    20,
  );
  assert.deepEqual(gone, [], 'no peer declared gone on a member’s word');
  assert.deepEqual(await providers(told, key), [holder.peerId], 'the holder’s record is kept');
  assert.equal(told.stats().liveness.suspicions.confirmed, 0);

  // one after the other, each checked before the next: past the per-sender rate they are ignored
  for (let n = 1; n < PER_SENDER_PER_MINUTE + 4; n++) {
    const before = told.stats().liveness.suspicions;
    await lie(liar, told, holder.peerId);
    await until(
      'the suspicion handled',
      () => {
        const s = told.stats().liveness.suspicions;
        return s.cleared + s.ignored > before.cleared + before.ignored;
      },
      10_000,
      20,
    );
  }
  const s = told.stats().liveness.suspicions;
  assert.equal(s.received, PER_SENDER_PER_MINUTE + 4);
  assert.equal(s.cleared, PER_SENDER_PER_MINUTE, 'at most the rate was checked');
  assert.equal(s.ignored, 4, 'the rest ignored');
  assert.deepEqual(gone, []);
  assert.deepEqual(await providers(told, key), [holder.peerId]);
});
