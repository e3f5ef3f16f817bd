/**
 * `drain` on a real fastify server and real sockets: a response that has ended but whose bytes are still
 * queued for a slow reader (any body larger than the socket buffers: a whole manifest, the last chunks of
 * a relayed or spooled blob) keeps its connection through the drain; the reader gets every byte, new
 * connections are refused meanwhile, and the server closes once the (keep-alive) connection is idle.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect, type Socket } from 'node:net';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import Fastify from 'fastify';
import { drain, trackResponses } from '../src/shutdown.ts';

const BODY = 32 << 20;

/** Reads from the socket until it ends or closes; the bytes after the response head. */
async function readAll(socket: Socket): Promise<{ head: string; bodyBytes: number }> {
  const chunks: Buffer[] = [];
  socket.on('data', (c: Buffer) => chunks.push(c));
  socket.resume();
  await Promise.race([once(socket, 'end'), once(socket, 'close')]);
  const all = Buffer.concat(chunks);
  const at = all.indexOf('\r\n\r\n');
  return { head: all.subarray(0, at).toString(), bodyBytes: all.length - at - 4 };
}

test('a response ended with bytes still queued for a slow reader is not cut off by the drain', async () => {
  const app = Fastify();
  trackResponses(app);
  let ended = false;
  app.get('/blob', (_req, reply) => {
    reply.raw.once('prefinish', () => {
      ended = true;
    });
    // One write larger than any socket buffer: ended at once, flushed only as the reader reads.
    return reply.header('content-type', 'application/octet-stream').send(Buffer.alloc(BODY, 1));
  });
  await app.listen({ host: '127.0.0.1', port: 0 });
  const { port } = app.server.address() as { port: number };
  const socket = connect(port, '127.0.0.1');
  socket.pause();
  socket.write('GET /blob HTTP/1.1\r\nhost: ferry\r\n\r\n');
  for (let i = 0; i < 200 && !ended; i++) await sleep(10);
  assert.ok(ended, 'the response has ended');

  const drained = drain(app, 30_000);
  // Several drain sweeps (every 100 ms) pass while the reader reads nothing; new connections are refused.
  await sleep(600);
  const refused = await new Promise<string | undefined>((resolve) => {
    const probe = connect(port, '127.0.0.1');
    probe.once('connect', () => {
      probe.destroy();
      resolve(undefined);
    });
    probe.once('error', (err: NodeJS.ErrnoException) => resolve(err.code));
  });
  assert.equal(refused, 'ECONNREFUSED');
  assert.equal(socket.destroyed, false);
  const got = await readAll(socket);
  assert.match(got.head, /^HTTP\/1\.1 200/);
  assert.equal(got.bodyBytes, BODY, 'every byte arrived');
  assert.equal(await drained, true, 'the server closed within the grace period');
  await app.close();
});
