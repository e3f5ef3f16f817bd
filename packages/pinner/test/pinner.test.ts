import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createMemoryLastKnownStore } from '@ferry/resolver';
import {
  applyPatch,
  buildPatch,
  changedImageSites,
  collectImageSites,
  createPinner,
  createScope,
  escapePointerToken,
  PINNED_ANNOTATION,
  pinnableRef,
  pinnedImage,
  pointer,
} from '../src/index.ts';
import { D1, D2, D3, fakeUpstream, patchOf, pod, review } from './helpers.ts';

const resolved = (digest: string) => ({ kind: 'resolved' as const, digest });

function pinnerWith(
  answers: Parameters<typeof fakeUpstream>[0],
  extra: Partial<Parameters<typeof createPinner>[0]> = {},
) {
  const up = fakeUpstream(answers);
  const store = createMemoryLastKnownStore();
  const pinner = createPinner({ upstream: up.client, store, clusterUrl: '', namespace: 'ferry', ...extra });
  return { pinner, store, up };
}

describe('JSON pointers and patches', () => {
  it('escapes ~ before / (RFC 6901)', () => {
    assert.equal(escapePointerToken('ferry.dev/pinned'), 'ferry.dev~1pinned');
    assert.equal(escapePointerToken('a~/b'), 'a~0~1b');
    assert.equal(pointer(['metadata', 'annotations', 'x/y~z']), '/metadata/annotations/x~1y~0z');
  });

  it('creates /metadata/annotations when absent, then the annotation applies', () => {
    const obj = { metadata: { name: 'p' }, spec: { containers: [{ name: 'a', image: 'x' }] } };
    const ops = buildPatch({
      replacements: [{ path: ['spec', 'containers', '0', 'image'], value: `x:latest@${D1}` }],
      annotations: { 'ferry.dev/pinned': '{}' },
      metadata: obj.metadata,
    });
    assert.deepEqual(ops, [
      { op: 'replace', path: '/spec/containers/0/image', value: `x:latest@${D1}` },
      { op: 'add', path: '/metadata/annotations', value: { 'ferry.dev/pinned': '{}' } },
    ]);
    const out = applyPatch(obj, ops);
    assert.equal(out.spec.containers[0]!.image, `x:latest@${D1}`);
    assert.equal(
      (out.metadata as unknown as { annotations: Record<string, string> }).annotations['ferry.dev/pinned'],
      '{}',
    );
    assert.equal(obj.spec.containers[0]!.image, 'x', 'the input is not modified');
  });

  it('adds to an existing annotations map with an escaped key, and creates /metadata when absent', () => {
    const ops = buildPatch({
      replacements: [],
      annotations: { 'a/b': 'v' },
      metadata: { annotations: { k: 'v' } },
    });
    assert.deepEqual(ops, [{ op: 'add', path: '/metadata/annotations/a~1b', value: 'v' }]);
    const none = buildPatch({ replacements: [], annotations: { k: 'v' }, metadata: undefined });
    assert.deepEqual(none, [{ op: 'add', path: '/metadata', value: { annotations: { k: 'v' } } }]);
  });
});

describe('references', () => {
  it('keeps the spelling and the tag, makes latest explicit', () => {
    assert.equal(pinnedImage('nginx:1.27', D1), `nginx:1.27@${D1}`);
    assert.equal(pinnedImage('nginx', D1), `nginx:latest@${D1}`);
    assert.equal(pinnedImage('localhost:5000/a/b:c', D1), `localhost:5000/a/b:c@${D1}`);
    assert.equal(pinnedImage('localhost:5000/a/b', D1), `localhost:5000/a/b:latest@${D1}`);
  });

  it('normalises keys with docker.io defaults and refuses digests and invalid refs', () => {
    const r = pinnableRef('nginx');
    assert.ok(!('reason' in r));
    assert.equal(r.key, 'docker.io/library/nginx:latest');
    const l = pinnableRef('localhost:5000/a/b:c');
    assert.ok(!('reason' in l));
    assert.deepEqual(l.ref, { registry: 'localhost:5000', repository: 'a/b', tag: 'c' });
    assert.deepEqual(pinnableRef(`nginx:1@${D1}`), { reason: 'digest' });
    assert.deepEqual(pinnableRef(`nginx@${D1}`), { reason: 'digest' });
    const bad = pinnableRef('Bad Ref');
    assert.ok('reason' in bad && bad.reason === 'invalid');
  });

  it('collects containers, init, ephemeral containers and image volumes; UPDATE only changed ones', () => {
    const spec = {
      initContainers: [{ name: 'init', image: 'i:1' }],
      containers: [{ name: 'a', image: 'a:1' }, { name: 'noimage' }, 'junk'],
      ephemeralContainers: [{ name: 'dbg', image: 'busybox' }],
      volumes: [
        { name: 'v', image: { reference: 'data:1' } },
        { name: 'e', emptyDir: {} },
      ],
    };
    const sites = collectImageSites(pod(spec));
    assert.deepEqual(
      sites.map((s) => [s.path.join('/'), s.image]),
      [
        ['spec/initContainers/0/image', 'i:1'],
        ['spec/containers/0/image', 'a:1'],
        ['spec/ephemeralContainers/0/image', 'busybox'],
        ['spec/volumes/0/image/reference', 'data:1'],
      ],
    );
    const newer = pod({ ...spec, containers: [{ name: 'a', image: 'a:2' }], ephemeralContainers: [] });
    assert.deepEqual(
      changedImageSites(newer, pod(spec)).map((s) => s.image),
      ['a:2'],
    );
    assert.deepEqual(collectImageSites({ spec: 'x' }), []);
    assert.deepEqual(collectImageSites(null), []);
  });
});

