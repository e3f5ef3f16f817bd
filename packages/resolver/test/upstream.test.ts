import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { createServer, type Socket } from 'node:net';
import { after, describe, test } from 'node:test';
import { MediaTypes } from '@ferry/oci';
import { allocateBlock, buildImage, buildIndex, pushImage, startRegistry } from '../../../test/rig/index.ts';
import { createUpstreamClient, endpointsFromUrls } from '../src/index.ts';
import { serve } from './helpers.ts';

const block = allocateBlock();
after(() => block.release());

describe('upstream client against a real docker-registry (anonymous)', () => {
  test('HEAD resolves OCI and Docker manifests and an index; unknown tag/repo -> not-found', async (t) => {
    const reg = await startRegistry({ host: block.upstream, t });
    const oci = await buildImage({ layers: [512], mediaTypes: 'oci' });
    const docker = await buildImage({ layers: [512], mediaTypes: 'docker' });
    const index = await buildIndex({ layers: [256] });
    await pushImage(reg.url, 'team/oci', 'v1', oci);
    await pushImage(reg.url, 'team/docker', 'v1', docker);
    await pushImage(reg.url, 'team/multi', 'v1', index);

    const client = createUpstreamClient({ endpoints: endpointsFromUrls([reg.url]) });
    t.after(() => client.close());

    assert.deepEqual(await client.resolveTag(reg.host, 'team/oci', 'v1'), {
      kind: 'resolved',
      digest: oci.digest,
      mediaType: MediaTypes.ociManifest,
      size: oci.manifest.size,
    });
    assert.deepEqual(await client.resolveTag(reg.host, 'team/docker', 'v1'), {
      kind: 'resolved',
      digest: docker.digest,
      mediaType: MediaTypes.dockerManifest,
      size: docker.manifest.size,
    });
    assert.deepEqual(await client.resolveTag(reg.host, 'team/multi', 'v1'), {
      kind: 'resolved',
      digest: index.digest,
      mediaType: index.index.mediaType,
      size: index.index.size,
    });
    assert.deepEqual(await client.resolveTag(reg.host, 'team/oci', 'nope'), { kind: 'not-found' });
    assert.deepEqual(await client.resolveTag(reg.host, 'team/absent', 'v1'), { kind: 'not-found' });
    assert.equal(client.hasCredentials(reg.host), false);

    // A re-push moves the tag: the next resolution sees the new digest (no caching of answers).
    await pushImage(reg.url, 'team/oci', 'v1', docker);
    const moved = await client.resolveTag(reg.host, 'team/oci', 'v1');
    assert.equal(moved.kind === 'resolved' && moved.digest, docker.digest);

    // Stopped registry: connection refused -> unavailable, promptly.
    await reg.stop();
    const down = await client.resolveTag(reg.host, 'team/oci', 'v1');
    assert.equal(down.kind, 'unavailable');
    assert.equal(down.kind === 'unavailable' ? down.reason : '', 'upstream unreachable');
    assert.match(down.kind === 'unavailable' ? (down.detail ?? '') : '', /ECONNREFUSED/);
  });

  test('a server that accepts and never answers -> unavailable (timeout) within the deadline', async (t) => {
    const sockets = new Set<Socket>();
    const server = createServer((s) => {
      sockets.add(s);
      s.on('error', () => {});
    });
    server.listen(0, block.host(20));
    await once(server, 'listening');
    t.after(() => {
      for (const s of sockets) s.destroy();
      server.close();
    });
    const port = (server.address() as { port: number }).port;
    const host = `${block.host(20)}:${port}`;
    const client = createUpstreamClient({ timeoutMs: 300, endpoints: { [host]: `http://${host}` } });
    t.after(() => client.close());
    const out = await client.resolveTag(host, 'a/b', 'c');
    assert.deepEqual(out, {
      kind: 'unavailable',
      reason: 'upstream unreachable',
      detail: 'timeout after 300 ms',
    });
    assert.ok(sockets.size >= 1, 'the client did connect');

    // The caller's own signal also ends it, reported as such.
    const ac = new AbortController();
    const p = client.resolveTag(host, 'a/b', 'c', { signal: ac.signal });
    ac.abort();
    assert.deepEqual(await p, { kind: 'unavailable', reason: 'aborted by caller' });
  });
});

