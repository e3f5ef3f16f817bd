import assert from 'node:assert/strict';
import { test } from 'node:test';
import { OciError, parseDistributionPath } from '../src/index.ts';

const D = `sha256:${'cd'.repeat(32)}`;

test('manifests by tag and by digest, with ns', () => {
  assert.deepEqual(parseDistributionPath('/v2/library/nginx/manifests/1.27', 'docker.io'), {
    kind: 'manifests',
    registry: 'docker.io',
    repository: 'library/nginx',
    reference: '1.27',
    tag: '1.27',
  });
  assert.deepEqual(parseDistributionPath(`/v2/demo/app/manifests/${D}`, '127.0.0.1:5056'), {
    kind: 'manifests',
    registry: '127.0.0.1:5056',
    repository: 'demo/app',
    reference: D,
    digest: D,
  });
});

test('blobs by digest; ns normalised; defaults when ns absent', () => {
  assert.deepEqual(parseDistributionPath(`/v2/a/b/c/blobs/${D}`, 'registry-1.docker.io'), {
    kind: 'blobs',
    registry: 'docker.io',
    repository: 'a/b/c',
    reference: D,
    digest: D,
  });
  assert.equal(parseDistributionPath(`/v2/x/blobs/${D}`, 'index.docker.io').registry, 'docker.io');
  assert.equal(parseDistributionPath(`/v2/x/blobs/${D}`, undefined).registry, 'docker.io');
  assert.equal(parseDistributionPath(`/v2/x/blobs/${D}`, '').registry, 'docker.io');
  assert.equal(
    parseDistributionPath(`/v2/x/blobs/${D}`, undefined, 'reg.local:5000').registry,
    'reg.local:5000',
  );
  assert.equal(parseDistributionPath(`/v2/x/blobs/${D}`, 'Quay.io', 'reg.local:5000').registry, 'quay.io');
});

test('single-component names on docker.io get library/, elsewhere not', () => {
  assert.equal(parseDistributionPath('/v2/nginx/manifests/1', 'docker.io').repository, 'library/nginx');
  assert.equal(parseDistributionPath('/v2/nginx/manifests/1', 'ghcr.io').repository, 'nginx');
});

test('name may contain "manifests" / "blobs" components; query is ignored; %3A decoded', () => {
  const r = parseDistributionPath('/v2/foo/manifests/blobs/manifests/v1?ns=docker.io', 'ghcr.io');
  assert.equal(r.repository, 'foo/manifests/blobs');
  assert.equal(r.tag, 'v1');
  assert.equal(parseDistributionPath(`/v2/x/blobs/${D.replace(':', '%3A')}`, 'ghcr.io').digest, D);
});

function throwsCode(path: string, code: string, status: number, ns = 'docker.io'): void {
  assert.throws(
    () => parseDistributionPath(path, ns),
    (e: unknown) => e instanceof OciError && e.code === code && e.status === status,
    `${path} -> ${code}`,
  );
}

test('errors', () => {
  throwsCode('/v2/', 'NAME_UNKNOWN', 404);
  throwsCode('/v2/_catalog', 'NAME_UNKNOWN', 404);
  throwsCode('/v2/x/tags/list', 'NAME_UNKNOWN', 404);
  throwsCode('/v1/x/manifests/latest', 'NAME_UNKNOWN', 404);
  throwsCode('/v2/x/manifests/', 'NAME_UNKNOWN', 404);
  throwsCode('/v2/x/manifests/a/', 'NAME_UNKNOWN', 404);
  throwsCode('/v2/manifests/latest', 'NAME_UNKNOWN', 404);
  throwsCode('/v2/x/blobs/uploads/', 'NAME_UNKNOWN', 404);
  throwsCode('/v2/x/blobs/%E0%A4%A', 'NAME_UNKNOWN', 404);
  throwsCode('/v2/X/manifests/latest', 'NAME_INVALID', 400);
  throwsCode('/v2/a//b/manifests/latest', 'NAME_INVALID', 400);
  throwsCode(`/v2/${'a'.repeat(256)}/manifests/latest`, 'NAME_INVALID', 400);
  throwsCode('/v2/x/manifests/latest', 'NAME_INVALID', 400, 'bad host!');
  throwsCode('/v2/x/manifests/sha256:abc', 'DIGEST_INVALID', 400);
  throwsCode('/v2/x/blobs/sha256:abc', 'DIGEST_INVALID', 400);
  throwsCode('/v2/x/blobs/latest', 'DIGEST_INVALID', 400);
  throwsCode('/v2/x/manifests/-bad', 'TAG_INVALID', 400);
  throwsCode(`/v2/x/manifests/${'t'.repeat(129)}`, 'TAG_INVALID', 400);
});