describe('scope', () => {
  it('exclude wins over include; include empty means all', () => {
    const s = createScope({ include: ['^docker\\.io/'], exclude: [':latest$'] });
    assert.equal(s.includes('docker.io/library/nginx:1'), true);
    assert.equal(s.includes('docker.io/library/nginx:latest'), false);
    assert.equal(s.includes('ghcr.io/a/b:1'), false);
    assert.equal(createScope().includes('ghcr.io/a/b:1'), true);
    assert.throws(() => createScope({ include: ['('] }), /invalid include pattern "\("/);
  });

  it('skips the own namespace and opted-out pods', () => {
    const s = createScope({ namespace: 'ferry' });
    assert.equal(s.skipPod('ferry', undefined), 'own-namespace');
    assert.equal(s.skipPod('apps', { 'ferry.dev/pin': 'false' }), 'opted-out');
    assert.equal(s.skipPod('apps', { 'ferry.dev/pin': 'true' }), undefined);
    assert.equal(s.skipPod('apps', undefined), undefined);
  });
});

describe('review', () => {
  it('pins every image to the upstream digest, with the annotation, echoing apiVersion and uid', async () => {
    const { pinner, store } = pinnerWith({
      'docker.io/library/nginx:1.27': resolved(D1),
      'localhost:5000/a/b:c': resolved(D2),
      'docker.io/library/busybox:latest': resolved(D3),
    });
    const p = pod(
      {
        initContainers: [{ name: 'init', image: 'localhost:5000/a/b:c' }],
        containers: [
          { name: 'web', image: 'nginx:1.27' },
          { name: 'side', image: 'docker.io/library/nginx:1.27' },
          { name: 'done', image: `nginx:1.27@${D3}` },
        ],
        ephemeralContainers: [{ name: 'dbg', image: 'busybox' }],
      },
      { name: 'p', annotations: { other: 'x' } },
    );
    const res = await pinner.review(review(p));
    assert.equal(res.status, 200);
    const body = res.body as { apiVersion: string; kind: string; response: Record<string, unknown> };
    assert.equal(body.apiVersion, 'admission.k8s.io/v1');
    assert.equal(body.kind, 'AdmissionReview');
    assert.equal(body.response.uid, 'uid-1');
    assert.equal(body.response.allowed, true);
    assert.equal(body.response.patchType, 'JSONPatch');
    assert.equal(body.response.warnings, undefined);
    const out = applyPatch(p, patchOf(body)) as typeof p & {
      metadata: { annotations: Record<string, string> };
    };
    const spec = out.spec as Record<string, { image: string }[]>;
    assert.equal(spec.initContainers![0]!.image, `localhost:5000/a/b:c@${D2}`);
    assert.equal(spec.containers![0]!.image, `nginx:1.27@${D1}`);
    assert.equal(spec.containers![1]!.image, `docker.io/library/nginx:1.27@${D1}`);
    assert.equal(spec.containers![2]!.image, `nginx:1.27@${D3}`, 'an image with a digest is untouched');
    assert.equal(spec.ephemeralContainers![0]!.image, `busybox:latest@${D3}`);
    assert.equal(out.metadata.annotations.other, 'x');
    assert.deepEqual(JSON.parse(out.metadata.annotations[PINNED_ANNOTATION]!), {
      'localhost:5000/a/b:c': { digest: D2, source: 'upstream' },
      'nginx:1.27': { digest: D1, source: 'upstream' },
      'docker.io/library/nginx:1.27': { digest: D1, source: 'upstream' },
      busybox: { digest: D3, source: 'upstream' },
    });
    assert.equal((await store.get('docker.io', 'library/nginx', '1.27'))?.digest, D1);
    assert.equal(pinner.recent(10).length, 4);
    assert.equal(pinner.recent(10)[0]!.source, 'upstream');
    assert.equal(pinner.recent(0).length, 0);
  });

  it('falls back to the last-known digest, and leaves an unknown image unpinned with a warning', async () => {
    const { pinner, store } = pinnerWith({});
    await store.record({
      registry: 'docker.io',
      repository: 'library/a',
      tag: '1',
      digest: D1,
      resolvedAt: 5,
      source: 'upstream',
    });
    const res = await pinner.review(
      review(
        pod({
          containers: [
            { name: 'a', image: 'a:1' },
            { name: 'b', image: 'b:1' },
          ],
        }),
      ),
    );
    const body = res.body as { response: { warnings?: string[]; allowed: boolean } };
    assert.equal(body.response.allowed, true);
    const ops = patchOf(body);
    assert.deepEqual(ops[0], { op: 'replace', path: '/spec/containers/0/image', value: `a:1@${D1}` });
    assert.equal(ops.length, 2, 'one replace and the annotation map');
    assert.equal(body.response.warnings?.length, 1);
    assert.match(
      body.response.warnings![0]!,
      /could not pin b:1: upstream unavailable \(connection refused\)/,
    );
    const text = await pinner.metrics.registry.metrics();
    assert.match(text, /ferry_pinner_resolutions_total\{source="last-known"\} 1/);
    assert.match(text, /ferry_pinner_resolutions_total\{source="unresolved"\} 1/);
  });

  it('dryRun writes nothing to the database', async () => {
    const { pinner, store } = pinnerWith({ 'docker.io/library/a:1': resolved(D1) });
    const res = await pinner.review(
      review(pod({ containers: [{ name: 'a', image: 'a:1' }] }), { dryRun: true }),
    );
    assert.equal(patchOf(res.body)[0]!.value, `a:1@${D1}`);
    assert.equal(await store.get('docker.io', 'library/a', '1'), undefined);
  });

  it('respects scope: own namespace, opt-out annotation, include/exclude', async () => {
    const { pinner, up } = pinnerWith(
      { 'docker.io/library/a:1': resolved(D1), 'docker.io/library/b:1': resolved(D2) },
      { exclude: ['/b:'] },
    );
    const p = pod({
      containers: [
        { name: 'a', image: 'a:1' },
        { name: 'b', image: 'b:1' },
      ],
    });
    const own = await pinner.review(review(p, { namespace: 'ferry' }));
    assert.deepEqual(patchOf(own.body), []);
    const opted = await pinner.review(review(pod(p.spec, { annotations: { 'ferry.dev/pin': 'false' } })));
    assert.deepEqual(patchOf(opted.body), []);
    assert.deepEqual(up.calls, [], 'out-of-scope pods ask nobody');
    const ops = patchOf((await pinner.review(review(p))).body);
    assert.deepEqual(
      ops.filter((o) => o.op === 'replace').map((o) => o.value),
      [`a:1@${D1}`],
    );
  });

  it('UPDATE pins only images that changed, and keeps the earlier annotation entries', async () => {
    const { pinner } = pinnerWith({
      'docker.io/library/a:2': resolved(D2),
      'docker.io/library/b:1': resolved(D3),
    });
    const old = pod(
      {
        containers: [
          { name: 'a', image: `a:1@${D1}` },
          { name: 'b', image: 'b:1' },
        ],
      },
      { annotations: { [PINNED_ANNOTATION]: JSON.stringify({ 'a:1': { digest: D1, source: 'upstream' } }) } },
    );
    const next = pod(
      {
        ...old.spec,
        containers: [
          { name: 'a', image: 'a:2' },
          { name: 'b', image: 'b:1' },
        ],
      },
      old.metadata,
    );
    const res = await pinner.review(review(next, { operation: 'UPDATE', oldObject: old }));
    const ops = patchOf(res.body);
    assert.deepEqual(ops[0], { op: 'replace', path: '/spec/containers/0/image', value: `a:2@${D2}` });
    assert.equal(ops.length, 2);
    assert.deepEqual(JSON.parse(ops[1]!.value as string), {
      'a:1': { digest: D1, source: 'upstream' },
      'a:2': { digest: D2, source: 'upstream' },
    });
    assert.equal(ops[1]!.path, '/metadata/annotations/ferry.dev~1pinned');
  });

  it('pins an ephemeral container added through the pods/ephemeralcontainers subresource (kubectl debug)', async () => {
    const { pinner } = pinnerWith({ 'docker.io/library/busybox:1': resolved(D2) });
    const old = pod({ containers: [{ name: 'a', image: `a:1@${D1}` }] });
    const next = pod({ ...old.spec, ephemeralContainers: [{ name: 'debugger', image: 'busybox:1' }] });
    const res = await pinner.review(
      review(next, { operation: 'UPDATE', subResource: 'ephemeralcontainers', oldObject: old }),
    );
    assert.equal(res.status, 200);
    const ops = patchOf(res.body).filter((o) => o.op === 'replace');
    assert.deepEqual(ops, [
      { op: 'replace', path: '/spec/ephemeralContainers/0/image', value: `busybox:1@${D2}` },
    ]);
  });

  it('handles a pod with 500 containers', async () => {
    const answers: Record<string, { kind: 'resolved'; digest: string }> = {};
    for (let i = 0; i < 50; i++) answers[`docker.io/library/img${i}:v`] = resolved(D1);
    const { pinner, up } = pinnerWith(answers);
    const containers = Array.from({ length: 500 }, (_, i) => ({ name: `c${i}`, image: `img${i % 50}:v` }));
    const res = await pinner.review(review(pod({ containers })));
    const ops = patchOf(res.body);
    assert.equal(ops.filter((o) => o.op === 'replace').length, 500);
    assert.equal(up.calls.length, 50, 'each distinct image is asked once');
  });

  it('answers bad input with a clear 400, or allowed with a message when the uid is known', async () => {
    const { pinner } = pinnerWith({});
    for (const [body, msg] of [
      [null, /JSON AdmissionReview object/],
      [[], /JSON AdmissionReview object/],
      [{ kind: 'Pod' }, /^expected kind AdmissionReview$/],
      [{ kind: 'AdmissionReview', apiVersion: 'v2' }, /expected apiVersion admission.k8s.io\/v1/],
      [{ kind: 'AdmissionReview', apiVersion: 'admission.k8s.io/v1' }, /no request object/],
      [
        { kind: 'AdmissionReview', apiVersion: 'admission.k8s.io/v1', request: { uid: '' } },
        /request.uid is missing/,
      ],
    ] as const) {
      const res = await pinner.review(body);
      assert.equal(res.status, 400, JSON.stringify(body));
      assert.match((res.body as { error: string }).error, msg);
    }
    const wrongKind = review(pod({}), { kind: { group: 'apps', version: 'v1', kind: 'Deployment' } });
    const res = await pinner.review(wrongKind);
    assert.equal(res.status, 200);
    const r = (res.body as { response: { uid: string; allowed: boolean; warnings: string[] } }).response;
    assert.equal(r.uid, 'uid-1');
    assert.equal(r.allowed, true);
    assert.match(r.warnings[0]!, /expected a Pod; nothing pinned/);
    const noObject = await pinner.review(review(pod({}), { object: 'x' }));
    assert.match(JSON.stringify(noObject.body), /not a Pod object/);
    const weird = await pinner.review(review(pod({ containers: [{ name: 'a', image: 'UPPER/Case:1' }] })));
    assert.match(JSON.stringify(weird.body), /invalid repository name/);
    const del = await pinner.review(review(pod({}), { operation: 'DELETE' }));
    assert.deepEqual((del.body as { response: unknown }).response, { uid: 'uid-1', allowed: true });
    assert.match(
      await pinner.metrics.registry.metrics(),
      /ferry_pinner_errors_total\{reason="bad-request"\} 7/,
    );
  });

  it('never echoes input: a 5 MB kind, apiVersion or uid comes back as a short fixed text', async () => {
    const { pinner } = pinnerWith({});
    const huge = 'K'.repeat(5 * 1024 * 1024);
    for (const body of [
      { kind: huge },
      { kind: 'AdmissionReview', apiVersion: huge },
      { kind: 'AdmissionReview', apiVersion: 'admission.k8s.io/v1', request: { uid: huge } },
    ]) {
      const res = await pinner.review(body);
      assert.equal(res.status, 400);
      assert.ok(JSON.stringify(res.body).length < 200, JSON.stringify(res.body).slice(0, 100));
    }
    const wrongKind = review(pod({}), { kind: { group: '', version: 'v1', kind: huge } });
    const res = await pinner.review(wrongKind);
    assert.equal(res.status, 200);
    assert.equal((res.body as { response: { allowed: boolean } }).response.allowed, true);
    assert.ok(JSON.stringify(res.body).length < 500);
    const image = await pinner.review(review(pod({ containers: [{ name: 'a', image: `UPPER/${huge}` }] })));
    assert.equal((image.body as { response: { allowed: boolean } }).response.allowed, true);
    assert.ok(JSON.stringify(image.body).length < 1000);
  });
});
