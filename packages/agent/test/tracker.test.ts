import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, it } from 'node:test';
import type { Descriptor } from '@ferry/oci';
import { createRefPolicy } from '@ferry/registry';
import { type Advertiser, createTracker, type ImageRecord, type ImageStore } from '../src/tracker.ts';

const MT = {
  index: 'application/vnd.oci.image.index.v1+json',
  manifest: 'application/vnd.oci.image.manifest.v1+json',
  config: 'application/vnd.oci.image.config.v1+json',
  layer: 'application/vnd.oci.image.layer.v1.tar+gzip',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerLayer: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
};

/** An in-memory content store with helpers to build images. */
function fakeStore() {
  const blobs = new Map<string, Uint8Array>();
  const images: ImageRecord[] = [];
  let reads = 0;
  let lists = 0;
  const put = (bytes: Uint8Array | string, mediaType: string): Descriptor => {
    const b = typeof bytes === 'string' ? new TextEncoder().encode(bytes) : bytes;
    const digest = `sha256:${createHash('sha256').update(b).digest('hex')}`;
    blobs.set(digest, b);
    return { mediaType, digest, size: b.length };
  };
  const store: ImageStore & { gate?: Promise<void> } = {
    async listImages() {
      lists++;
      if (store.gate) await store.gate;
      return images.map((i) => ({ ...i }));
    },
    async listContent() {
      return [...blobs].map(([digest, b]) => ({ digest, size: b.length }));
    },
    async readManifest(digest) {
      reads++;
      const b = blobs.get(digest);
      if (!b) throw new Error(`not found: ${digest}`);
      return b;
    },
  };
  return {
    store,
    blobs,
    images,
    put,
    stats: () => ({ reads, lists }),
    layer: (seed: string) => put(`layer ${seed}`, MT.layer),
    manifest(
      layers: Descriptor[],
      seed = 'cfg',
      mediaType = MT.manifest,
    ): { manifest: Descriptor; config: Descriptor } {
      const config = put(`{"config":"${seed}"}`, MT.config);
      const manifest = put(JSON.stringify({ schemaVersion: 2, mediaType, config, layers }), mediaType);
      return { manifest, config };
    },
    /** The three records CRI creates for a pulled image. */
    tagCri(name: string, tag: string, target: Descriptor, config?: Descriptor) {
      images.push({ name: `${name}:${tag}`, target });
      images.push({ name: `${name}@${target.digest}`, target });
      if (config) images.push({ name: config.digest, target });
    },
    remove(name: string) {
      for (let i = images.length - 1; i >= 0; i--) if (images[i]!.name.startsWith(name)) images.splice(i, 1);
    },
  };
}

function fakeAdvertiser() {
  const live = new Set<string>();
  const calls: { op: 'advertise' | 'withdraw'; keys: string[] }[] = [];
  let failNext = false;
  const adv: Advertiser & { failNext(): void } = {
    async advertise(keys) {
      calls.push({ op: 'advertise', keys });
      if (failNext) {
        failNext = false;
        throw new Error('dht down');
      }
      for (const k of keys) live.add(k);
    },
    async withdraw(keys) {
      calls.push({ op: 'withdraw', keys });
      for (const k of keys) live.delete(k);
    },
    failNext() {
      failNext = true;
    },
  };
  return { adv, live, calls };
}

