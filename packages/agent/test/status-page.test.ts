import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { RegistryRequestEvent } from '@ferry/registry';
import { createMemoryContentSource, createMemoryRouter, createRegistryServer } from '@ferry/registry';
import Fastify from 'fastify';
import {
  createMeasurer,
  createRequestHistory,
  createStatusSource,
  describePolicy,
  localRegistryUrl,
  MeasureBusyError,
  type Measurer,
  registerStatusRoutes,
  renderStatusBody,
  renderStatusPage,
  type StatusData,
} from '../src/status/index.ts';
import { STATUS_SCRIPT } from '../src/status/render.ts';

const PEER_A = '12D3KooWAbCdEfGhIjKlMnOpQrStUvWxYz1234567890abcdefgh';
const EVIL = '<img src=x onerror="alert(1)">';

function event(over: Partial<RegistryRequestEvent>): RegistryRequestEvent {
  return {
    method: 'GET',
    kind: 'blobs',
    registry: 'docker.io',
    repository: 'library/app',
    key: `sha256:${'a'.repeat(64)}`,
    mirrored: false,
    outcome: 'local',
    bytes: 10,
    status: 200,
    durationMs: 1.5,
    aborted: false,
    ...over,
  };
}

function sample(overrides: Partial<StatusData> = {}): StatusData {
  const history = createRequestHistory({ now: () => Date.parse('2026-01-01T00:00:10Z') });
  history.record(event({ outcome: 'peer', peer: PEER_A, bytes: 3 << 20, repository: `evil/${EVIL}` }));
  history.record(event({ outcome: 'miss', status: 404, bytes: 0 }));
  history.record(event({ mirrored: true, outcome: 'local', bytes: 100 }));
  return {
    generatedAt: '2026-01-01T00:00:10.000Z',
    peerId: '12D3KooWSelfSelfSelfSelfSelfSelfSelfSelfSelfSelf',
    addresses: ['/ip4/127.0.0.1/tcp/5001'],
    ready: true,
    containerd: { connected: true, socket: '/run/containerd/containerd.sock' },
    peers: [{ id: PEER_A, addresses: ['/ip4/127.0.0.2/tcp/5001'] }],
    tracker: {
      keys: { digests: [`sha256:${'b'.repeat(64)}`], tags: [`docker.io/library/app:${EVIL}`] },
      images: [
        {
          digest: `sha256:${'b'.repeat(64)}`,
          mediaType: 'application/vnd.oci.image.manifest.v1+json',
          names: [`docker.io/library/app:${EVIL}`],
          allowed: true,
          present: true,
          digests: 4,
        },
      ],
    },
    recentRequests: history.recent(),
    mirror: history.summary(),
    policy: describePolicy({
      resolveTags: true,
      registryFilters: [':latest$'],
      mirroredRegistries: [],
      tagPolicy: [{ pattern: EVIL, mode: 'upstream' }],
      defaultTagMode: 'verify',
    } as never),
    ...overrides,
  };
}

describe('request history', () => {
  it('keeps the last N, counts the local containerd, and remembers the last peer success', () => {
    let t = 0;
    const h = createRequestHistory({ limit: 2, now: () => (t += 1000) });
    const seen: string[] = [];
    const off = h.subscribe((r) => seen.push(r.outcome));
    h.record(event({ outcome: 'local' }));
    h.record(event({ outcome: 'peer', peer: PEER_A, bytes: 42 }));
    h.record(event({ outcome: 'miss', bytes: 0 }));
    h.record(event({ outcome: 'local', mirrored: true, bytes: 7 }));
    off();
    h.record(event({ outcome: 'filtered' }));
    assert.deepEqual(seen, ['local', 'peer', 'miss', 'local']);
    assert.deepEqual(
      h.recent().map((r) => r.outcome),
      ['local', 'filtered'],
    );
    const s = h.summary();
    assert.deepEqual(s.counts, { local: 1, peer: 1, 'pull-through': 0, miss: 1, filtered: 1, invalid: 0 });
    assert.equal(s.hitRatio, 2 / 3);
    assert.deepEqual(s.served, { requests: 1, bytes: 7 });
    assert.equal(s.bytesFromPeers, 42);
    assert.equal(s.lastSuccess?.peer, PEER_A);
    assert.equal(s.lastSuccess?.at, new Date(2000).toISOString());
    assert.equal(createRequestHistory().summary().hitRatio, null);

    // A listener that claims a request for a measurement keeps it out of the counts.
    const m = createRequestHistory();
    m.subscribe((r) => {
      r.by = 'measure';
    });
    m.record(event({ outcome: 'peer', peer: PEER_A }));
    assert.equal(m.summary().hitRatio, null);
    assert.equal(m.recent()[0]?.by, 'measure');
  });
});

