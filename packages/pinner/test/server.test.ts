import assert from 'node:assert/strict';
import { copyFileSync, renameSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { describe, it } from 'node:test';
import { connect } from 'node:tls';
import { createMemoryLastKnownStore } from '@ferry/resolver';
import { Agent, request } from 'undici';
import { createPinner, createPinnerServer } from '../src/index.ts';
import { D1, fakeUpstream, makeCa, patchOf, pod, review, servedPinner } from './helpers.ts';

const NAME = 'ferry-pinner.ferry.svc';

/** Serial number of the certificate a fresh TLS connection is served. */
function servedSerial(port: number, ca: Buffer): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: '127.0.0.1', port, ca, servername: NAME }, () => {
      const serial = s.getPeerCertificate().serialNumber;
      s.end();
      resolve(serial);
    });
    s.on('error', reject);
  });
}

describe('pinner HTTPS server', () => {
  it('answers /mutate over TLS verified against the CA, /healthz, /metrics, and 400 on bad bodies', async (t) => {
    const ca = makeCa();
    t.after(() => ca.remove());
    const pair = ca.issue('server', [NAME, '127.0.0.1']);
    const pinner = createPinner({
      upstream: fakeUpstream({ 'docker.io/library/a:1': { kind: 'resolved', digest: D1 } }).client,
      store: createMemoryLastKnownStore(),
      clusterUrl: '',
    });
    const server = await createPinnerServer({ pinner, tlsCertFile: pair.cert, tlsKeyFile: pair.key });
    t.after(() => server.close());
    const { port } = await server.listen({ host: '127.0.0.1', port: 0 });
    const dispatcher = new Agent({ connect: { ca: ca.ca(), servername: NAME } });
    t.after(() => dispatcher.close());
    const base = `https://127.0.0.1:${port}`;
    const post = async (body: string) => {
      const res = await request(`${base}/mutate?timeout=5s`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body,
        dispatcher,
      });
      return { status: res.statusCode, json: (await res.body.json()) as Record<string, unknown> };
    };

    const ok = await post(JSON.stringify(review(pod({ containers: [{ name: 'a', image: 'a:1' }] }))));
    assert.equal(ok.status, 200);
    assert.equal(patchOf(ok.json)[0]!.value, `a:1@${D1}`);

    const bad = await post('{"kind": "secret-looking-input');
    assert.equal(bad.status, 400);
    assert.equal(bad.json.error, 'body is not JSON: expected an AdmissionReview');
    const empty = await post('');
    assert.equal(empty.status, 400);
    const noUid = await post(
      JSON.stringify({ apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview', request: {} }),
    );
    assert.equal(noUid.status, 400);
    assert.match(String(noUid.json.error), /request.uid is missing/);

    const health = await request(`${base}/healthz`, { dispatcher });
    assert.deepEqual(await health.body.json(), { status: 'ok' });
    const metrics = await (await request(`${base}/metrics`, { dispatcher })).body.text();
    assert.match(metrics, /ferry_pinner_resolutions_total\{source="upstream"\} 1/);
    assert.match(metrics, /ferry_pinner_admission_duration_seconds_count 2/);

    // A wrong server name fails verification: the certificate's SANs matter.
    const wrong = new Agent({ connect: { ca: ca.ca(), servername: 'other.ferry.svc' } });
    t.after(() => wrong.close());
    await assert.rejects(
      request(`${base}/healthz`, { dispatcher: wrong }),
      /altnames|ERR_TLS_CERT_ALTNAME_INVALID/i,
    );
  });

  it('bounds hostile bodies: 9 MB gets a 413 (not a dropped connection), deep JSON a 400, nothing echoed', async (t) => {
    const { pinner, base, dispatcher, post } = await servedPinner(t);
    // 9 MB, with and without a Content-Length (chunked, as a streaming client sends it).
    const nine = `{"kind":"${'A'.repeat(9 * 1024 * 1024)}"}`;
    const big = await post(nine);
    assert.equal(big.status, 413);
    assert.ok(big.text.length < 200 && !big.text.includes('AAAA'), big.text.slice(0, 100));
    const chunked = await request(`${base}/mutate`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: Readable.from(
        (function* () {
          for (let i = 0; i < nine.length; i += 64 * 1024) yield Buffer.from(nine.slice(i, i + 64 * 1024));
        })(),
      ),
      dispatcher,
    });
    assert.equal(chunked.statusCode, 413);
    assert.ok((await chunked.body.text()).length < 200);

    const deep = await post(`${'['.repeat(100_000)}${']'.repeat(100_000)}`);
    assert.equal(deep.status, 400);
    assert.match(deep.text, /deeper than 64 levels/);
    const deepObject = await post(
      `{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","request":${'{"a":'.repeat(50_000)}1${'}'.repeat(50_001)}`,
    );
    assert.equal(deepObject.status, 400);
    // A bracket inside a string is not nesting.
    const inString = await post(JSON.stringify({ kind: '[[[['.repeat(100) }));
    assert.equal(inString.status, 400);
    assert.equal(JSON.parse(inString.text).error, 'expected kind AdmissionReview');

    // The server still answers afterwards.
    const health = await request(`${base}/healthz`, { dispatcher });
    assert.equal(health.statusCode, 200);
    await health.body.dump();
    const metrics = await pinner.metrics.registry.metrics();
    assert.match(metrics, /ferry_pinner_errors_total\{reason="too-large"\} 2/);
  });

  it('serves a rotated certificate from the next connection, and keeps the old pair while files mismatch', async (t) => {
    const ca = makeCa();
    t.after(() => ca.remove());
    const first = ca.issue('first', [NAME]);
    const second = ca.issue('second', [NAME]);
    const live = { cert: join(ca.dir, 'live.crt'), key: join(ca.dir, 'live.key') };
    copyFileSync(first.cert, live.cert);
    copyFileSync(first.key, live.key);
    const pinner = createPinner({
      upstream: fakeUpstream().client,
      store: createMemoryLastKnownStore(),
      clusterUrl: '',
    });
    const server = await createPinnerServer({ pinner, tlsCertFile: live.cert, tlsKeyFile: live.key });
    t.after(() => server.close());
    const { port } = await server.listen({ host: '127.0.0.1', port: 0 });
    assert.equal(await servedSerial(port, ca.ca()), '01');

    // Half-way through a rotation (new certificate, old key): the old pair stays in use.
    copyFileSync(second.cert, `${live.cert}.tmp`);
    renameSync(`${live.cert}.tmp`, live.cert);
    assert.equal(await servedSerial(port, ca.ca()), '01');
    copyFileSync(second.key, `${live.key}.tmp`);
    renameSync(`${live.key}.tmp`, live.key);
    assert.equal(await servedSerial(port, ca.ca()), '02');
  });

  it('refuses to start with a key that does not match the certificate, naming the files', async (t) => {
    const ca = makeCa();
    t.after(() => ca.remove());
    const a = ca.issue('a', [NAME]);
    const b = ca.issue('b', [NAME]);
    const pinner = createPinner({
      upstream: fakeUpstream().client,
      store: createMemoryLastKnownStore(),
      clusterUrl: '',
    });
    await assert.rejects(
      createPinnerServer({ pinner, tlsCertFile: a.cert, tlsKeyFile: b.key }),
      (err: Error) => {
        assert.match(err.message, /pinner TLS key .*b\.key \/ certificate .*a\.crt/);
        return true;
      },
    );
    await assert.rejects(
      createPinnerServer({ pinner, tlsCertFile: join(ca.dir, 'missing.crt'), tlsKeyFile: b.key }),
      /missing\.crt/,
    );
  });
});
