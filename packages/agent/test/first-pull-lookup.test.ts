// First-pull sharing beyond the mesh: with more members than `meshLimit`, a node's provider store is
// not known complete, so in-flight lookups go through the DHT. Real in-process p2p nodes (this file
// owns 127.78.1.x): a node that asks late still finds the node fetching, and a fetcher finds a
// lower-ranked fetcher to yield to.
import assert from 'node:assert/strict';
import { type TestContext, test } from 'node:test';
import { createP2PNode, type P2PNode } from '@ferry/p2p';
import { copyKey, electionKey, fetchKey, Inflight, rank } from '@ferry/registry';

async function until(what: string, check: () => boolean, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

async function untilAsync(what: string, check: () => Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check().catch(() => false))) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function cluster(t: TestContext, count: number): Promise<P2PNode[]> {
  const nodes: P2PNode[] = [];
  for (let i = 1; i <= count; i++) {
    const first = nodes[0];
    const node = await createP2PNode({
      listen: { host: `127.78.1.${i}`, port: 0 },
      registryPort: 5100 + i,
      // Fewer than the members: no node's store counts as complete, lookups ask the DHT.
      meshLimit: 2,
      ...(first === undefined
        ? {}
        : {
            bootstrapPeers: [
              /^\/ip4\/([^/]+)\/tcp\/(\d+)/
                .exec(first.addresses[0] ?? '')
                ?.slice(1, 3)
                .join(':') ?? '',
            ],
          }),
    });
    t.after(() => node.stop());
    nodes.push(node);
  }
  await until('routing tables', () => nodes.every((n) => n.ready()));
  return nodes;
}

test('beyond the mesh: a late node finds the fetcher, a fetcher finds a lower-ranked fetcher', async (t) => {
  const nodes = await cluster(t, 6);
  const digest = `sha256:${'7'.repeat(64)}`;
  const byRank = [...nodes].sort((a, b) => (rank(a.peerId, digest) < rank(b.peerId, digest) ? -1 : 1));
  const lowest = byRank[0] as P2PNode;
  const fetcher = byRank[3] as P2PNode;
  const late = byRank[5] as P2PNode;
  // The fetcher's records, as a fetching node announces them.
  await fetcher.advertise([electionKey(digest), copyKey(digest), fetchKey(digest)]);
  // The late node's lookups go through the DHT (its store is not complete): poll until one of them
  // returns the fetcher, so a single lookup that misses its deadline on a loaded machine does not
  // decide the test. Then the election, with the same lookups, must choose the fetcher.
  await untilAsync('the late node finds the fetcher through the DHT', async () => {
    for await (const p of late.lookup(fetchKey(digest), { signal: AbortSignal.timeout(3_000) })) {
      if (p.id === fetcher.peerId) return true;
    }
    return false;
  });
  const chosen = await new Inflight(late, 100).elect(digest);
  assert.equal(chosen[0]?.id, fetcher.peerId, 'the late node follows the node fetching');
  // A lower-ranked node fetches too (it decided without seeing the fetcher): the fetcher yields to it.
  await lowest.advertise([fetchKey(digest)]);
  const yieldTo = await new Inflight(fetcher, 100).lowerFetcher(
    digest,
    AbortSignal.timeout(15_000),
    new Set(),
  );
  assert.equal(yieldTo?.id, lowest.peerId);
  // The lowest never yields to a higher-ranked fetcher.
  const none = await new Inflight(lowest, 100).lowerFetcher(digest, AbortSignal.timeout(1500), new Set());
  assert.equal(none, undefined);
});