describe('describePolicy', () => {
  it('takes the core settings and any other tag policy keys', () => {
    const p = describePolicy({
      resolveTags: false,
      registryFilters: ['x'],
      mirroredRegistries: ['https://ghcr.io'],
      tagPolicy: [{ pattern: 'a', mode: 'upstream' }],
      defaultTagMode: 'verify',
      logLevel: 'info',
    } as never);
    assert.deepEqual(p, {
      resolveTags: false,
      registryFilters: ['x'],
      mirroredRegistries: ['https://ghcr.io'],
      rules: { tagPolicy: [{ pattern: 'a', mode: 'upstream' }], defaultTagMode: 'verify' },
    });
  });
});

describe('status page rendering', () => {
  it('shows peers, images, sources, hit ratio and policy, with everything escaped', () => {
    const html = renderStatusBody(sample(), Date.parse('2026-01-01T00:00:15Z'));
    assert.ok(!html.includes('<img'), 'no markup from data');
    assert.ok(html.includes('&lt;img src=x onerror=&quot;alert(1)&quot;&gt;'));
    assert.ok(html.includes(PEER_A), 'the peer table shows the full peer id');
    assert.match(html, /peer <span class="peer" title="12D3KooWAbCd[^"]+">12D3…abcdefgh<\/span>/);
    assert.match(html, /miss → upstream/);
    assert.match(html, /Hit ratio<\/div><div class="value">50%/);
    assert.match(html, /5 s ago/);
    assert.match(html, /<code>:latest\$<\/code>/);
    assert.match(html, /tagPolicy<\/dt><dd><code>&lt;img[^<]*<\/code> → upstream/);
    assert.match(html, /defaultTagMode<\/dt><dd>verify/);
    assert.match(html, /pinner not enabled/);
    assert.match(html, /href="\/debug\/measure\?image=docker.io%2Flibrary%2Fapp%3A%3Cimg/);
  });

  it('shows the pinner when it is enabled', () => {
    const html = renderStatusBody(
      sample({
        pinner: {
          recent: [
            {
              registry: 'docker.io',
              repository: 'library/nginx',
              tag: '1.27',
              digest: `sha256:${'c'.repeat(64)}`,
              resolvedAt: Date.parse('2026-01-01T00:00:00Z'),
              source: 'upstream',
            },
          ],
        },
      }),
      Date.parse('2026-01-01T00:00:15Z'),
    );
    assert.doesNotMatch(html, /pinner not enabled/);
    assert.match(html, /docker.io\/library\/nginx:1.27/);
    assert.match(html, /upstream/);
  });

  it('renders on the server only: the static script swaps in /status/body', async () => {
    const data = sample();
    const page = renderStatusPage(data, { nonce: 'n0nce', refreshMs: 2000, nowMs: 1e12 });
    const script = /<script nonce="n0nce">([\s\S]*)<\/script>/.exec(page)?.[1];
    assert.ok(script);
    assert.ok(script.startsWith(STATUS_SCRIPT), 'the script is the static text plus the interval');
    assert.doesNotMatch(script, /renderStatusBody|fmtBytes/);
    let tick: (() => Promise<void>) | undefined;
    let interval = 0;
    const main = { innerHTML: '', querySelectorAll: () => [] };
    const note = { textContent: '', className: '' };
    const fetched: string[] = [];
    const doc = { getElementById: (id: string) => (id === 'main' ? main : id === 'refreshed' ? note : null) };
    new Function('document', 'setInterval', 'fetch', script)(
      doc,
      (fn: () => Promise<void>, ms: number) => {
        tick = fn;
        interval = ms;
      },
      async (url: string) => {
        fetched.push(url);
        return { ok: true, text: async () => '<p>fresh</p>' };
      },
    );
    assert.equal(interval, 2000);
    await tick?.();
    assert.deepEqual(fetched, ['/status/body']);
    assert.equal(main.innerHTML, '<p>fresh</p>');
    assert.equal(note.className, 'dim');
    assert.ok(page.includes(`<main id="main">${renderStatusBody(data, 1e12)}</main>`));
  });
});

describe('status routes', () => {
  async function server(measurer?: Measurer) {
    const app = Fastify();
    const history = createRequestHistory();
    history.record(event({ outcome: 'peer', peer: PEER_A }));
    const status = createStatusSource({
      router: {
        peerId: 'self',
        addresses: ['/ip4/127.0.0.1/tcp/1'],
        peers: () => [{ id: PEER_A, addresses: [] }],
        ready: () => true,
      },
      tracker: { snapshot: () => ({ keys: { digests: [], tags: [] }, images: [] }) },
      history,
      policy: describePolicy({ resolveTags: true, registryFilters: [], mirroredRegistries: [] }),
      containerd: () => ({ connected: true, socket: '/x.sock' }),
    });
    await registerStatusRoutes(app, { status, ...(measurer ? { measurer } : {}) });
    return app;
  }

  it('serves the page with a nonce CSP, and the JSON', async (t) => {
    const app = await server();
    t.after(() => app.close());
    const page = await app.inject({ url: '/' });
    assert.equal(page.statusCode, 200);
    assert.match(String(page.headers['content-type']), /text\/html/);
    const nonce = /script-src 'nonce-([^']+)'/.exec(String(page.headers['content-security-policy']))?.[1];
    assert.ok(nonce);
    assert.ok(page.body.includes(`<script nonce="${nonce}">`));
    const json = (await app.inject({ url: '/status' })).json() as StatusData;
    assert.equal(json.peerId, 'self');
    assert.equal(json.recentRequests[0]?.peer, PEER_A);
    assert.equal(json.mirror.hitRatio, 1);
    assert.equal(json.pinner, undefined);
    // Image names, private tags and digests: never to a client off the node's loopback.
    for (const url of ['/', '/status', '/status/body', '/debug/measure?image=a/b:c']) {
      const remote = await app.inject({ url, remoteAddress: '10.0.0.5' });
      assert.equal(remote.statusCode, 403, url);
      assert.ok(!remote.body.includes('peerId') && !remote.body.includes(PEER_A), url);
    }
    assert.equal((await app.inject({ url: '/status', remoteAddress: '::ffff:127.0.0.9' })).statusCode, 200);
    assert.equal((await app.inject({ url: '/status', remoteAddress: '::1' })).statusCode, 200);
    const body = await app.inject({ url: '/status/body' });
    assert.equal(body.statusCode, 200);
    assert.match(String(body.headers['content-type']), /text\/html/);
    assert.match(body.body, /^<div class="cards" id="summary">/);
    assert.ok(body.body.includes(PEER_A.slice(-8)));
  });

  it('answers 400 to a bad or missing reference, 429 while busy, 404 without a measurer', async (t) => {
    let release: (() => void) | undefined;
    let running = false;
    const measurer: Measurer = {
      busy: () => running,
      async measure(image) {
        if (!/^[a-z]/.test(image))
          throw new (await import('@ferry/oci')).OciError('NAME_INVALID', 'bad', 400);
        if (running) throw new MeasureBusyError();
        running = true;
        await new Promise<void>((r) => {
          release = r;
        });
        running = false;
        return {
          image,
          reference: { registry: 'docker.io', repository: 'library/x', tag: 'v1' },
          startedAt: new Date().toISOString(),
          totalMs: 1,
          rows: [],
          totals: { bytes: 0, fromPeers: 0, local: 0, misses: 0 },
        };
      },
    };
    const app = await server(measurer);
    t.after(() => app.close());
    const bad = await app.inject({ url: '/debug/measure?image=UPPER/Case' });
    assert.equal(bad.statusCode, 400);
    assert.match(bad.body, /bad/);
    const first = app.inject({ url: '/debug/measure?image=x', headers: { accept: 'application/json' } });
    while (!running) await new Promise((r) => setImmediate(r));
    const busy = await app.inject({ url: '/debug/measure?image=x', headers: { accept: 'application/json' } });
    assert.equal(busy.statusCode, 429);
    assert.equal(busy.headers['retry-after'], '5');
    assert.match(busy.json().error, /already running/);
    release?.();
    assert.equal((await first).statusCode, 200);

    const none = await server();
    t.after(() => none.close());
    assert.equal((await none.inject({ url: '/debug/measure?image=x' })).statusCode, 404);
  });
});

