import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  formatReference,
  isValidRegistry,
  isValidRepository,
  isValidTag,
  normalizeRegistry,
  OciError,
  parseReference,
  tagKey,
} from '../src/index.ts';

const D = `sha256:${'ab'.repeat(32)}`;

const cases: [string, ReturnType<typeof parseReference>][] = [
  ['nginx', { registry: 'docker.io', repository: 'library/nginx', tag: 'latest' }],
  ['nginx:1.27', { registry: 'docker.io', repository: 'library/nginx', tag: '1.27' }],
  ['library/nginx', { registry: 'docker.io', repository: 'library/nginx', tag: 'latest' }],
  ['docker.io/nginx', { registry: 'docker.io', repository: 'library/nginx', tag: 'latest' }],
  ['index.docker.io/library/nginx:1', { registry: 'docker.io', repository: 'library/nginx', tag: '1' }],
  ['registry-1.docker.io/bitnami/redis:7', { registry: 'docker.io', repository: 'bitnami/redis', tag: '7' }],
  ['bitnami/redis', { registry: 'docker.io', repository: 'bitnami/redis', tag: 'latest' }],
  ['localhost:5000/a/b:c', { registry: 'localhost:5000', repository: 'a/b', tag: 'c' }],
  ['localhost/x', { registry: 'localhost', repository: 'x', tag: 'latest' }],
  [`127.0.0.1:5000/demo/app@${D}`, { registry: '127.0.0.1:5000', repository: 'demo/app', digest: D }],
  [`repo:tag@${D}`, { registry: 'docker.io', repository: 'library/repo', tag: 'tag', digest: D }],
  [
    `ghcr.io/org/team/img:v1.2.3-rc_1@${D}`,
    { registry: 'ghcr.io', repository: 'org/team/img', tag: 'v1.2.3-rc_1', digest: D },
  ],
  ['[::1]:5000/x', { registry: '[::1]:5000', repository: 'x', tag: 'latest' }],
  ['[fe80::1]/x/y:z', { registry: '[fe80::1]', repository: 'x/y', tag: 'z' }],
  ['Quay.IO/a/b', { registry: 'quay.io', repository: 'a/b', tag: 'latest' }],
  ['registry.k8s.io/pause:3.9', { registry: 'registry.k8s.io', repository: 'pause', tag: '3.9' }],
  ['a__b/c--d/e.f:_', { registry: 'docker.io', repository: 'a__b/c--d/e.f', tag: '_' }],
];

test('parseReference: defaults and shapes', () => {
  for (const [input, want] of cases) assert.deepEqual(parseReference(input), want, input);
});

test('parseReference: absent tag/digest are absent keys, not undefined', () => {
  assert.deepEqual(Object.keys(parseReference(`x@${D}`)).sort(), ['digest', 'registry', 'repository']);
  assert.deepEqual(Object.keys(parseReference('x')).sort(), ['registry', 'repository', 'tag']);
});

function throwsCode(input: string, code: string): void {
  assert.throws(
    () => parseReference(input),
    (e: unknown) => e instanceof OciError && e.code === code && e.status === 400,
    `${input} -> ${code}`,
  );
}

test('parseReference: errors', () => {
  throwsCode('', 'NAME_INVALID');
  throwsCode('Nginx', 'NAME_INVALID');
  throwsCode('docker.io/Library/nginx', 'NAME_INVALID');
  throwsCode('localhost:5000/A/b', 'NAME_INVALID');
  throwsCode('MyOrg/app', 'NAME_INVALID');
  throwsCode('nginx@sha256:abc', 'DIGEST_INVALID');
  throwsCode(`nginx@md5:${'a'.repeat(32)}`, 'DIGEST_INVALID');
  throwsCode(`nginx@${D}@${D}`, 'DIGEST_INVALID');
  throwsCode('nginx:', 'TAG_INVALID');
  throwsCode('nginx:.bad', 'TAG_INVALID');
  throwsCode(`nginx:${'t'.repeat(129)}`, 'TAG_INVALID');
  throwsCode(':tag', 'NAME_INVALID');
  throwsCode(`@${D}`, 'NAME_INVALID');
  throwsCode('/nginx', 'NAME_INVALID');
  throwsCode('nginx/', 'NAME_INVALID');
  throwsCode('a//b', 'NAME_INVALID');
  throwsCode('a/-b', 'NAME_INVALID');
  throwsCode('a_/b', 'NAME_INVALID');
  throwsCode('a___b', 'NAME_INVALID');
  throwsCode(' nginx', 'NAME_INVALID');
  throwsCode('bad_host.io:x/y', 'NAME_INVALID');
  throwsCode('-bad.io/y', 'NAME_INVALID');
  throwsCode('reg.io:123456/y', 'NAME_INVALID');
  throwsCode('[::1]', 'NAME_INVALID');
  throwsCode('http://reg.io/x', 'NAME_INVALID');
  throwsCode(`x/${'a'.repeat(255)}`, 'NAME_INVALID');
});

