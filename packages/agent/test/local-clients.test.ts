import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ConfigError, loadAgentConfig } from '../src/config.ts';
import { localClientMatcher } from '../src/local-clients.ts';

const noFile = { readFile: () => '' };

describe('--local-clients', () => {
  it('defaults to loopback, the advertised host and the listen host', () => {
    const local = localClientMatcher([], ['10.0.0.5', '10.0.0.6', undefined]);
    for (const ip of ['127.0.0.1', '127.9.9.9', '::1', '::ffff:127.0.0.1', '10.0.0.5', '::ffff:10.0.0.6'])
      assert.ok(local(ip), ip);
    for (const ip of ['10.0.0.7', '192.168.1.5', '::ffff:10.0.0.7', 'fd00::1']) assert.ok(!local(ip), ip);
  });

  it('a list replaces the default: exactly its addresses and CIDRs (IPv4-mapped clients match as IPv4)', () => {
    const local = localClientMatcher(['10.0.0.5', '10.1.0.0/16', 'fd00::/8'], ['10.0.0.9']);
    for (const ip of ['10.0.0.5', '::ffff:10.0.0.5', '10.1.200.3', 'fd12::7']) assert.ok(local(ip), ip);
    for (const ip of ['127.0.0.1', '::1', '10.0.0.9', '10.2.0.1', 'fe80::1', 'not-an-ip'])
      assert.ok(!local(ip), ip);
  });

  it('is read from env and flags; a bad item is a config error naming the field, not echoing the rest', () => {
    const c = loadAgentConfig([], { FERRY_LOCAL_CLIENTS: '10.0.0.5, 10.1.0.0/16' }, noFile);
    assert.deepEqual(c.localClients, ['10.0.0.5', '10.1.0.0/16']);
    for (const bad of ['10.0.0.300', '10.0.0.0/33', 'node-a', '10.0.0.0/8/1', 'fd00::/129']) {
      let err: unknown;
      try {
        loadAgentConfig([`--local-clients=10.0.0.5,${bad}`], {}, noFile);
      } catch (e) {
        err = e;
      }
      assert.ok(err instanceof ConfigError, bad);
      assert.match(
        err.message,
        /^invalid config: localClients \(--local-clients \/ FERRY_LOCAL_CLIENTS\): expected an IP address or CIDR/,
      );
      assert.ok(err.message.includes(JSON.stringify(bad)), err.message);
    }
  });
});
