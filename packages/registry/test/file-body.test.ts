/**
 * The file fast path (ContentSource.openFile → file-body.ts): bodies written from recycled buffers must
 * be byte-exact for whole blobs, ranges, slow readers and concurrent responses; a short file breaks the
 * response instead of completing it; every file handle is closed, also when the client leaves.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { type FileHandle, open } from 'node:fs/promises';
import { get, type IncomingMessage } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import { createMemoryContentSource, createMemoryRouter, createRegistryServer } from '../src/index.ts';
import type { ContentSource } from '../src/types.ts';
import { events, loopback, sha256, until } from './helpers.ts';

const MiB = 1 << 20;

async function setup(t: TestContext, blob: Buffer, opts: { announce?: number } = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'ferry-file-body-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const digest = sha256(blob);
  writeFileSync(join(dir, 'blob'), blob);
  const memory = createMemoryContentSource();
  let opened = 0;
  let closed = 0;
  const source: ContentSource = {
    resolveTag: memory.resolveTag,
    async stat(d) {
      return d === digest ? { digest, size: opts.announce ?? blob.length } : undefined;
    },
    open: () => Promise.reject(new Error('the stream path must not be used')),
    async openFile(d): Promise<FileHandle | undefined> {
      if (d !== digest) return undefined;
      const fh = await open(join(dir, 'blob'), 'r');
      opened++;
      const close = fh.close.bind(fh);
      fh.close = () => {
        closed++;
        return close();
      };
      return fh;
    },
  };
  const ev = events();
  const app = await createRegistryServer({ source, router: createMemoryRouter(), observer: ev.observer });
  t.after(() => app.close());
  const host = loopback();
  await app.listen({ host, port: 0 });
  const { port } = app.server.address() as { port: number };
  const url = `http://${host}:${port}/v2/library/app/blobs/${digest}?ns=docker.io`;
  return { url, ev, handles: () => ({ opened, closed }) };
}

function request(url: string, headers: Record<string, string> = {}): Promise<IncomingMessage> {
  return new Promise((resolve, reject) => {
    get(url, { headers, agent: false }, resolve).on('error', reject);
  });
}

/** Reads the whole body; with `slow`, pauses after every chunk so the server meets backpressure. */
function body(res: IncomingMessage, slow = false): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    res.on('data', (c: Buffer) => {
      chunks.push(c);
      if (slow) {
        res.pause();
        setImmediate(() => res.resume());
      }
    });
    res.once('end', () => resolve(Buffer.concat(chunks)));
    res.once('error', reject);
    res.once('aborted', () => reject(new Error('aborted')));
  });
}

describe('file fast path', () => {
  it('serves a multi-buffer blob byte-exact to a slow reader, with the right headers and event', async (t) => {
    const blob = randomBytes(5 * MiB + 123);
    const { url, ev, handles } = await setup(t, blob);
    const res = await request(url);
    assert.equal(res.statusCode, 200);
    assert.equal(res.headers['content-length'], String(blob.length));
    assert.equal(res.headers['docker-content-digest'], sha256(blob));
    assert.equal(res.headers['accept-ranges'], 'bytes');
    assert.ok((await body(res, true)).equals(blob));
    const e = await until(() => ev.list[0], 'event');
    assert.equal(e.outcome, 'local');
    assert.equal(e.status, 200);
    assert.equal(e.bytes, blob.length);
    assert.equal(e.aborted, false);
    await until(() => handles().closed === 1, 'handle closed');
  });

  it('serves ranges across buffer boundaries, and concurrent responses never share a buffer', async (t) => {
    const blob = randomBytes(4 * MiB + 7);
    const { url, handles } = await setup(t, blob);
    const ranges: [number, number][] = [
      [MiB - 1, 3 * MiB + 5],
      [0, 0],
      [blob.length - 1, blob.length - 1],
      [123, 2 * MiB],
      [0, blob.length - 1],
    ];
    const got = await Promise.all(
      ranges.map(async ([a, b]) => {
        const res = await request(url, { range: `bytes=${a}-${b}` });
        assert.equal(res.statusCode, 206);
        assert.equal(res.headers['content-range'], `bytes ${a}-${b}/${blob.length}`);
        return body(res, a % 2 === 1);
      }),
    );
    got.forEach((g, i) => {
      const [a, b] = ranges[i]!;
      assert.ok(g.equals(blob.subarray(a, b + 1)), `range ${a}-${b}`);
    });
    await until(() => handles().closed === ranges.length, 'every handle closed');
  });

  it('breaks the response when the file is shorter than announced, and keeps serving', async (t) => {
    const blob = randomBytes(2 * MiB);
    const { url, ev, handles } = await setup(t, blob, { announce: 2 * MiB + 10 });
    const res = await request(url);
    assert.equal(res.statusCode, 200);
    await assert.rejects(body(res));
    const e = await until(() => ev.list[0], 'event');
    assert.match(e.error ?? '', /ends at byte 2097152/);
    await until(() => handles().closed === 1, 'handle closed');
    // The server is still there: the next (ranged, satisfiable) request is answered.
    const again = await request(url, { range: 'bytes=0-9' });
    assert.ok((await body(again)).equals(blob.subarray(0, 10)));
  });

  it('closes the file when the client leaves mid-body', async (t) => {
    const blob = randomBytes(16 * MiB);
    const { url, ev, handles } = await setup(t, blob);
    const res = await request(url);
    await new Promise((resolve) => res.once('data', resolve));
    res.destroy();
    const e = await until(() => ev.list[0], 'event');
    assert.equal(e.aborted, true);
    assert.ok(e.bytes < blob.length);
    await until(() => handles().closed === 1, 'handle closed');
  });
});