describe('measurer', () => {
  async function registry() {
    const source = createMemoryContentSource({ chunkSize: 1024 });
    const router = createMemoryRouter();
    const history = createRequestHistory();
    const app = await createRegistryServer({
      source,
      router,
      observer: { onRequest: (e) => history.record(e) },
    });
    await app.listen({ host: '127.0.0.1', port: 0 });
    const port = (app.server.address() as { port: number }).port;
    const config = source.add(
      '{"architecture":"amd64","os":"linux"}',
      'application/vnd.oci.image.config.v1+json',
    );
    const layer = source.add(new Uint8Array(50_000).fill(7), 'application/vnd.oci.image.layer.v1.tar+gzip');
    const manifest = source.add(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: 'application/vnd.oci.image.manifest.v1+json',
        config: {
          mediaType: 'application/vnd.oci.image.config.v1+json',
          digest: config.digest,
          size: config.size,
        },
        layers: [
          {
            mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip',
            digest: layer.digest,
            size: layer.size,
          },
        ],
      }),
      'application/vnd.oci.image.manifest.v1+json',
    );
    source.tag('reg.example', 'team/app', 'v1', manifest.digest);
    return {
      app,
      router,
      history,
      url: localRegistryUrl({ host: '127.0.0.1', port }),
      manifest,
      config,
      layer,
    };
  }

  it('times a lookup and a local pull of every digest of the image', async (t) => {
    const r = await registry();
    t.after(() => r.app.close());
    r.router.add(r.layer.digest, { id: PEER_A, host: '127.0.0.1', port: 1 });
    const m = createMeasurer({
      router: r.router,
      history: r.history,
      registryUrl: r.url,
      lookupTimeoutMs: 200,
    });
    const res = await m.measure('reg.example/team/app:v1');
    assert.deepEqual(
      res.rows.map((row) => [row.role, row.key, row.pull?.source, row.pull?.status]),
      [
        ['tag', 'reg.example/team/app:v1', 'local', 200],
        ['manifest', r.manifest.digest, 'local', 200],
        ['config', r.config.digest, 'local', 200],
        ['layer', r.layer.digest, 'local', 200],
      ],
    );
    assert.equal(res.rows[3]?.pull?.bytes, 50_000);
    assert.equal(res.rows[3]?.lookup.found, true);
    assert.equal(res.rows[3]?.lookup.peer, PEER_A);
    assert.equal(res.rows[2]?.lookup.found, false);
    assert.equal(res.totals.local, res.totals.bytes);
    assert.ok(r.history.recent().every((req) => req.by === 'measure'));
    assert.equal(r.history.summary().counts.local, 0);
    assert.equal(m.busy(), false);
  });

  it('reports a miss, stops at the byte budget, and rejects bad references', async (t) => {
    const r = await registry();
    t.after(() => r.app.close());
    const m = createMeasurer({
      router: r.router,
      history: r.history,
      registryUrl: r.url,
      lookupTimeoutMs: 50,
      maxBytes: 2000,
    });
    const miss = await m.measure('reg.example/team/other:v1');
    assert.equal(miss.rows.length, 1);
    assert.equal(miss.rows[0]?.pull?.status, 404);
    assert.equal(miss.rows[0]?.pull?.source, 'miss');

    const capped = await m.measure(`reg.example/team/app@${r.manifest.digest}`);
    const layer = capped.rows.find((row) => row.role === 'layer');
    assert.match(layer?.pull?.error ?? '', /stopped after \d+ bytes \(limit\)/, JSON.stringify(layer));
    assert.ok(capped.totals.bytes < r.layer.size + 2000, 'the reader stops instead of draining');

    await assert.rejects(m.measure(''), /missing \?image=REF/);
    await assert.rejects(m.measure('Bad Ref!'), /invalid image reference/);
  });
});
