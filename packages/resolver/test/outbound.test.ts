/**
 * Outbound rules (issue scenario 7): no client-chosen registry, token realm or redirect makes the client
 * connect anywhere but a mirrored registry. Every case watches a listening socket that must see nothing.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, type Server } from 'node:net';
import { after, describe, test } from 'node:test';
import { allocateBlock } from '../../../test/rig/index.ts';
import { createUpstreamClient, isNonPublicAddress, type LookupAll, UNREACHABLE } from '../src/index.ts';
import { serve } from './helpers.ts';

const block = allocateBlock();
after(() => block.release());

/** A TCP listener that counts connections (none expected). */
async function trap(t: { after(fn: () => unknown): void }, host: string) {
  let connections = 0;
  const server: Server = createServer((s) => {
    connections += 1;
    s.destroy();
  });
  server.listen(0, host);
  await once(server, 'listening');
  t.after(() => new Promise((r) => server.close(r)));
  return { port: (server.address() as { port: number }).port, connections: () => connections };
}

/** DNS that maps every name to one address (a name an attacker points at an internal service). */
const pointAt =
  (address: string): LookupAll =>
  async () => [{ address, family: 4 }];

describe('outbound rules, all registries mirrored', () => {
  test('`ns=` with an IP literal, localhost or a single-label name: no connection, a short reason', async (t) => {
    const target = await trap(t, block.host(40));
    const client = createUpstreamClient({ timeoutMs: 500 });
    t.after(() => client.close());
    for (const registry of [`${block.host(40)}:${target.port}`, `localhost:${target.port}`, 'metadata']) {
      const out = await client.resolveTag(registry, 'a/b', 'v1');
      assert.equal(out.kind, 'unavailable', registry);
      assert.match(out.kind === 'unavailable' ? out.reason : '', /^not a registry this node mirrors/);
      const blob = await client.fetchContent(registry, 'a/b', 'blobs', `sha256:${'a'.repeat(64)}`);
      assert.equal(blob.kind, 'unavailable');
    }
    assert.equal(target.connections(), 0);
  });

  test('a public-looking name that resolves to a private address: refused at connect time', async (t) => {
    const target = await trap(t, block.host(41));
    const client = createUpstreamClient({ timeoutMs: 500, lookup: pointAt(block.host(41)) });
    t.after(() => client.close());
    const out = await client.resolveTag(`registry.evil.example:${target.port}`, 'a/b', 'v1');
    assert.deepEqual(
      { kind: out.kind, reason: out.kind === 'unavailable' ? out.reason : '' },
      { kind: 'unavailable', reason: UNREACHABLE },
    );
    assert.equal(target.connections(), 0);
  });

  test('network failures read alike to clients: refused and silent ports give the same reason', async (t) => {
    const held = new Set<import('node:net').Socket>();
    const silent = createServer((s) => held.add(s));
    silent.listen(0, block.host(44));
    await once(silent, 'listening');
    t.after(() => {
      for (const s of held) s.destroy();
      return new Promise((r) => silent.close(r));
    });
    const refusedPort = await trap(t, block.host(45)); // closed right away below
    const closedUrl = `http://${block.host(45)}:${refusedPort.port}`;
    const silentUrl = `http://${block.host(44)}:${(silent.address() as { port: number }).port}`;
    const client = createUpstreamClient({
      timeoutMs: 300,
      endpoints: { 'closed.example': closedUrl, 'silent.example': silentUrl },
    });
    t.after(() => client.close());
    await new Promise((r) => setTimeout(r, 0));
    const reasons = new Set<string>();
    for (const registry of ['closed.example', 'silent.example']) {
      const out = await client.resolveTag(registry, 'a/b', 'v1');
      assert.equal(out.kind, 'unavailable');
      if (out.kind === 'unavailable') reasons.add(out.reason);
    }
    assert.deepEqual([...reasons], [UNREACHABLE]);
  });
});

describe('outbound rules, listed registries', () => {
  test('only the listed registries are asked', async (t) => {
    const target = await trap(t, block.host(46));
    const client = createUpstreamClient({ timeoutMs: 500, mirroredRegistries: ['ghcr.io'] });
    t.after(() => client.close());
    const out = await client.resolveTag(`${block.host(46)}:${target.port}`, 'a/b', 'v1');
    assert.equal(out.kind === 'unavailable' && out.reason, 'not a registry this node mirrors');
    assert.equal((await client.resolveTag('quay.io', 'a/b', 'v1')).kind, 'unavailable');
    assert.equal(target.connections(), 0);
  });

  test('a token realm that is plain HTTP, or resolves to a private address, is never contacted', async (t) => {
    const issuer = await trap(t, block.host(43));
    const realms = [
      `http://${block.host(43)}:${issuer.port}/token`,
      `https://issuer.evil.example:${issuer.port}/token`,
    ];
    let next = 0;
    const { url } = await serve(t, block.host(42), (_req, res) => {
      res.writeHead(401, { 'www-authenticate': `Bearer realm="${realms[next++ % 2]}",service="s"` }).end();
    });
    const host = new URL(url).host;
    const client = createUpstreamClient({
      timeoutMs: 500,
      endpoints: { [host]: url },
      lookup: pointAt(block.host(43)),
    });
    t.after(() => client.close());
    const http = await client.resolveTag(host, 'a/b', 'v1');
    assert.equal(http.kind === 'unavailable' && http.reason, 'token realm refused: token realm is not HTTPS');
    const rebound = await client.resolveTag(host, 'a/c', 'v1');
    assert.equal(rebound.kind === 'unavailable' && rebound.reason, UNREACHABLE);
    assert.equal(issuer.connections(), 0);
  });

  test('a redirect to an unlisted private address is not followed', async (t) => {
    const target = await trap(t, block.host(47));
    const { url } = await serve(t, block.host(48), (_req, res) => {
      res.writeHead(307, { location: `http://${block.host(47)}:${target.port}/blob` }).end();
    });
    const host = new URL(url).host;
    const client = createUpstreamClient({ timeoutMs: 500, endpoints: { [host]: url } });
    t.after(() => client.close());
    const out = await client.fetchContent(host, 'a/b', 'blobs', `sha256:${'b'.repeat(64)}`);
    assert.equal(out.kind, 'unavailable');
    assert.equal(target.connections(), 0);
  });
});

test('non-public address ranges', () => {
  for (const a of [
    '127.0.0.1',
    '10.1.2.3',
    '172.16.0.1',
    '192.168.1.1',
    '169.254.169.254',
    '100.64.0.1',
    '0.0.0.0',
    '::1',
    '::',
    'fe80::1',
    'fd00::1',
    '::ffff:127.0.0.1',
    '224.0.0.1',
  ])
    assert.equal(isNonPublicAddress(a), true, a);
  for (const a of ['8.8.8.8', '140.82.112.33', '2606:4700::1111', '::ffff:8.8.8.8'])
    assert.equal(isNonPublicAddress(a), false, a);
});
