// Network keys and the private network. Nodes listen on 127.77.30-39.x (this file's block).
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type TestContext, test } from 'node:test';
import { noise } from '@chainsafe/libp2p-noise';
import { yamux } from '@chainsafe/libp2p-yamux';
import type { ConnectionProtector } from '@libp2p/interface';
import { preSharedKey } from '@libp2p/pnet';
import { tcp } from '@libp2p/tcp';
import { multiaddr } from '@multiformats/multiaddr';
import { xsalsa20 } from '@noble/ciphers/salsa.js';
import { createLibp2p, type Libp2p } from 'libp2p';
import {
  createP2PNode,
  type P2PNode,
  type P2PNodeOptions,
  parseNetworkKeys,
  readNetworkKeyFile,
} from '../src/index.ts';

const hex = (key: Uint8Array) => Buffer.from(key).toString('hex');
const K1 = randomBytes(32);
const K2 = randomBytes(32);
const K3 = randomBytes(32);

async function until(what: string, check: () => boolean | Promise<boolean>, timeoutMs = 10_000) {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) {
      throw new Error(`timed out waiting for ${what}`);
    }
    await new Promise((r) => setTimeout(r, 25));
  }
}

async function node(t: TestContext, host: string, keys: Uint8Array[], extra: Partial<P2PNodeOptions> = {}) {
  const n = await createP2PNode({
    listen: { host, port: 0 },
    registryPort: 5000,
    networkKeys: keys,
    ...extra,
  });
  t.after(() => n.stop());
  return n;
}

function hostPort(n: P2PNode): string {
  const m = /^\/ip4\/([^/]+)\/tcp\/(\d+)/.exec(n.addresses[0] ?? '');
  assert.ok(m);
  return `${m[1]}:${m[2]}`;
}

/** A plain libp2p host (TCP, noise, yamux), with an optional protector: stands for a foreign peer. */
async function plainHost(
  t: TestContext,
  host: string,
  protector?: () => ConnectionProtector,
): Promise<Libp2p> {
  const h = await createLibp2p({
    addresses: { listen: [`/ip4/${host}/tcp/0`] },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    ...(protector === undefined ? {} : { connectionProtector: protector }),
  });
  t.after(() => h.stop());
  return h;
}

const pnetKey = (key: Uint8Array) =>
  preSharedKey({ psk: new TextEncoder().encode(`/key/swarm/psk/1.0.0/\n/base16/\n${hex(key)}`) });

