/**
 * Scenario 11, the pinner's hostile bodies beyond size and depth (server.test.ts): wrong types in every
 * field the pinner reads, and wrong or missing Content-Types. Every answer is a short 4xx or a
 * well-formed AdmissionReview that allows the pod; none quotes the request, none is a 5xx, none denies.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { request } from 'undici';
import { pod, review, servedPinner } from './helpers.ts';

const MARK = 'HOSTILE-MARKER-7f3a';

describe('pinner hostile bodies', () => {
  it('wrong types and wrong Content-Types: a short 4xx or an allowing AdmissionReview, never echoed, never a 5xx', async (t) => {
    const { pinner, base, dispatcher, post } = await servedPinner(t);
    const good = review(pod({ containers: [{ name: 'a', image: 'a:1' }] }));
    const req = good.request;
    const bodies: [string, unknown][] = [
      ['request is a list', { ...good, request: [MARK] }],
      ['request is a string', { ...good, request: MARK }],
      ['uid is a number', { ...good, request: { ...req, uid: 12345 } }],
      ['uid is an object', { ...good, request: { ...req, uid: { x: MARK } } }],
      ['kind is an object', { ...good, kind: { k: MARK } }],
      ['apiVersion is a number', { ...good, apiVersion: 1 }],
      ['object is null', { ...good, request: { ...req, object: null } }],
      ['object is a string', { ...good, request: { ...req, object: MARK } }],
      ['spec is a list', { ...good, request: { ...req, object: { ...pod({}), spec: [MARK] } } }],
      ['containers is a string', { ...good, request: { ...req, object: pod({ containers: MARK }) } }],
      [
        'containers hold numbers',
        { ...good, request: { ...req, object: pod({ containers: [1, null, MARK] }) } },
      ],
      [
        'image is a number',
        { ...good, request: { ...req, object: pod({ containers: [{ name: 'a', image: 7 }] }) } },
      ],
      [
        'image is an object',
        { ...good, request: { ...req, object: pod({ containers: [{ name: MARK, image: { a: MARK } }] }) } },
      ],
      [
        'metadata is a string',
        { ...good, request: { ...req, object: { ...pod({ containers: [] }), metadata: MARK } } },
      ],
      [
        'annotations hold a list',
        { ...good, request: { ...req, object: pod({ containers: [] }, { name: 'p', annotations: [MARK] }) } },
      ],
      ['operation is a number', { ...good, request: { ...req, operation: 5 } }],
      ['dryRun is a string', { ...good, request: { ...req, dryRun: MARK } }],
      ['namespace is an object', { ...good, request: { ...req, namespace: { n: MARK } } }],
      ['a top-level number', 42],
      ['a top-level string', MARK],
      ['null', null],
    ];
    const check = (what: string, r: { status: number; text: string }) => {
      assert.ok(r.status < 500, `${what}: ${r.status} ${r.text.slice(0, 200)}`);
      assert.ok(!r.text.includes(MARK), `${what}: echoed input: ${r.text.slice(0, 200)}`);
      assert.ok(r.text.length < 400, `${what}: long answer`);
      const json = JSON.parse(r.text) as { error?: string; response?: { allowed?: boolean } };
      if (r.status === 200) assert.equal(json.response?.allowed, true, `${what}: a denial`);
      else assert.ok(r.status >= 400 && typeof json.error === 'string', `${what}: ${r.status} ${r.text}`);
    };
    for (const [what, body] of bodies) check(what, await post(JSON.stringify(body), 'application/json'));
    // Wrong or missing Content-Types, with hostile and with valid bodies.
    for (const type of [
      'text/plain',
      'application/x-www-form-urlencoded',
      `multipart/form-data; boundary=${MARK}`,
      'application/json; charset=utf-16',
      MARK,
      undefined,
    ]) {
      check(`content-type ${type}: hostile`, await post(`{"kind":"${MARK}"`, type));
      check(`content-type ${type}: valid review`, await post(JSON.stringify(good), type));
    }
    const health = await request(`${base}/healthz`, { dispatcher });
    assert.equal(health.statusCode, 200);
    await health.body.dump();
    assert.doesNotMatch(await pinner.metrics.registry.metrics(), /reason="internal"\} [1-9]/);
  });
});