describe('tracker reconcile', () => {
  it('advertises present digests and tag keys, once per image (CRI records deduped)', async () => {
    const f = fakeStore();
    const l1 = f.layer('1');
    const l2 = f.layer('2');
    const { manifest, config } = f.manifest([l1, l2]);
    f.tagCri('docker.io/library/nginx', '1.27', manifest, config);
    const a = fakeAdvertiser();
    const t = createTracker({ store: f.store, advertiser: a.adv });
    const r = await t.reconcile();
    const expected = [
      manifest.digest,
      config.digest,
      l1.digest,
      l2.digest,
      'docker.io/library/nginx:1.27',
    ].sort();
    assert.deepEqual(r.advertised, expected);
    assert.deepEqual([...a.live].sort(), expected);
    assert.deepEqual(r.counts, { images: 1, digests: 4, tags: 1 });
    assert.equal(t.mediaTypeOf(manifest.digest), MT.manifest);
    assert.equal(t.mediaTypeOf(config.digest), MT.config);
    assert.equal(t.mediaTypeOf(l1.digest), MT.layer);
    assert.equal(t.mediaTypeOf('sha256:nope'), undefined);
    const snap = t.snapshot();
    assert.deepEqual(snap.keys.tags, ['docker.io/library/nginx:1.27']);
    assert.equal(snap.images.length, 1);
    assert.deepEqual(snap.images[0]!.names, [
      `docker.io/library/nginx:1.27`,
      `docker.io/library/nginx@${manifest.digest}`,
    ]);
    assert.equal(snap.images[0]!.digests, 4);

    // Unchanged store: nothing to do, and parsed manifests are cached.
    const reads = f.stats().reads;
    const again = await t.reconcile();
    assert.deepEqual([again.advertised, again.withdrawn], [[], []]);
    assert.equal(f.stats().reads, reads);
  });

  it('keeps a shared layer while any image references it; deletion withdraws only what is gone', async () => {
    const f = fakeStore();
    const shared = f.layer('base');
    const onlyA = f.layer('a');
    const onlyB = f.layer('b');
    const a = f.manifest([shared, onlyA], 'a');
    const b = f.manifest([shared, onlyB], 'b');
    f.tagCri('docker.io/library/a', 'v1', a.manifest, a.config);
    f.tagCri('ghcr.io/org/b', 'v1', b.manifest, b.config);
    const ad = fakeAdvertiser();
    const t = createTracker({ store: f.store, advertiser: ad.adv });
    await t.reconcile();
    assert.ok(ad.live.has(shared.digest));

    // Image a is deleted: its own digests and its tag go; the shared layer stays (b references it).
    f.remove('docker.io/library/a');
    let r = await t.reconcile();
    assert.deepEqual(
      r.withdrawn,
      ['docker.io/library/a:v1', a.manifest.digest, a.config.digest, onlyA.digest].sort(),
    );
    // GC then removes a's blobs: nothing more to withdraw.
    for (const d of [a.manifest, a.config, onlyA]) f.blobs.delete(d.digest);
    r = await t.reconcile();
    assert.deepEqual([r.advertised, r.withdrawn], [[], []]);
    // A layer that GC removes while b still names it (e.g. discard_unpacked_layers) is withdrawn too.
    f.blobs.delete(onlyB.digest);
    r = await t.reconcile();
    assert.deepEqual(r.withdrawn, [onlyB.digest]);
    assert.ok(ad.live.has(shared.digest));
    assert.ok(ad.live.has(b.manifest.digest));
    assert.ok(ad.live.has('ghcr.io/org/b:v1'));
    assert.equal(t.mediaTypeOf(onlyA.digest), undefined);
  });

  it('multi-arch: only the platform present on the node is advertised', async () => {
    const f = fakeStore();
    const amdLayer = f.layer('amd64');
    const amd = f.manifest([amdLayer], 'amd64');
    // The arm64 manifest and its blobs are described but not in the store.
    const armLayer: Descriptor = { mediaType: MT.layer, digest: `sha256:${'a'.repeat(64)}`, size: 10 };
    const armManifest: Descriptor = { mediaType: MT.manifest, digest: `sha256:${'b'.repeat(64)}`, size: 300 };
    const index = f.put(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MT.index,
        manifests: [
          { ...amd.manifest, platform: { os: 'linux', architecture: 'amd64' } },
          { ...armManifest, platform: { os: 'linux', architecture: 'arm64' } },
        ],
      }),
      MT.index,
    );
    f.tagCri('quay.io/x/multi', '2', index, amd.config);
    const ad = fakeAdvertiser();
    const t = createTracker({ store: f.store, advertiser: ad.adv });
    await t.reconcile();
    assert.deepEqual(
      [...ad.live].sort(),
      [index.digest, amd.manifest.digest, amd.config.digest, amdLayer.digest, 'quay.io/x/multi:2'].sort(),
    );
    assert.ok(!ad.live.has(armManifest.digest) && !ad.live.has(armLayer.digest));
    assert.equal(t.mediaTypeOf(index.digest), MT.index);
  });

  it('applies the policy: filtered tags, filtered images, resolveTags=false', async () => {
    const f = fakeStore();
    const l1 = f.layer('1');
    const l2 = f.layer('2');
    const img1 = f.manifest([l1], '1');
    const img2 = f.manifest([l2], '2', MT.dockerManifest);
    f.tagCri('docker.io/library/app', 'latest', img1.manifest, img1.config);
    f.tagCri('private.example:5000/team/secret', 'v1', img2.manifest, img2.config);

    const run = async (policy: ReturnType<typeof createRefPolicy>) => {
      const ad = fakeAdvertiser();
      await createTracker({ store: f.store, advertiser: ad.adv, policy }).reconcile();
      return ad.live;
    };
    // ':latest$' filters the tag only; '^private' filters the whole image (all its names).
    let live = await run(createRefPolicy({ registryFilters: [':latest$', '^private\\.example'] }));
    assert.ok(live.has(img1.manifest.digest) && live.has(l1.digest));
    assert.ok(!live.has('docker.io/library/app:latest'));
    assert.ok(![...live].some((k) => k === img2.manifest.digest || k === l2.digest || k.includes('secret')));
    // resolveTags=false: digests only.
    live = await run(createRefPolicy({ resolveTags: false }));
    assert.equal([...live].filter((k) => !k.startsWith('sha256:')).length, 0);
    assert.equal(live.size, 6);
    // mirroredRegistries limits to docker.io.
    live = await run(createRefPolicy({ mirroredRegistries: ['docker.io'] }));
    assert.ok(live.has('docker.io/library/app:latest'));
    assert.ok(!live.has(l2.digest));
  });

  it('an image shared by an allowed and a filtered name is advertised by digest', async () => {
    const f = fakeStore();
    const l = f.layer('x');
    const m = f.manifest([l]);
    f.images.push({ name: 'private.example/a:v1', target: m.manifest });
    f.images.push({ name: 'docker.io/library/a:v1', target: m.manifest });
    const ad = fakeAdvertiser();
    await createTracker({
      store: f.store,
      advertiser: ad.adv,
      policy: createRefPolicy({ registryFilters: ['^private'] }),
    }).reconcile();
    assert.ok(ad.live.has(l.digest));
    assert.ok(ad.live.has('docker.io/library/a:v1'));
    assert.ok(!ad.live.has('private.example/a:v1'));
  });

  it('ignores names that are not references, targets that are absent, and broken manifests', async () => {
    const f = fakeStore();
    const l = f.layer('1');
    const good = f.manifest([l]);
    f.images.push({ name: 'not a//ref', target: good.manifest });
    f.images.push({ name: 'docker.io/library/untagged', target: good.manifest }); // no explicit tag
    const absent: Descriptor = { mediaType: MT.manifest, digest: `sha256:${'c'.repeat(64)}`, size: 10 };
    f.images.push({ name: 'docker.io/library/gone:1', target: absent });
    const broken = f.put('{"not":"a manifest"}', MT.manifest);
    f.images.push({ name: 'docker.io/library/broken:1', target: broken });
    const ad = fakeAdvertiser();
    const t = createTracker({ store: f.store, advertiser: ad.adv });
    await t.reconcile();
    assert.deepEqual(
      [...ad.live].sort(),
      [
        good.manifest.digest,
        good.config.digest,
        l.digest,
        broken.digest,
        'docker.io/library/broken:1',
      ].sort(),
    );
    assert.equal(t.snapshot().images.find((i) => i.digest === absent.digest)?.present, false);
  });

  it('retries keys whose advertise failed on the next reconcile', async () => {
    const f = fakeStore();
    const m = f.manifest([f.layer('1')]);
    f.tagCri('docker.io/library/a', '1', m.manifest, m.config);
    const ad = fakeAdvertiser();
    const t = createTracker({ store: f.store, advertiser: ad.adv });
    ad.adv.failNext();
    const r1 = await t.reconcile();
    assert.deepEqual(r1.advertised, []);
    assert.equal(t.counts().digests, 0);
    const r2 = await t.reconcile();
    assert.equal(r2.advertised.length, 4);
    assert.equal(ad.live.size, 4);
  });
});