test('parseNetworkKeys: keys in order, comments and blank lines skipped; errors name the line, never the key', async () => {
  const text = `# ferry network key\n\n${hex(K1)}\r\n  ${hex(K2).toUpperCase()}  \n# old\n${hex(K1)}\n`;
  assert.deepEqual(
    parseNetworkKeys(text).map((k) => hex(k)),
    [hex(K1), hex(K2)],
  );
  const secretish = `${hex(K3).slice(0, 62)}zz`;
  assert.throws(
    () => parseNetworkKeys(`${hex(K1)}\n${secretish}\n`),
    (err: Error) => /line 2/.test(err.message) && !err.message.includes(secretish.slice(0, 16)),
  );
  assert.throws(() => parseNetworkKeys(`${hex(K1)}00\n`), /line 1: expected a key of 64 hex/);
  assert.throws(() => parseNetworkKeys('# nothing\n\n'), /no key/);

  const dir = await mkdtemp(join(tmpdir(), 'ferry-netkey-'));
  try {
    const file = join(dir, 'network.key');
    await writeFile(file, `${hex(K2)}\n`);
    assert.deepEqual((await readNetworkKeyFile(file)).map(hex), [hex(K2)]);
    await assert.rejects(
      readNetworkKeyFile(join(dir, 'missing')),
      /cannot read network key file .*missing \(ENOENT\)/,
    );
    await writeFile(file, 'not a key\n');
    await assert.rejects(
      readNetworkKeyFile(file),
      (err: Error) => /network\.key line 1/.test(err.message) && !err.message.includes('not a key'),
    );
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('only key holders connect: no key, a wrong key fail; @libp2p/pnet with an accepted key works both ways', async (t) => {
  const a = await node(t, '127.77.30.1', [K1, K2]);
  const target = multiaddr(a.addresses[0] as string);

  const noKey = await plainHost(t, '127.77.30.2');
  await assert.rejects(noKey.dial(target, { signal: AbortSignal.timeout(5_000) }));
  const wrong = await plainHost(t, '127.77.30.3', pnetKey(K3));
  await assert.rejects(wrong.dial(target, { signal: AbortSignal.timeout(5_000) }));
  assert.equal(a.peers().length, 0, 'A holds no connection from either');

  // stock @libp2p/pnet holding A's second key: same wire protocol
  const second = await plainHost(t, '127.77.30.4', pnetKey(K2));
  const conn = await second.dial(target, { signal: AbortSignal.timeout(5_000) });
  assert.equal(conn.remotePeer.toString(), a.peerId);
  // and A (primary K1) dials a stock node holding K1
  const first = await plainHost(t, '127.77.30.5', pnetKey(K1));
  const b = await node(t, '127.77.30.6', [K1], {
    bootstrapPeers: [first.getMultiaddrs()[0]?.toString() as string],
  });
  await until('B connected to the stock K1 node', () =>
    b.peers().some((p) => p.id === first.peerId.toString()),
  );
});

test('a peer without an accepted key receives nothing but a random nonce', async (t) => {
  const a = await node(t, '127.77.31.1', [K1]);
  const [host, port] = hostPort(a).split(':') as [string, string];
  const received = async (send: Uint8Array): Promise<Buffer> => {
    const socket = connect({ host, port: Number(port), localAddress: '127.77.31.2' });
    const chunks: Buffer[] = [];
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('error', () => {});
    await new Promise((r) => socket.once('connect', r));
    socket.write(send);
    await new Promise((r) => socket.once('close', r));
    return Buffer.concat(chunks);
  };
  // a libp2p node without a key: its first bytes are the plain multistream header
  const plain = await received(new TextEncoder().encode('\x13/multistream/1.0.0\n\x07/noise\n'.repeat(3)));
  assert.equal(plain.length, 24, 'only the nonce');
  // a node with another key: nonce, then the header encrypted with K3
  const nonce = randomBytes(24);
  const header = xsalsa20(K3, nonce, new TextEncoder().encode('\x13/multistream/1.0.0\n\x07/noise\n'));
  const wrong = await received(Buffer.concat([nonce, header]));
  assert.equal(wrong.length, 24, 'only the nonce');
  assert.equal(a.peers().length, 0);
});

test('overlapping key lists connect; a rotation K1 → K2 keeps every node connected', async (t) => {
  // different but overlapping: B dials A with K2, which A accepts
  const a = await node(t, '127.77.32.1', [K1, K2]);
  const b = await node(t, '127.77.32.2', [K2, K3], { bootstrapPeers: [hostPort(a)] });
  await until('B joined A', () => a.ready() && b.ready());

  // rotation on a 3-node cluster with fixed identities: every step restarts one node at a time
  const dirs = await Promise.all([1, 2, 3].map(() => mkdtemp(join(tmpdir(), 'ferry-rotate-'))));
  t.after(() => Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true }))));
  const hosts = ['127.77.33.1', '127.77.33.2', '127.77.33.3'];
  const ports = [0, 0, 0];
  const nodes: (P2PNode | undefined)[] = [];
  const startAt = async (i: number, keys: Uint8Array[]) => {
    const n = await createP2PNode({
      listen: { host: hosts[i] as string, port: ports[i] as number },
      registryPort: 5000,
      dataDir: dirs[i] as string,
      networkKeys: keys,
      bootstrapPeers: hosts.flatMap((h, j) =>
        j !== i && (ports[j] as number) > 0 ? [`${h}:${ports[j]}`] : [],
      ),
    });
    ports[i] = Number(hostPort(n).split(':')[1]);
    nodes[i] = n;
    return n;
  };
  t.after(() => Promise.all(nodes.map((n) => n?.stop())));
  for (let i = 0; i < 3; i++) {
    await startAt(i, [K1]);
  }
  const key = `sha256:${'e1'.repeat(32)}`;
  const connectedAll = () => nodes.every((n) => (n?.peers().length ?? 0) === 2);
  await until('full mesh on K1', connectedAll);
  for (const keys of [[K1, K2], [K2, K1], [K2]]) {
    for (let i = 0; i < 3; i++) {
      await nodes[i]?.stop();
      const n = await startAt(i, keys);
      await until(`node ${i} back with ${keys.length} key(s)`, connectedAll);
      await n.advertise([key]);
      const other = nodes[(i + 1) % 3] as P2PNode;
      await until('the restarted node is found', async () => {
        for await (const p of other.lookup(key, { signal: AbortSignal.timeout(2_000) })) {
          if (p.id === n.peerId) {
            return true;
          }
        }
        return false;
      });
    }
  }
});