describe('upstream client against fakes', () => {
  test('HEAD refused (405) -> GET and sha256 of the body; HEAD without digest -> GET', async (t) => {
    const body = Buffer.from(
      JSON.stringify({ schemaVersion: 2, mediaType: MediaTypes.ociManifest, layers: [] }),
    );
    const digest = `sha256:${createHash('sha256').update(body).digest('hex')}`;
    const methods: string[] = [];
    const { url } = await serve(t, block.host(21), (req, res) => {
      methods.push(`${req.method} ${req.url}`);
      if (req.url?.startsWith('/v2/refuses/') && req.method === 'HEAD') return res.writeHead(405).end();
      if (req.method === 'HEAD') return res.writeHead(200, { 'content-type': MediaTypes.ociManifest }).end();
      res.writeHead(200, { 'content-type': `${MediaTypes.ociManifest}; charset=utf-8` }).end(body);
    });
    const host = new URL(url).host;
    const client = createUpstreamClient({ endpoints: { [host]: url } });
    t.after(() => client.close());
    const want = { kind: 'resolved', digest, mediaType: MediaTypes.ociManifest, size: body.length };
    assert.deepEqual(await client.resolveTag(host, 'refuses/x', 'v1'), want);
    assert.deepEqual(await client.resolveTag(host, 'nodigest/x', 'v1'), want);
    assert.deepEqual(methods, [
      'HEAD /v2/refuses/x/manifests/v1',
      'GET /v2/refuses/x/manifests/v1',
      'HEAD /v2/nodigest/x/manifests/v1',
      'GET /v2/nodigest/x/manifests/v1',
    ]);
  });

  test('status mapping: 5xx and 429 -> unavailable, 403 -> unauthorized, Accept lists the manifest types', async (t) => {
    let accept = '';
    const { url } = await serve(t, block.host(22), (req, res) => {
      accept = String(req.headers.accept);
      const status = Number(req.url?.split('/')[2]);
      res.writeHead(status).end();
    });
    const host = new URL(url).host;
    const client = createUpstreamClient({ endpoints: { [host]: url } });
    t.after(() => client.close());
    assert.deepEqual(await client.resolveTag(host, '503/x', 'v'), {
      kind: 'unavailable',
      reason: 'manifest HTTP 503',
    });
    assert.deepEqual(await client.resolveTag(host, '429/x', 'v'), {
      kind: 'unavailable',
      reason: 'manifest HTTP 429',
    });
    assert.deepEqual(await client.resolveTag(host, '403/x', 'v'), { kind: 'unauthorized', status: 403 });
    assert.deepEqual(await client.resolveTag(host, '401/x', 'v'), { kind: 'unauthorized', status: 401 });
    assert.deepEqual(await client.resolveTag(host, '404/x', 'v'), { kind: 'not-found' });
    for (const mt of [
      MediaTypes.ociIndex,
      MediaTypes.ociManifest,
      MediaTypes.dockerManifest,
      MediaTypes.dockerManifestList,
    ]) {
      assert.ok(accept.includes(mt), `${mt} in Accept`);
    }
  });

  test('WWW-Authenticate: Basic -> Basic credentials; without credentials -> unauthorized', async (t) => {
    const auths: (string | undefined)[] = [];
    const { url } = await serve(t, block.host(23), (req, res) => {
      auths.push(req.headers.authorization);
      if (req.headers.authorization !== `Basic ${Buffer.from('bob:pw').toString('base64')}`) {
        return res.writeHead(401, { 'www-authenticate': 'Basic realm="r"' }).end();
      }
      res.writeHead(200, { 'docker-content-digest': `sha256:${'b'.repeat(64)}` }).end();
    });
    const host = new URL(url).host;
    const anon = createUpstreamClient({ endpoints: { [host]: url } });
    t.after(() => anon.close());
    assert.deepEqual(await anon.resolveTag(host, 'p/x', 'v'), { kind: 'unauthorized', status: 401 });

    const withCreds = createUpstreamClient({
      endpoints: { [host]: url },
      credentials: { auths: { [`http://${host}/v2/`]: { username: 'bob', password: 'pw' } } },
    });
    t.after(() => withCreds.close());
    assert.equal(withCreds.hasCredentials(host), true);
    auths.length = 0;
    for (let i = 0; i < 3; i++) {
      const out = await withCreds.resolveTag(host, 'p/x', 'v');
      assert.equal(out.kind, 'resolved');
    }
    // One challenge, then Basic pre-attached.
    assert.equal(auths.filter((a) => a === undefined).length, 1);
    assert.equal(auths.length, 4);
  });
});

