import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import {
  allocateBlock,
  type BuiltImage,
  buildImage,
  type ContainerdHandle,
  pushImage,
  type RegistryHandle,
  startContainerd,
  startRegistry,
  waitFor,
} from '../../../test/rig/index.ts';
import {
  type ContainerdClient,
  ContainerdError,
  type ContainerdEvent,
  checkCriConfig,
  createContainerdClient,
  createWatcher,
  NotFoundError,
  type ResyncReason,
} from '../src/index.ts';

const sha = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

async function collect(s: NodeJS.ReadableStream): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of s as AsyncIterable<Buffer>) chunks.push(c);
  return Buffer.concat(chunks);
}

describe('@ferry/containerd against a real containerd', () => {
  const cleanups: (() => unknown)[] = [];
  const t = { after: (fn: () => unknown) => cleanups.push(fn) };
  let registry: RegistryHandle;
  let node: ContainerdHandle;
  let image: BuiltImage;
  let ref: string;
  let fast: ContainerdClient; // with contentPath: file fast path
  let slow: ContainerdClient; // without: Content.Read

  before(async () => {
    const block = allocateBlock();
    cleanups.push(() => block.release());
    registry = await startRegistry({ host: block.upstream, t });
    image = await buildImage({ layers: [3 * 1024 * 1024 + 123, 10_000] });
    await pushImage(registry.url, 'ctd/app', 'v1', image);
    node = await startContainerd({ name: 'ctd', host: block.node(1), t });
    ref = `${registry.host}/ctd/app:v1`;
    await node.pull(ref);
    fast = createContainerdClient({ socket: node.socket, contentPath: node.contentPath });
    slow = createContainerdClient({ socket: node.socket });
    cleanups.push(
      () => fast.close(),
      () => slow.close(),
    );
  });
  after(async () => {
    for (const fn of cleanups.reverse()) await fn();
  });

  test('version and plugins', async () => {
    const v = await fast.version();
    assert.match(v.version, /^1\.6\./);
    const plugins = await fast.plugins(['type==io.containerd.grpc.v1,id==cri']);
    assert.deepEqual(
      plugins.map((p) => `${p.type}.${p.id}`),
      ['io.containerd.grpc.v1.cri'],
    );
    assert.equal(plugins[0]!.initError, undefined);
  });

  test('list and get images', async () => {
    const all = await fast.listImages();
    const img = all.find((i) => i.name === ref);
    assert.ok(img);
    assert.deepEqual(img.target, {
      mediaType: image.manifest.mediaType,
      digest: image.digest,
      size: image.manifest.size,
    });
    // CRI adds its own record named by the config digest (the image id) with the same target.
    const filtered = await fast.listImages([`target.digest==${image.digest}`]);
    assert.ok(filtered.some((i) => i.name === ref));
    assert.ok(filtered.every((i) => i.target.digest === image.digest));
    assert.deepEqual(await fast.listImages([`name==${ref}`]).then((l) => l.length), 1);
    assert.deepEqual((await fast.getImage(ref))?.target.digest, image.digest);
    assert.equal(await fast.getImage(`${registry.host}/ctd/app:nope`), undefined);
    await assert.rejects(
      fast.listImages(['name~=']),
      (e) => e instanceof ContainerdError && e.code === 'INVALID_ARGUMENT',
    );
  });

  test('namespace is respected', async () => {
    const other = createContainerdClient({ socket: node.socket, namespace: 'ferry-empty' });
    try {
      assert.equal(other.namespace, 'ferry-empty');
      assert.deepEqual(await other.listImages(), []);
      assert.equal(await other.info(image.digest), undefined);
    } finally {
      other.close();
    }
  });

  test('info and list content', async () => {
    const layer = image.layers[0]!;
    const info = await fast.info(layer.digest);
    assert.equal(info?.size, layer.size);
    assert.equal(info?.labels['containerd.io/uncompressed'], layer.diffId);
    const manifestInfo = await fast.info(image.digest);
    assert.equal(manifestInfo?.labels['containerd.io/gc.ref.content.l.0'], layer.digest);
    assert.equal(await fast.info(`sha256:${'0'.repeat(64)}`), undefined);
    const all = await fast.listContent();
    for (const d of [image.digest, image.config.digest, ...image.layers.map((l) => l.digest)]) {
      assert.ok(
        all.some((e) => e.digest === d),
        `${d} listed`,
      );
    }
    const one = await fast.listContent([`digest==${layer.digest}`]);
    assert.deepEqual(
      one.map((e) => [e.digest, e.size]),
      [[layer.digest, layer.size]],
    );
  });

  for (const which of ['file fast path', 'gRPC Content.Read'] as const) {
    test(`open full and ranged (${which})`, async () => {
      const c = which === 'file fast path' ? fast : slow;
      const layer = image.layers[0]!;
      const expected = readFileSync(layer.path);
      const full = await collect(await c.open(layer.digest));
      assert.equal(full.length, layer.size);
      assert.equal(sha(full), layer.digest);
      // A range crossing the 1 MiB chunk boundaries of Content.Read, and a one-byte range at the end.
      for (const range of [
        { start: 1000, end: 2 * 1024 * 1024 + 17 },
        { start: layer.size - 1, end: layer.size - 1 },
        { start: 0, end: 0 },
      ]) {
        const part = await collect(await c.open(layer.digest, range));
        assert.ok(
          part.equals(expected.subarray(range.start, range.end + 1)),
          `range ${range.start}-${range.end}`,
        );
      }
      await assert.rejects(c.open(`sha256:${'1'.repeat(64)}`), NotFoundError);
      await assert.rejects(
        c.open(layer.digest, { start: layer.size + 10, end: layer.size + 20 }),
        (e) => e instanceof ContainerdError && e.code === 'OUT_OF_RANGE',
      );
      const manifest = await c.readAll(image.digest, 64 * 1024);
      assert.ok(manifest.equals(image.manifest.bytes));
      await assert.rejects(
        c.readAll(layer.digest, 1024),
        (e) => e instanceof ContainerdError && e.code === 'TOO_LARGE',
      );
    });
  }

  test('an aborted reader does not break later reads', async () => {
    const layer = image.layers[0]!;
    const s = (await slow.open(layer.digest)) as import('node:stream').Readable;
    for await (const _ of s) break; // destroys the stream after the first chunk
    assert.equal(sha(await collect(await slow.open(layer.digest))), layer.digest);
  });

  test('events for image create and delete', async () => {
    const ac = new AbortController();
    const seen: ContainerdEvent[] = [];
    const done = (async () => {
      for await (const e of fast.subscribe([`topic~="/images/",namespace==k8s.io`], ac.signal)) seen.push(e);
    })();
    const copy = `${registry.host}/ctd/app:copy`;
    // The subscription has no "ready" signal: re-tag until an event arrives (create, then updates).
    await waitFor(
      async () => {
        await node.ctr(['images', 'tag', '--force', ref, copy]);
        return seen.some((e) => e.name === copy);
      },
      { what: 'image event', timeoutMs: 10_000, intervalMs: 200 },
    );
    await node.ctr(['images', 'rm', copy]);
    await waitFor(() => seen.some((e) => e.topic === '/images/delete' && e.name === copy), {
      what: 'delete event',
    });
    ac.abort();
    await done; // ends quietly on abort
    const create = seen.find((e) => e.name === copy)!;
    assert.equal(create.namespace, 'k8s.io');
    assert.match(create.type, /^containerd\.services\.images\.v1\.Image(Create|Update)$/);
    assert.equal(
      seen.find((e) => e.topic === '/images/delete')?.type,
      'containerd.services.images.v1.ImageDelete',
    );
  });

  test('criConfig shows config_path and discard_unpacked_layers', async () => {
    const cfg = await fast.criConfig();
    assert.deepEqual(cfg, {
      configPath: node.hostsDir,
      discardUnpackedLayers: false,
      snapshotter: node.snapshotter,
    });
    assert.deepEqual(await checkCriConfig(fast, node.hostsDir), []);
    const warnings = await checkCriConfig(fast, '/etc/containerd/certs.d');
    assert.equal(warnings.length, 1);
    assert.match(warnings[0]!, /config_path/);
  });

  // Last: it restarts the daemon.
  test('watcher re-subscribes after a containerd restart and asks for a re-list', async () => {
    const reasons: ResyncReason[] = [];
    const events: ContainerdEvent[] = [];
    const errors: unknown[] = [];
    const ac = new AbortController();
    const w = createWatcher(fast, {
      signal: ac.signal,
      backoff: { initialMs: 50, maxMs: 500 },
      onEvent: (e) => events.push(e),
      onResync: (r) => reasons.push(r),
      onError: (e) => errors.push(e),
    });
    try {
      await waitFor(() => reasons.includes('start'), { what: 'start resync' });
      assert.ok(w.connected());
      await node.stop();
      await waitFor(() => !w.connected(), { what: 'watcher notices the loss' });
      await node.start();
      await waitFor(() => reasons.includes('reconnect'), { what: 'reconnect resync', timeoutMs: 20_000 });
      assert.ok(errors.length >= 1, 'the broken stream was reported');
      assert.ok(w.connected());
      // Events flow again on the new subscription.
      const again = `${registry.host}/ctd/app:again`;
      await waitFor(
        async () => {
          await node.ctr(['images', 'tag', '--force', ref, again]);
          return events.some((e) => e.name === again);
        },
        { what: 'event after reconnect', intervalMs: 200 },
      );
    } finally {
      w.stop();
      ac.abort();
    }
    assert.equal(w.connected(), false);
  });
});

describe('checkCriConfig on a node with discard_unpacked_layers', () => {
  test('warns', async (t) => {
    const block = allocateBlock();
    t.after(() => block.release());
    const node = await startContainerd({
      name: 'discard',
      host: block.node(1),
      discardUnpackedLayers: true,
      t,
    });
    const cfg = await node.client.criConfig();
    assert.equal(cfg?.discardUnpackedLayers, true);
    const warnings = await checkCriConfig(node.client, node.hostsDir);
    assert.equal(warnings.length, 1);
    assert.match(warnings[0]!, /discard_unpacked_layers/);
  });
});
