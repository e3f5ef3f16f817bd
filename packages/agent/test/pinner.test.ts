import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { main } from '../src/cli.ts';
import { ConfigError, loadAgentConfig } from '../src/config.ts';
import { checkAgentPinnerConfig, resolvePinnerCommandConfig } from '../src/pinner.ts';

function io(env: Record<string, string> = {}) {
  const out: string[] = [];
  const err: string[] = [];
  return { io: { env, stdout: (s: string) => out.push(s), stderr: (s: string) => err.push(s) }, out, err };
}

describe('ferry pinner configuration', () => {
  it('defaults, env (shared with the agent) and POD_NAMESPACE', () => {
    const c = resolvePinnerCommandConfig(
      { tlsCert: '/tls/c', include: ['^a', 'b'] },
      { FERRY_PINNER_TLS_KEY: '/tls/k', FERRY_PINNER_BUDGET: '1500ms', POD_NAMESPACE: 'ferry' },
    );
    assert.deepEqual(c.addr, { host: '', port: 8443 });
    assert.equal(c.tlsCert, '/tls/c');
    assert.equal(c.tlsKey, '/tls/k');
    assert.equal(c.budget, 1500);
    assert.equal(c.freshFor, 10_000);
    assert.equal(c.clusterUrl, 'http://127.0.0.1:5000');
    assert.deepEqual(c.include, ['^a', 'b']);
    assert.equal(c.namespace, 'ferry');
    assert.equal(c.dataDir, undefined);
  });

  it('names every bad field and where it came from', () => {
    assert.throws(
      () =>
        resolvePinnerCommandConfig(
          { budget: 'soon', exclude: ['('] },
          { FERRY_PINNER_CLUSTER_URL: 'ftp://x' },
        ),
      (err: Error) => {
        assert.ok(err instanceof ConfigError);
        assert.match(err.message, /--tls-cert \/ FERRY_PINNER_TLS_CERT: required/);
        assert.match(
          err.message,
          /--budget \/ FERRY_PINNER_BUDGET: expected a duration like 20ms, got "soon" \(from flag\)/,
        );
        assert.match(err.message, /--exclude \/ FERRY_PINNER_EXCLUDE: invalid regular expression "\("/);
        assert.match(
          err.message,
          /--cluster-url \/ FERRY_PINNER_CLUSTER_URL: expected an http\(s\) URL.*\(from env\)/,
        );
        return true;
      },
    );
  });

  it('`ferry pinner` without certificate exits 2 with one line per problem', async () => {
    const t = io();
    assert.equal(await main(['pinner', '--tls-key', '/k'], t.io), 2);
    assert.match(t.err.join(''), /^invalid config: --tls-cert \/ FERRY_PINNER_TLS_CERT: required/);
  });

  it('agent --pinner needs a certificate and key', () => {
    const c = loadAgentConfig(['--pinner', '--pinner-tls-key=/k'], {});
    assert.equal(c.pinner, true);
    assert.throws(
      () => checkAgentPinnerConfig(c),
      /pinnerTlsCert \(--pinner-tls-cert \/ FERRY_PINNER_TLS_CERT\): required with --pinner/,
    );
    checkAgentPinnerConfig(loadAgentConfig([], {}));
    const env = loadAgentConfig([], {
      FERRY_PINNER: 'true',
      FERRY_PINNER_TLS_CERT: '/c',
      FERRY_PINNER_TLS_KEY: '/k',
      FERRY_PINNER_INCLUDE: 'a,b',
    });
    checkAgentPinnerConfig(env);
    assert.deepEqual(env.pinnerInclude, ['a', 'b']);
    assert.deepEqual(env.pinnerAddr, { host: '', port: 8443 });
  });
});
