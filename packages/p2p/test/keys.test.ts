import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { test } from 'node:test';
import { multiaddr } from '@multiformats/multiaddr';
import {
  formatAgentVersion,
  parseBootstrapDns,
  parseBootstrapPeer,
  parseRegistryPort,
  pickHost,
} from '../src/address.ts';
import { InvalidKeyError, keyToCid } from '../src/index.ts';

const RAW = 0x55;
const EMPTY_SHA256 = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';

test('digest key: the CID multihash is the digest itself (known vector: the empty raw block)', () => {
  const cid = keyToCid(`sha256:${EMPTY_SHA256}`);
  assert.equal(cid.version, 1);
  assert.equal(cid.code, RAW);
  assert.equal(cid.multihash.code, 0x12);
  assert.equal(cid.multihash.size, 32);
  assert.equal(Buffer.from(cid.multihash.digest).toString('hex'), EMPTY_SHA256);
  assert.equal(cid.toString(), 'bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku');
});

test('digest key round-trips: digest bytes recovered from the CID', () => {
  const hex = createHash('sha256').update('some layer').digest('hex');
  const cid = keyToCid(`sha256:${hex}`);
  assert.equal(`sha256:${Buffer.from(cid.multihash.digest).toString('hex')}`, `sha256:${hex}`);
});

test('sha512 digest maps to multihash code 0x13', () => {
  const hex = createHash('sha512').update('x').digest('hex');
  const cid = keyToCid(`sha512:${hex}`);
  assert.equal(cid.multihash.code, 0x13);
  assert.equal(cid.multihash.size, 64);
  assert.equal(Buffer.from(cid.multihash.digest).toString('hex'), hex);
});

test('tag key: sha2-256 of the UTF-8 string, CIDv1 raw', () => {
  const key = 'docker.io/library/nginx:1.27';
  const cid = keyToCid(key);
  const expected = createHash('sha256').update(Buffer.from(key, 'utf8')).digest('hex');
  assert.equal(cid.version, 1);
  assert.equal(cid.code, RAW);
  assert.equal(cid.multihash.code, 0x12);
  assert.equal(Buffer.from(cid.multihash.digest).toString('hex'), expected);
  // a tag key and the digest of its text hit the same DHT key; the string "sha256:<hex>" is not hashed
  assert.ok(keyToCid(`sha256:${expected}`).equals(cid));
  assert.ok(!keyToCid('ghcr.io/a/b:c').equals(cid));
  // non-ASCII tag keys hash their UTF-8 bytes
  const unicode = 'registry.example/ünï:tag';
  assert.equal(
    Buffer.from(keyToCid(unicode).multihash.digest).toString('hex'),
    createHash('sha256').update(Buffer.from(unicode, 'utf8')).digest('hex'),
  );
});

test('invalid digests and empty keys are rejected with a clear error', () => {
  for (const bad of [
    '',
    'sha256:xyz',
    `sha256:${EMPTY_SHA256.slice(1)}`,
    `sha256:${EMPTY_SHA256.toUpperCase()}`,
    `sha512:${EMPTY_SHA256}`,
    'md5:d41d8cd98f00b204e9800998ecf8427e',
  ]) {
    assert.throws(() => keyToCid(bad), InvalidKeyError, bad);
  }
  assert.throws(() => keyToCid('md5:d41d8cd98f00b204e9800998ecf8427e'), /unsupported digest algorithm "md5"/);
  assert.throws(() => keyToCid('sha256:abc'), /expected 64 lowercase hex/);
});

test('bootstrap entries: ip:port, [v6]:port, multiaddr with or without /p2p', () => {
  assert.equal(parseBootstrapPeer('10.0.0.7:4001').addr.toString(), '/ip4/10.0.0.7/tcp/4001');
  assert.equal(parseBootstrapPeer('[fd00::7]:4001').addr.toString(), '/ip6/fd00::7/tcp/4001');
  const id = '12D3KooWBJWvX2Jpcy9iAzcGXxSwXUndMA7Pzcgkm7ChVeAnBogY';
  assert.equal(
    parseBootstrapPeer(`/ip4/10.0.0.7/tcp/4001/p2p/${id}`).addr.toString(),
    `/ip4/10.0.0.7/tcp/4001/p2p/${id}`,
  );
  assert.deepEqual(parseBootstrapDns('ferry.kube-system.svc:4001'), {
    host: 'ferry.kube-system.svc',
    port: 4001,
  });
  for (const bad of [
    '10.0.0.7',
    'node-a:4001',
    '10.0.0.7:0',
    '10.0.0.7:99999',
    'fd00::7:4001',
    '[10.0.0.1]:1',
    '/ip4/x',
  ]) {
    assert.throws(() => parseBootstrapPeer(bad), Error, bad);
  }
  assert.throws(() => parseBootstrapDns('name-without-port'), /host:port/);
});

test('pickHost prefers routable addresses, loopback only when alone', () => {
  const m = (s: string) => multiaddr(s);
  assert.equal(pickHost([m('/ip4/127.0.0.1/tcp/1'), m('/ip4/10.1.2.3/tcp/1')]), '10.1.2.3');
  assert.equal(pickHost([m('/ip6/::1/tcp/1'), m('/ip6/fd00::5/tcp/1')]), 'fd00::5');
  assert.equal(pickHost([m('/ip6/fd00::5/tcp/1'), m('/ip4/10.1.2.3/tcp/1')]), '10.1.2.3');
  assert.equal(pickHost([m('/ip6/fe80::1/tcp/1'), m('/ip4/127.0.0.9/tcp/1')]), 'fe80::1');
  assert.equal(pickHost([m('/ip4/127.0.0.9/tcp/1')]), '127.0.0.9');
  assert.equal(pickHost([m('/ip4/0.0.0.0/tcp/1')]), undefined);
  assert.equal(pickHost([]), undefined);
});

test('registry port travels in the agent version', () => {
  assert.equal(formatAgentVersion('1.2.3', 5000), 'ferry/1.2.3 registry=5000');
  assert.equal(parseRegistryPort(formatAgentVersion('1.2.3', 5000)), 5000);
  assert.equal(parseRegistryPort('js-libp2p/3.3.11 node/24'), undefined);
  assert.equal(parseRegistryPort('ferry/1 registry=0'), undefined);
  assert.equal(parseRegistryPort('ferry/1 registry=70000'), undefined);
  assert.equal(parseRegistryPort(undefined), undefined);
});