/** A fake registry demanding Bearer tokens from a fake issuer (both node:http on 127.x). */
async function bearerPair(
  t: { after(fn: () => unknown): void },
  host: string,
  opts: { users?: Record<string, string>; expiresIn?: number; field?: 'token' | 'access_token' } = {},
) {
  const issued = new Map<string, string | undefined>(); // token -> account
  const tokenRequests: {
    auth?: string;
    service: string | null;
    scope: string | null;
    account: string | null;
  }[] = [];
  const issuer = await serve(t, host, (req, res) => {
    const u = new URL(req.url ?? '/', 'http://x');
    tokenRequests.push({
      ...(req.headers.authorization ? { auth: req.headers.authorization } : {}),
      service: u.searchParams.get('service'),
      scope: u.searchParams.get('scope'),
      account: u.searchParams.get('account'),
    });
    let account: string | undefined;
    if (req.headers.authorization) {
      const [user, pw] = Buffer.from(req.headers.authorization.replace(/^Basic /, ''), 'base64')
        .toString()
        .split(':');
      if (!user || opts.users?.[user] !== pw) return res.writeHead(401).end();
      account = user;
    }
    const token = `tok-${issued.size}`;
    issued.set(token, account);
    const field = opts.field ?? 'token';
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ [field]: token, ...(opts.expiresIn ? { expires_in: opts.expiresIn } : {}) }));
  });
  const registryRequests: (string | undefined)[] = [];
  const registry = await serve(t, host, (req, res) => {
    registryRequests.push(req.headers.authorization);
    const repo = /^\/v2\/(.+)\/manifests\/[^/]+$/.exec(req.url ?? '')?.[1] ?? '';
    const token = req.headers.authorization?.replace(/^Bearer /, '');
    const known = token !== undefined && issued.has(token);
    // 'private/…' needs an authenticated account; 'public/…' any issued token.
    const ok = known && (!repo.startsWith('private/') || issued.get(token) !== undefined);
    if (!ok) {
      return res
        .writeHead(401, {
          'www-authenticate': `Bearer realm="${issuer.url}/token",service="fake-registry",scope="repository:${repo}:pull"`,
        })
        .end();
    }
    res.writeHead(200, {
      'docker-content-digest': `sha256:${'a'.repeat(64)}`,
      'content-type': MediaTypes.ociIndex,
      'content-length': '123',
    });
    res.end();
  });
  const registryHost = new URL(registry.url).host;
  return { registryUrl: registry.url, registryHost, tokenRequests, registryRequests, issued };
}

