import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { describe, it } from 'node:test';
import type { P2PStats } from '@ferry/p2p';
import { createLogger } from '../src/logger.ts';
import {
  createMetrics,
  createRequestObserver,
  type RequestEvent,
  recordTrackerCounts,
  registerP2PMetrics,
} from '../src/metrics.ts';
import { createOpsServer } from '../src/ops.ts';

const base: RequestEvent = {
  method: 'GET',
  registry: 'docker.io',
  repository: 'library/nginx',
  aborted: false,
  attempts: 1,
  kind: 'blobs',
  key: 'sha256:aa',
  mirrored: false,
  outcome: 'peer',
  bytes: 1000,
  status: 200,
  durationMs: 50,
  resolveMs: 4,
};

async function value(m: ReturnType<typeof createMetrics>, name: string, labels: Record<string, string> = {}) {
  const metric = await m.registry.getSingleMetric(name)!.get();
  const hit = metric.values.find((v) =>
    Object.entries(labels).every(([k, val]) => (v.labels as Record<string, unknown>)[k] === val),
  );
  return hit?.value ?? 0;
}

describe('metrics', () => {
  it('maps request events to counters and histograms', async () => {
    const m = createMetrics({ defaultMetrics: false });
    const o = createRequestObserver(m);
    o.onRequest(base);
    o.onRequest({ ...base, outcome: 'local', resolveMs: undefined, bytes: 10, attempts: undefined });
    o.onRequest({ ...base, outcome: 'miss', bytes: 0, status: 404, attempts: 2 });
    o.onRequest({
      ...base,
      outcome: 'filtered',
      kind: 'manifests',
      resolveMs: undefined,
      status: 404,
      attempts: 0,
    });
    o.onRequest({
      ...base,
      outcome: 'invalid',
      kind: undefined,
      registry: undefined,
      key: undefined,
      status: 400,
      attempts: undefined,
      resolveMs: undefined,
    });
    o.onRequest({ ...base, mirrored: true, outcome: 'local', bytes: 500 });
    o.onRequest({ ...base, mirrored: true, outcome: 'miss', bytes: 0, status: 404 });
    o.onPeerFailure({ peer: 'p1', key: 'sha256:aa', reason: 'timeout' });

    assert.equal(
      await value(m, 'ferry_mirror_requests_total', {
        registry: 'docker.io',
        kind: 'blobs',
        outcome: 'peer',
      }),
      1,
    );
    assert.equal(
      await value(m, 'ferry_mirror_requests_total', { kind: 'manifests', outcome: 'filtered' }),
      1,
    );
    assert.equal(await value(m, 'ferry_peer_requests_total', { kind: 'blobs', outcome: 'local' }), 1);
    assert.equal(await value(m, 'ferry_peer_requests_total', { kind: 'blobs', outcome: 'miss' }), 1);
    assert.equal(await value(m, 'ferry_peer_fetched_bytes_total'), 1000);
    assert.equal(await value(m, 'ferry_peer_served_bytes_total'), 500);
    assert.equal(await value(m, 'ferry_peer_fetch_failures_total', { reason: 'timeout' }), 1);
    assert.equal(await value(m, 'ferry_peer_fetch_failures_total', { reason: 'miss' }), 2);
    assert.equal(await value(m, 'ferry_peer_fetch_attempts_total'), 1 + 2);
    assert.equal(
      await value(m, 'ferry_mirror_requests_total', {
        registry: 'invalid',
        kind: 'invalid',
        outcome: 'invalid',
      }),
      1,
    );
    // resolveMs observed for the peer hit and the miss (lookups happened), not for local or filtered.
    const resolve = await m.registry.getSingleMetric('ferry_resolve_duration_seconds')!.get();
    assert.equal(
      resolve.values.find(
        (v) => (v as { metricName?: string }).metricName === 'ferry_resolve_duration_seconds_count',
      )!.value,
      2,
    );
    assert.ok((await value(m, 'ferry_mirror_last_success_timestamp_seconds')) > 0);
  });

  it('counts tag resolutions by mode and outcome, upstream latency and last-known age', async () => {
    const m = createMetrics({ defaultMetrics: false });
    const o = createRequestObserver(m);
    const tagReq = { ...base, kind: 'manifests' as const, key: 'docker.io/library/nginx:1' };
    o.onRequest({
      ...tagReq,
      tag: { mode: 'verify', outcome: 'upstream', upstream: 'resolved', upstreamMs: 20 },
    });
    o.onRequest({
      ...tagReq,
      tag: {
        mode: 'verify',
        outcome: 'last-known',
        upstream: 'unavailable',
        upstreamMs: 1000,
        lastKnownAgeMs: 90_000,
      },
    });
    o.onRequest({ ...tagReq, outcome: 'filtered', tag: { mode: 'upstream', outcome: 'deferred' } });
    o.onRequest({ ...tagReq, outcome: 'local', tag: { mode: 'cluster', outcome: 'cluster' } });
    // Peers' requests are not the node's resolutions.
    o.onRequest({ ...tagReq, mirrored: true, tag: { mode: 'verify', outcome: 'upstream' } });
    assert.equal(await value(m, 'ferry_tag_resolutions_total', { mode: 'verify', outcome: 'upstream' }), 1);
    assert.equal(await value(m, 'ferry_tag_resolutions_total', { mode: 'verify', outcome: 'last-known' }), 1);
    assert.equal(await value(m, 'ferry_tag_resolutions_total', { mode: 'upstream', outcome: 'deferred' }), 1);
    assert.equal(await value(m, 'ferry_tag_resolutions_total', { mode: 'cluster', outcome: 'cluster' }), 1);
    const text = await m.registry.metrics();
    assert.match(text, /ferry_upstream_request_duration_seconds_count\{result="resolved"\} 1/);
    assert.match(text, /ferry_upstream_request_duration_seconds_count\{result="unavailable"\} 1/);
    assert.match(text, /ferry_last_known_age_seconds_sum 90\b/);
    assert.match(text, /ferry_last_known_age_seconds_count 1\b/);
  });

  it('bounds the registry label (client input)', async () => {
    const m = createMetrics({ defaultMetrics: false });
    const o = createRequestObserver(m, { maxRegistries: 2 });
    for (const r of ['a.io', 'b.io', 'c.io', 'd.io', 'a.io'])
      o.onRequest({ ...base, registry: r, outcome: 'miss' });
    o.onRequest({ ...base, registry: 'evil\nstuff', outcome: 'invalid' });
    const metric = await m.registry.getSingleMetric('ferry_mirror_requests_total')!.get();
    const regs = new Set(metric.values.map((v) => v.labels.registry));
    assert.deepEqual([...regs].sort(), ['a.io', 'b.io', 'invalid', 'other']);
    assert.equal(await value(m, 'ferry_mirror_requests_total', { registry: 'other' }), 2);
  });

  it("exposes the peer network's stats at each scrape: gauges as they are, counters following the node's totals", async () => {
    const m = createMetrics({ defaultMetrics: false });
    const stats: P2PStats = {
      members: 29,
      settled: true,
      records: 420,
      keys: 15,
      inboundStreams: {},
      lookups: { local: 10, network: 4, shed: 3 },
      connections: 30,
      introductions: { sent: 2, received: 1, ignored: 0 },
      liveness: {
        pings: 50,
        duplicatesClosed: 1,
        unresponsive: 0,
        stalledProbes: 2,
        suspicions: { told: 0, received: 1, confirmed: 0, cleared: 1, ignored: 0 },
      },
    };
    registerP2PMetrics(m, () => stats);
    assert.equal(await value(m, 'ferry_p2p_members'), 29);
    assert.equal(await value(m, 'ferry_p2p_view_settled'), 1);
    assert.equal(await value(m, 'ferry_p2p_provider_records'), 420);
    assert.equal(
      await value(m, 'ferry_p2p_lookups_total', { answer: 'local' }),
      7,
      'local answers, shed ones apart',
    );
    assert.equal(await value(m, 'ferry_p2p_lookups_total', { answer: 'shed' }), 3);
    assert.equal(await value(m, 'ferry_p2p_liveness_total', { event: 'stalled' }), 2);
    assert.equal(
      await value(m, 'ferry_p2p_liveness_total', { event: 'unresponsive' }),
      0,
      'a zero series exists',
    );
    // The node's totals grow; the counters follow them, scrape after scrape.
    stats.settled = false;
    stats.lookups = { local: 12, network: 9, shed: 3 };
    stats.liveness.unresponsive = 1;
    assert.equal(await value(m, 'ferry_p2p_view_settled'), 0);
    assert.equal(await value(m, 'ferry_p2p_lookups_total', { answer: 'asked' }), 9);
    assert.equal(await value(m, 'ferry_p2p_lookups_total', { answer: 'local' }), 9);
    assert.equal(await value(m, 'ferry_p2p_liveness_total', { event: 'unresponsive' }), 1);
    assert.equal(
      await value(m, 'ferry_p2p_liveness_total', { event: 'unresponsive' }),
      1,
      'a second scrape adds nothing',
    );
    assert.equal(await value(m, 'ferry_p2p_suspicions_total', { event: 'cleared' }), 1);
    assert.match(await m.registry.metrics(), /^# TYPE ferry_p2p_introductions_total counter$/m);
  });

  it('records tracker counts and exposes everything prefixed ferry_ plus default metrics', async () => {
    const m = createMetrics();
    recordTrackerCounts(m, { images: 2, digests: 7, tags: 3 });
    assert.equal(await value(m, 'ferry_advertised_keys', { kind: 'digest' }), 7);
    assert.equal(await value(m, 'ferry_advertised_keys', { kind: 'tag' }), 3);
    const text = await m.registry.metrics();
    assert.match(text, /^process_cpu_user_seconds_total /m);
    const own = [...text.matchAll(/^# TYPE (\S+)/gm)]
      .map((x) => x[1]!)
      .filter((n) => !/^(process|nodejs)_/.test(n));
    assert.ok(own.length >= 12);
    assert.ok(
      own.every((n) => n.startsWith('ferry_')),
      own.join(','),
    );
  });
});

describe('ops server', () => {
  it('serves /metrics, /healthz, /readyz and /status', async (t) => {
    const m = createMetrics({ defaultMetrics: false });
    let reasons: string[] = ['containerd unreachable', 'router has no peers'];
    const app = await createOpsServer({
      registry: m.registry,
      readiness: () => ({ reasons }),
      status: () => ({ images: 1 }),
    });
    t.after(() => app.close());

    const metrics = await app.inject({ url: '/metrics' });
    assert.equal(metrics.statusCode, 200);
    assert.match(metrics.headers['content-type'] as string, /^text\/plain/);
    assert.match(metrics.body, /ferry_advertised_keys\{kind="digest"\} 0/);

    const health = await app.inject({ url: '/healthz' });
    assert.equal(health.statusCode, 200);
    assert.equal(health.json().status, 'ok');

    const notReady = await app.inject({ url: '/readyz' });
    assert.equal(notReady.statusCode, 503);
    assert.deepEqual(notReady.json(), {
      ready: false,
      reasons: ['containerd unreachable', 'router has no peers'],
    });
    reasons = [];
    const ready = await app.inject({ url: '/readyz' });
    assert.equal(ready.statusCode, 200);
    assert.deepEqual(ready.json(), { ready: true, reasons: [] });

    assert.deepEqual((await app.inject({ url: '/status' })).json(), { images: 1 });
    assert.equal((await app.inject({ url: '/nope' })).statusCode, 404);
  });

  it('answers 503 when the readiness check throws or hangs', async (t) => {
    const m = createMetrics({ defaultMetrics: false });
    let mode: 'throw' | 'hang' = 'throw';
    const app = await createOpsServer({
      registry: m.registry,
      readinessTimeoutMs: 20,
      readiness: () => {
        if (mode === 'throw') throw new Error('boom');
        return new Promise(() => {});
      },
    });
    t.after(() => app.close());
    const thrown = await app.inject({ url: '/readyz' });
    assert.equal(thrown.statusCode, 503);
    assert.deepEqual(thrown.json().reasons, ['readiness check failed: boom']);
    mode = 'hang';
    const hung = await app.inject({ url: '/readyz' });
    assert.equal(hung.statusCode, 503);
    assert.match(hung.json().reasons[0], /timed out after 20ms/);
  });
});

describe('logger', () => {
  it('writes JSON lines at the configured level', async () => {
    const lines: string[] = [];
    const dest = new Writable({
      write(chunk, _enc, cb) {
        lines.push(String(chunk));
        cb();
      },
    });
    const log = createLogger({ level: 'warn', base: { node: 'n1' }, destination: dest });
    log.info('hidden');
    log.warn({ key: 'sha256:aa' }, 'shown');
    assert.equal(lines.length, 1);
    const rec = JSON.parse(lines[0]!);
    assert.equal(rec.level, 'warn');
    assert.equal(rec.msg, 'shown');
    assert.equal(rec.node, 'n1');
    assert.equal(rec.name, 'ferry');
    assert.match(rec.time, /^\d{4}-\d\d-\d\dT/);
  });
});
