import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { allocateBlock, buildImage, pushImage, startAuthRegistry } from '../../../test/rig/index.ts';
import { createUpstreamClient } from '../src/index.ts';

const block = allocateBlock();
after(() => block.release());

test('real docker-registry with token auth: credentials resolve, anonymous is unauthorized', async (t) => {
  const reg = await startAuthRegistry({
    host: block.upstream,
    users: { ferry: 'pull-secret' },
    publicRepositories: ['open/app'],
    auth: false,
    t,
  });
  // Push without auth, then restart with token auth on the same storage.
  const image = await buildImage({ layers: [256], mediaTypes: 'oci' });
  await pushImage(reg.url, 'private/app', 'v1', image);
  await pushImage(reg.url, 'open/app', 'v1', image);
  await reg.start({ auth: true });

  // Pushing is now refused without a token.
  await assert.rejects(pushImage(reg.url, 'private/app', 'v2', image), /HTTP 401/);

  const endpoints = { [reg.host]: reg.url };
  const anon = createUpstreamClient({ endpoints });
  t.after(() => anon.close());
  assert.deepEqual(await anon.resolveTag(reg.host, 'private/app', 'v1'), {
    kind: 'unauthorized',
    status: 401,
  });
  // A public repository resolves anonymously (anonymous token with pull).
  const open = await anon.resolveTag(reg.host, 'open/app', 'v1');
  assert.equal(open.kind === 'resolved' && open.digest, image.digest);

  const client = createUpstreamClient({ endpoints, credentials: reg.dockerConfig('ferry') });
  t.after(() => client.close());
  assert.equal(client.hasCredentials(reg.host), true);
  for (let i = 0; i < 3; i++) {
    const out = await client.resolveTag(reg.host, 'private/app', 'v1');
    assert.equal(out.kind === 'resolved' && out.digest, image.digest, JSON.stringify(out));
  }
  assert.deepEqual(await client.resolveTag(reg.host, 'private/app', 'nope'), { kind: 'not-found' });

  const ferryRequests = reg.tokenRequests.filter((r) => r.account === 'ferry');
  assert.equal(ferryRequests.length, 1, 'the token is cached across resolutions');
  assert.deepEqual(ferryRequests[0]?.granted, [{ name: 'private/app', actions: ['pull'] }]);
  assert.equal(ferryRequests[0]?.service, reg.service);

  // Wrong password: the issuer answers 401 -> unauthorized.
  const wrong = createUpstreamClient({
    endpoints,
    credentials: { auths: { [reg.host]: { username: 'ferry', password: 'wrong' } } },
  });
  t.after(() => wrong.close());
  assert.deepEqual(await wrong.resolveTag(reg.host, 'private/app', 'v1'), {
    kind: 'unauthorized',
    status: 401,
  });
});