describe('tracker scheduling', () => {
  it('debounces a burst of events into one reconcile', async (t) => {
    const f = fakeStore();
    const m = f.manifest([f.layer('1')]);
    f.tagCri('docker.io/library/a', '1', m.manifest, m.config);
    const ad = fakeAdvertiser();
    const tr = createTracker({ store: f.store, advertiser: ad.adv, debounceMs: 5 });
    t.after(() => tr.stop());
    for (let i = 0; i < 100; i++) tr.schedule(`/images/create ${i}`);
    await tr.idle();
    assert.equal(f.stats().lists, 1);
    assert.equal(ad.live.size, 4);
  });

  it('never overlaps reconciles; events during a run cause exactly one more', async (t) => {
    const f = fakeStore();
    const m = f.manifest([f.layer('1')]);
    f.tagCri('docker.io/library/a', '1', m.manifest, m.config);
    let release!: () => void;
    f.store.gate = new Promise((r) => {
      release = r;
    });
    let active = 0;
    let maxActive = 0;
    const store: ImageStore = {
      ...f.store,
      listImages: async () => {
        active++;
        maxActive = Math.max(maxActive, active);
        try {
          return await f.store.listImages();
        } finally {
          active--;
        }
      },
      listContent: () => f.store.listContent(),
      readManifest: (d) => f.store.readManifest(d),
    };
    const ad = fakeAdvertiser();
    const tr = createTracker({ store, advertiser: ad.adv, debounceMs: 1 });
    t.after(() => tr.stop());
    const first = tr.reconcile();
    // While the first run is blocked: more events and direct calls.
    const second = tr.reconcile();
    const third = tr.reconcile();
    for (let i = 0; i < 10; i++) tr.schedule('event');
    const deadline = Date.now() + 5000;
    while (f.stats().lists < 1 && Date.now() < deadline) await new Promise((r) => setImmediate(r));
    release();
    await Promise.all([first, second, third]);
    await tr.idle();
    assert.equal(maxActive, 1);
    assert.ok(f.stats().lists >= 2 && f.stats().lists <= 3, `lists=${f.stats().lists}`);
    assert.equal(second, third, 'concurrent callers share the next run');
  });

  it('logs instead of throwing when a scheduled reconcile fails, and records the error', async (t) => {
    const ad = fakeAdvertiser();
    const errors: unknown[] = [];
    const log = { debug() {}, info() {}, warn() {}, error: (o: unknown) => errors.push(o) };
    const tr = createTracker({
      store: {
        listImages: async () => {
          throw new Error('containerd unavailable');
        },
        listContent: async () => [],
        readManifest: async () => new Uint8Array(),
      },
      advertiser: ad.adv,
      debounceMs: 1,
      logger: log as never,
    });
    t.after(() => tr.stop());
    tr.schedule('start');
    await tr.idle();
    assert.equal(errors.length, 1);
    assert.equal(tr.snapshot().lastReconcile?.error, 'containerd unavailable');
  });
});
