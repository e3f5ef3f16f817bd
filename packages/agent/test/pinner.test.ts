import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { main } from '../src/cli.ts';
import { agentOptions, ConfigError, loadAgentConfig } from '../src/config.ts';
import { checkAgentPinnerConfig, pinnerCommandTable, resolvePinnerCommandConfig } from '../src/pinner.ts';

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
        assert.match(err.message, /tlsCert \(--tls-cert \/ FERRY_PINNER_TLS_CERT\): required/);
        assert.match(
          err.message,
          /budget \(--budget \/ FERRY_PINNER_BUDGET\): expected a duration like 20ms, got "soon" \(from flag\)/,
        );
        assert.match(
          err.message,
          /exclude \(--exclude \/ FERRY_PINNER_EXCLUDE\): invalid regular expression "\("/,
        );
        assert.match(
          err.message,
          /clusterUrl \(--cluster-url \/ FERRY_PINNER_CLUSTER_URL\): expected an http\(s\) URL.*\(from env\)/,
        );
        return true;
      },
    );
  });

  it('`ferry pinner` without certificate exits 2 with one line per problem', async () => {
    const t = io();
    assert.equal(await main(['pinner', '--tls-key', '/k'], t.io), 2);
    assert.match(
      t.err.join(''),
      /^invalid config: tlsCert \(--tls-cert \/ FERRY_PINNER_TLS_CERT\): required/,
    );
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

  it('`ferry pinner` reads the agent environment: each of its env vars is an agent option (one env block fits both)', () => {
    const agentEnv = new Map(agentOptions.map((o) => [o.env, o]));
    for (const o of pinnerCommandTable.options) {
      if (o.name === 'clusterUrl') continue; // the agent is the cluster; only the lone pinner asks it
      const a = agentEnv.get(o.env);
      assert.ok(a, `${o.flag}: ${o.env} is not an agent option`);
      assert.equal(o.type, a.type, o.flag);
      assert.deepEqual(o.default, a.default, o.flag);
    }
  });

  it("agent and pinner take Ferry's namespace from POD_NAMESPACE when nothing sets it", () => {
    assert.equal(loadAgentConfig([], { POD_NAMESPACE: 'ferry' }).pinnerNamespace, 'ferry');
    assert.equal(
      loadAgentConfig([], { POD_NAMESPACE: 'ferry', FERRY_PINNER_NAMESPACE: 'own' }).pinnerNamespace,
      'own',
    );
  });
});
