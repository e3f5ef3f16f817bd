/**
 * Bounded resources on the registry server: a client that stops reading a blob is cut after the idle
 * timeout (its buffers go with it), and one client address cannot hold more than its share of
 * connections. Each test fails without its bound.
 */
import assert from 'node:assert/strict';
import { connect, type Socket } from 'node:net';
import { describe, it, type TestContext } from 'node:test';
import { createMemoryContentSource, createMemoryRouter, createRegistryServer } from '../src/index.ts';
import { loopback, sampleImage, storeImage, until } from './helpers.ts';

async function server(
  t: TestContext,
  extra: Parameters<typeof createRegistryServer>[0] extends infer O ? Partial<O> : never,
) {
  const source = createMemoryContentSource();
  const img = sampleImage(32 * 1024 * 1024);
  storeImage(source, img);
  const app = await createRegistryServer({ source, router: createMemoryRouter(), ...extra });
  const host = loopback();
  await app.listen({ host, port: 0 });
  t.after(() => app.close());
  return { img, host, port: (app.server.address() as { port: number }).port };
}

function open(host: string, port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect({ host, port }, () => resolve(s));
    s.once('error', reject);
  });
}

describe('connection bounds', () => {
  it('a client that stops reading a blob is disconnected after the idle timeout', async (t) => {
    const { img, host, port } = await server(t, { connectionIdleTimeoutMs: 300 });
    const s = await open(host, port);
    s.on('error', () => {});
    s.write(`GET /v2/library/app/blobs/${img.layerDigest} HTTP/1.1\r\nhost: x\r\n\r\n`);
    s.pause(); // never reads: the server's writes stall once the socket buffers are full
    await new Promise((r) => setTimeout(r, 1500));
    // Read what the server managed to send before it gave up: the connection ends short of the blob.
    let received = 0;
    s.on('data', (d: Buffer) => {
      received += d.length;
    });
    let closed = false;
    s.once('close', () => {
      closed = true;
    });
    s.resume();
    await until(() => closed, 'the server closed the stalled connection', 10_000);
    assert.ok(received < img.layer.length, `cut short: ${received} of ${img.layer.length} bytes`);
  });

  it('one client address holds at most maxConnectionsPerClient connections', async (t) => {
    const { host, port } = await server(t, { maxConnectionsPerClient: 3 });
    const sockets = await Promise.all(Array.from({ length: 5 }, () => open(host, port)));
    t.after(() => {
      for (const s of sockets) s.destroy();
    });
    const closed = new Set<number>();
    sockets.forEach((s, i) => {
      s.on('error', () => {});
      s.on('close', () => closed.add(i));
    });
    await until(() => closed.size === 2, 'two connections over the cap are closed');
    for (const s of sockets.filter((_, i) => !closed.has(i))) {
      s.write('GET /v2/ HTTP/1.1\r\nhost: x\r\n\r\n');
      const answer = await new Promise<string>((resolve) => s.once('data', (d) => resolve(String(d))));
      assert.match(answer, /^HTTP\/1.1 200/);
    }
  });
});
