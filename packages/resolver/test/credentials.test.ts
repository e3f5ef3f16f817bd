import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import {
  decodeDockerConfig,
  loadDockerConfig,
  normalizeCredentialHost,
  parseChallenge,
} from '../src/index.ts';

test('auths keys normalise to registry hosts', () => {
  assert.equal(normalizeCredentialHost('https://index.docker.io/v1/'), 'docker.io');
  assert.equal(normalizeCredentialHost('index.docker.io'), 'docker.io');
  assert.equal(normalizeCredentialHost('registry-1.docker.io'), 'docker.io');
  assert.equal(normalizeCredentialHost('https://GHCR.io/v2/'), 'ghcr.io');
  assert.equal(normalizeCredentialHost('http://127.0.0.2:5000'), '127.0.0.2:5000');
  assert.equal(normalizeCredentialHost('quay.io'), 'quay.io');
});

test('entries decode: auth, username/password, identitytoken, registrytoken; empty entries ignored', () => {
  const creds = decodeDockerConfig({
    auths: {
      'https://index.docker.io/v1/': { auth: Buffer.from('me:pa:ss').toString('base64') },
      'ghcr.io': { username: 'u', password: 'p' },
      'acr.example.com': { identitytoken: 'refresh' },
      'r.example.com': { registrytoken: 'bearer' },
      'empty.example.com': {},
    },
  });
  assert.deepEqual(Object.fromEntries(creds), {
    'docker.io': { kind: 'basic', username: 'me', password: 'pa:ss' },
    'ghcr.io': { kind: 'basic', username: 'u', password: 'p' },
    'acr.example.com': { kind: 'identity', refreshToken: 'refresh' },
    'r.example.com': { kind: 'registry', token: 'bearer' },
  });
  assert.equal(decodeDockerConfig({}).size, 0);
});

test('loadDockerConfig: errors name the file and the problem', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'ferry-resolver-creds-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const file = (name: string, text: string) => {
    const p = join(dir, name);
    writeFileSync(p, text);
    return p;
  };
  const good = file('good.json', JSON.stringify({ auths: { 'ghcr.io': { username: 'u', password: 'p' } } }));
  assert.deepEqual(await loadDockerConfig(good), { auths: { 'ghcr.io': { username: 'u', password: 'p' } } });
  const missing = join(dir, 'missing.json');
  await assert.rejects(loadDockerConfig(missing), new RegExp(`docker config ${missing}: cannot read`));
  const bad = file('bad.json', '{"auths": ');
  await assert.rejects(loadDockerConfig(bad), new RegExp(`docker config ${bad}: not valid JSON`));
  const arr = file('arr.json', '[]');
  await assert.rejects(loadDockerConfig(arr), /expected a JSON object/);
  const notB64 = file('auth.json', JSON.stringify({ auths: { 'x.io': { auth: 'bm9jb2xvbg==' } } }));
  await assert.rejects(loadDockerConfig(notB64), /auths\["x.io"\].auth is not base64 of "username:password"/);
  const half = file('half.json', JSON.stringify({ auths: { 'x.io': { username: 'u' } } }));
  await assert.rejects(loadDockerConfig(half), /a username without a password/);
  const num = file('num.json', JSON.stringify({ auths: { 'x.io': { password: 5 } } }));
  await assert.rejects(loadDockerConfig(num), /auths\["x.io"\].password must be a string/);
});

test('WWW-Authenticate parsing', () => {
  assert.deepEqual(
    parseChallenge(
      'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull"',
    ),
    {
      scheme: 'bearer',
      params: {
        realm: 'https://auth.docker.io/token',
        service: 'registry.docker.io',
        scope: 'repository:library/nginx:pull',
      },
    },
  );
  assert.deepEqual(parseChallenge('Basic realm="Registry Realm"'), {
    scheme: 'basic',
    params: { realm: 'Registry Realm' },
  });
  assert.deepEqual(parseChallenge('Bearer realm="a\\"b", error=invalid_token'), {
    scheme: 'bearer',
    params: { realm: 'a"b', error: 'invalid_token' },
  });
  assert.equal(parseChallenge(undefined), undefined);
  assert.equal(parseChallenge(''), undefined);
});