test('parseReference: accepts a 128-character tag and a 255-character name', () => {
  assert.equal(parseReference(`nginx:${'t'.repeat(128)}`).tag, 't'.repeat(128));
  const name = `a/${'b'.repeat(253)}`;
  assert.equal(parseReference(name).repository, name);
});

test('formatReference round-trips parseReference', () => {
  assert.equal(formatReference(parseReference('nginx')), 'docker.io/library/nginx:latest');
  assert.equal(formatReference(parseReference(`repo:tag@${D}`)), `docker.io/library/repo:tag@${D}`);
  assert.equal(
    formatReference(parseReference(`127.0.0.1:5000/demo/app@${D}`)),
    `127.0.0.1:5000/demo/app@${D}`,
  );
  for (const [input] of cases) {
    const r = parseReference(input);
    assert.deepEqual(parseReference(formatReference(r)), r, input);
  }
  assert.equal(formatReference({ registry: 'r.io', repository: 'a' }), 'r.io/a');
});

test('normalizeRegistry', () => {
  assert.equal(normalizeRegistry('registry-1.docker.io'), 'docker.io');
  assert.equal(normalizeRegistry('index.docker.io'), 'docker.io');
  assert.equal(normalizeRegistry('docker.io'), 'docker.io');
  assert.equal(normalizeRegistry('Index.Docker.IO'), 'docker.io');
  assert.equal(normalizeRegistry('127.0.0.1:5000'), '127.0.0.1:5000');
  assert.equal(normalizeRegistry('GHCR.io'), 'ghcr.io');
});

test('tagKey', () => {
  assert.equal(tagKey('docker.io', 'library/nginx', '1.27'), 'docker.io/library/nginx:1.27');
  assert.equal(tagKey('registry-1.docker.io', 'library/nginx', 'x'), 'docker.io/library/nginx:x');
  assert.equal(tagKey('127.0.0.1:5000', 'demo/app', 'v1'), '127.0.0.1:5000/demo/app:v1');
});

test('validators', () => {
  assert.equal(isValidRepository('library/nginx'), true);
  assert.equal(isValidRepository('a.b_c__d---e/f'), true);
  assert.equal(isValidRepository('a'.repeat(255)), true);
  assert.equal(isValidRepository('a'.repeat(256)), false);
  assert.equal(isValidRepository(''), false);
  assert.equal(isValidRepository('a..b'), false);
  assert.equal(isValidRepository('a.-b'), false);
  assert.equal(isValidRepository('UP'), false);
  assert.equal(isValidTag('latest'), true);
  assert.equal(isValidTag('_x.Y-1'), true);
  assert.equal(isValidTag('-x'), false);
  assert.equal(isValidTag(''), false);
  assert.equal(isValidTag('a:b'), false);
  assert.equal(isValidRegistry('docker.io'), true);
  assert.equal(isValidRegistry('localhost:5000'), true);
  assert.equal(isValidRegistry('[::1]:5000'), true);
  assert.equal(isValidRegistry('127.0.0.1'), true);
  assert.equal(isValidRegistry('a b'), false);
  assert.equal(isValidRegistry('reg.io:'), false);
  assert.equal(isValidRegistry(''), false);
});

test('a long hostile reference fails fast with a short message', () => {
  const s = `${'a-'.repeat(50_000)}!`;
  assert.throws(
    () => parseReference(s),
    (e: unknown) => e instanceof OciError && e.message.length < 600,
  );
  assert.equal(isValidRepository(`${'a-'.repeat(50_000)}!`), false);
});