describe('Bearer token flow (fake issuer + fake registry)', () => {
  test('anonymous token: fetched once and cached across many resolutions, then used pre-emptively', async (t) => {
    const f = await bearerPair(t, block.host(30));
    const client = createUpstreamClient({ endpoints: { [f.registryHost]: f.registryUrl } });
    t.after(() => client.close());
    const outs = await Promise.all(
      Array.from({ length: 10 }, () => client.resolveTag(f.registryHost, 'public/app', 'v1')),
    );
    for (const o of outs)
      assert.deepEqual(o, {
        kind: 'resolved',
        digest: `sha256:${'a'.repeat(64)}`,
        mediaType: MediaTypes.ociIndex,
        size: 123,
      });
    for (let i = 0; i < 5; i++)
      assert.equal((await client.resolveTag(f.registryHost, 'public/app', `v${i}`)).kind, 'resolved');
    assert.equal(f.tokenRequests.length, 1, 'one token fetch');
    assert.deepEqual(f.tokenRequests[0], {
      service: 'fake-registry',
      scope: 'repository:public/app:pull',
      account: null,
    });
    // 10 concurrent: each challenged once then retried (20); the next 5 carry the cached token (5).
    assert.equal(f.registryRequests.length, 25);
    assert.equal(
      f.registryRequests.slice(20).every((a) => a === 'Bearer tok-0'),
      true,
    );
    // Another repository is another scope: another token.
    assert.equal((await client.resolveTag(f.registryHost, 'public/other', 'v1')).kind, 'resolved');
    assert.equal(f.tokenRequests.length, 2);
  });

  test('credentials go to the realm as Basic; private repo resolves; without credentials -> unauthorized', async (t) => {
    const f = await bearerPair(t, block.host(31), { users: { alice: 's3cret' }, field: 'access_token' });
    const config = {
      auths: { [f.registryHost]: { auth: Buffer.from('alice:s3cret').toString('base64') } },
    };
    const client = createUpstreamClient({
      endpoints: { [f.registryHost]: f.registryUrl },
      credentials: config,
    });
    t.after(() => client.close());
    assert.equal((await client.resolveTag(f.registryHost, 'private/app', 'v1')).kind, 'resolved');
    assert.equal(f.tokenRequests.length, 1);
    assert.equal(f.tokenRequests[0]?.auth, `Basic ${Buffer.from('alice:s3cret').toString('base64')}`);
    assert.equal(f.tokenRequests[0]?.account, 'alice');

    const anon = createUpstreamClient({ endpoints: { [f.registryHost]: f.registryUrl } });
    t.after(() => anon.close());
    assert.deepEqual(await anon.resolveTag(f.registryHost, 'private/app', 'v1'), {
      kind: 'unauthorized',
      status: 401,
    });
    // The useless anonymous token is not kept: the next try fetches again.
    assert.deepEqual(await anon.resolveTag(f.registryHost, 'private/app', 'v1'), {
      kind: 'unauthorized',
      status: 401,
    });
    assert.equal(f.tokenRequests.length, 3);

    const wrong = createUpstreamClient({
      endpoints: { [f.registryHost]: f.registryUrl },
      credentials: { auths: { [f.registryHost]: { username: 'alice', password: 'nope' } } },
    });
    t.after(() => wrong.close());
    assert.deepEqual(await wrong.resolveTag(f.registryHost, 'private/app', 'v1'), {
      kind: 'unauthorized',
      status: 401,
    });
  });

  test('tokens expire: a token past expires_in (minus margin) is fetched again', async (t) => {
    const f = await bearerPair(t, block.host(32), { expiresIn: 1 });
    const client = createUpstreamClient({ endpoints: { [f.registryHost]: f.registryUrl } });
    t.after(() => client.close());
    assert.equal((await client.resolveTag(f.registryHost, 'public/app', 'v1')).kind, 'resolved');
    assert.equal(f.tokenRequests.length, 1);
    assert.equal((await client.resolveTag(f.registryHost, 'public/app', 'v2')).kind, 'resolved');
    // Poll (with a deadline) until the cached token has expired and a resolution fetches a new one.
    const deadline = Date.now() + 10_000;
    while (f.tokenRequests.length < 2 && Date.now() < deadline) {
      assert.equal((await client.resolveTag(f.registryHost, 'public/app', 'v1')).kind, 'resolved');
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.equal(f.tokenRequests.length, 2);
  });

  test('token endpoint down -> unavailable; the whole flow is bounded by the deadline', async (t) => {
    const sockets = new Set<Socket>();
    const hang = createServer((s) => sockets.add(s));
    hang.listen(0, block.host(33));
    await once(hang, 'listening');
    t.after(() => {
      for (const s of sockets) s.destroy();
      hang.close();
    });
    const realm = `http://${block.host(33)}:${(hang.address() as { port: number }).port}/token`;
    const { url } = await serve(t, block.host(33), (_req, res) => {
      res.writeHead(401, { 'www-authenticate': `Bearer realm="${realm}",service="s"` }).end();
    });
    const host = new URL(url).host;
    const client = createUpstreamClient({ timeoutMs: 300, endpoints: { [host]: url } });
    t.after(() => client.close());
    assert.deepEqual(await client.resolveTag(host, 'a/b', 'c'), {
      kind: 'unavailable',
      reason: 'upstream unreachable',
      detail: 'timeout after 300 ms',
    });
  });
});
