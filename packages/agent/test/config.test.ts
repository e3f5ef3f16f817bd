import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import {
  agentOptions,
  ConfigError,
  describeConfig,
  formatAddress,
  formatDuration,
  loadAgentConfig,
  parseAddress,
  parseDuration,
  renderOptionsMarkdown,
} from '../src/config.ts';
import { pinnerCommandTable } from '../src/pinner.ts';

const noFile = { readFile: () => '' };

function configError(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof ConfigError, `expected ConfigError, got ${err}`);
    return err;
  }
  assert.fail('expected a ConfigError');
}

describe('value parsers', () => {
  it('parses durations', () => {
    assert.equal(parseDuration('20ms'), 20);
    assert.equal(parseDuration('1s'), 1000);
    assert.equal(parseDuration('1.5s'), 1500);
    assert.equal(parseDuration('5m'), 300_000);
    assert.equal(parseDuration('1h30m'), 5_400_000);
    assert.equal(parseDuration('0'), 0);
    for (const bad of ['fast', '', '20', '1d', '-1s', '1s ms', 'ms']) {
      assert.throws(() => parseDuration(bad), /expected a duration like 20ms/, bad);
    }
    assert.equal(formatDuration(20), '20ms');
    assert.equal(formatDuration(60_000), '1m');
    assert.equal(formatDuration(1500), '1500ms');
  });

  it('parses addresses', () => {
    assert.deepEqual(parseAddress(':5000'), { host: '', port: 5000 });
    assert.deepEqual(parseAddress('127.0.0.11:5000'), { host: '127.0.0.11', port: 5000 });
    assert.deepEqual(parseAddress('[::1]:5000'), { host: '::1', port: 5000 });
    assert.deepEqual(parseAddress('node-1.cluster.local:80'), { host: 'node-1.cluster.local', port: 80 });
    assert.deepEqual(parseAddress(':0'), { host: '', port: 0 });
    for (const bad of ['5000', '::1:5000', '[::1]', '127.0.0.1:99999', 'a b:1', ':x', '[nope]:1']) {
      assert.throws(() => parseAddress(bad), Error, bad);
    }
    assert.throws(() => parseAddress(':5000', true), /with a host/);
    assert.equal(formatAddress({ host: '::1', port: 5000 }), '[::1]:5000');
    assert.equal(formatAddress({ host: '', port: 5000 }), ':5000');
  });
});

describe('loadAgentConfig', () => {
  it('gives the documented defaults', () => {
    const c = loadAgentConfig([], {}, noFile);
    assert.deepEqual(c.registryAddr, { host: '', port: 5000 });
    assert.deepEqual(c.routerAddr, { host: '', port: 5001 });
    assert.deepEqual(c.metricsAddr, { host: '', port: 9090 });
    assert.equal(c.containerdSock, '/run/containerd/containerd.sock');
    assert.equal(c.containerdNamespace, 'k8s.io');
    assert.equal(c.containerdContentPath, '/var/lib/containerd/io.containerd.content.v1.content');
    assert.equal(c.dataDir, undefined);
    assert.deepEqual(c.bootstrapPeers, []);
    assert.deepEqual(c.mirroredRegistries, []);
    assert.equal(c.resolveTags, true);
    assert.equal(c.mirrorResolveTimeout, 20);
    assert.equal(c.mirrorResolveRetries, 3);
    assert.equal(c.logLevel, 'info');
    assert.equal(c.sources.registryAddr, 'default');
    assert.ok(Object.isFrozen(c));
    assert.ok(Object.isFrozen(c.bootstrapPeers));
    assert.throws(() => {
      (c as { logLevel: string }).logLevel = 'debug';
    });
  });

  it('applies precedence flag > env > YAML > default', () => {
    const yaml = 'registryAddr: ":7000"\nrouterAddr: ":7001"\nmetricsAddr: ":7002"\nlogLevel: warn\n';
    const env = { FERRY_CONFIG: '/etc/ferry.yaml', FERRY_ROUTER_ADDR: ':8001', FERRY_REGISTRY_ADDR: ':8000' };
    const c = loadAgentConfig(['--registry-addr', ':9000'], env, {
      readFile: (p) => {
        assert.equal(p, '/etc/ferry.yaml');
        return yaml;
      },
    });
    assert.equal(c.registryAddr.port, 9000);
    assert.equal(c.sources.registryAddr, 'flag');
    assert.equal(c.routerAddr.port, 8001);
    assert.equal(c.sources.routerAddr, 'env');
    assert.equal(c.metricsAddr.port, 7002);
    assert.equal(c.sources.metricsAddr, 'file');
    assert.equal(c.logLevel, 'warn');
    assert.equal(c.mirrorResolveRetries, 3);
    assert.equal(c.sources.mirrorResolveRetries, 'default');
    assert.equal(c.config, '/etc/ferry.yaml');
  });

  it('parses booleans from flags, env and YAML', () => {
    assert.equal(loadAgentConfig(['--no-resolve-tags'], {}, noFile).resolveTags, false);
    assert.equal(loadAgentConfig(['--resolve-tags=false'], {}, noFile).resolveTags, false);
    assert.equal(
      loadAgentConfig(['--resolve-tags'], { FERRY_RESOLVE_TAGS: 'false' }, noFile).resolveTags,
      true,
    );
    assert.equal(loadAgentConfig([], { FERRY_RESOLVE_TAGS: '0' }, noFile).resolveTags, false);
    assert.equal(loadAgentConfig([], { FERRY_RESOLVE_TAGS: 'TRUE' }, noFile).resolveTags, true);
    const fromYaml = loadAgentConfig(['--config', 'f.yaml'], {}, { readFile: () => 'resolveTags: false\n' });
    assert.equal(fromYaml.resolveTags, false);
  });

  it('parses lists from flags (comma-separated, repeatable), env and YAML arrays', () => {
    const c = loadAgentConfig(
      ['--bootstrap-peers', '10.0.0.1:5001, [fd00::1]:5001', '--bootstrap-peers=/ip4/10.0.0.2/tcp/5001'],
      { FERRY_MIRRORED_REGISTRIES: 'https://docker.io,ghcr.io,http://127.0.0.1:5000', FERRY_CONFIG: 'x' },
      {
        readFile: () =>
          'registryFilters:\n  - ":latest$"\n  - "^quay\\\\.io/"\nbootstrapDns: [ferry-bootstrap.ferry.svc:5001]\n',
      },
    );
    assert.deepEqual(c.bootstrapPeers, ['10.0.0.1:5001', '[fd00::1]:5001', '/ip4/10.0.0.2/tcp/5001']);
    assert.deepEqual(c.mirroredRegistries, ['docker.io', 'ghcr.io', '127.0.0.1:5000']);
    assert.deepEqual(c.registryFilters, [':latest$', '^quay\\.io/']);
    assert.deepEqual(c.bootstrapDns, ['ferry-bootstrap.ferry.svc:5001']);
    assert.deepEqual(
      loadAgentConfig(['--mirrored-registries', '_default'], {}, noFile).mirroredRegistries,
      [],
    );
  });

  it('parses the first-pull switch and the spool size', () => {
    const d = loadAgentConfig([], {}, noFile);
    assert.equal(d.firstPull, true);
    assert.equal(d.spoolMaxBytes, 4 * 2 ** 30);
    const c = loadAgentConfig(['--no-first-pull', '--spool-max-bytes=512Mi'], {}, noFile);
    assert.equal(c.firstPull, false);
    assert.equal(c.spoolMaxBytes, 512 * 2 ** 20);
    assert.equal(describeConfig(c).spoolMaxBytes, '512Mi');
    assert.equal(loadAgentConfig([], { FERRY_SPOOL_MAX_BYTES: '10G' }, noFile).spoolMaxBytes, 10e9);
    const e = configError(() => loadAgentConfig(['--spool-max-bytes', 'lots'], {}, noFile));
    assert.match(
      e.message,
      /spoolMaxBytes \(--spool-max-bytes \/ FERRY_SPOOL_MAX_BYTES\): expected a size like 2Gi or 500M, got "lots" \(from flag\)$/,
    );
  });

  it('names field, flag, env and source in errors', () => {
    const e1 = configError(() => loadAgentConfig(['--mirror-resolve-timeout', 'fast'], {}, noFile));
    assert.match(
      e1.message,
      /^invalid config: mirrorResolveTimeout \(--mirror-resolve-timeout \/ FERRY_MIRROR_RESOLVE_TIMEOUT\): expected a duration like 20ms, got "fast" \(from flag\)$/,
    );
    assert.deepEqual(
      e1.issues.map((i) => [i.field, i.source]),
      [['mirrorResolveTimeout', 'flag']],
    );
    const e2 = configError(() => loadAgentConfig([], { FERRY_MIRROR_RESOLVE_RETRIES: '2.5' }, noFile));
    assert.match(e2.message, /mirrorResolveRetries .*expected an integer.*\(from env\)/);
    const e3 = configError(() => loadAgentConfig([], { FERRY_REGISTRY_ADDR: '5000' }, noFile));
    assert.match(e3.message, /registryAddr \(--registry-addr \/ FERRY_REGISTRY_ADDR\): expected an address/);
  });

  it('reports every bad value of a YAML file, unknown keys and bad regexes', () => {
    const yaml =
      'registryAdr: ":1"\nregistryFilters: ["ok", "(unclosed"]\nresolveTags: maybe\nmirrorResolveRetries: 0\n';
    const e = configError(() => loadAgentConfig(['--config', '/c.yaml'], {}, { readFile: () => yaml }));
    const lines = e.message.split('\n');
    assert.equal(lines.length, 4, e.message);
    assert.ok(lines.every((l) => l.startsWith('invalid config: ')));
    assert.match(
      e.message,
      /unknown key "registryAdr" in config file \/c.yaml \(did you mean registryAddr\?\)/,
    );
    assert.match(e.message, /registryFilters .*invalid regular expression "\(unclosed"/);
    assert.match(
      e.message,
      /resolveTags .*expected true or false, got "maybe" \(from config file \/c.yaml\)/,
    );
    assert.match(e.message, /mirrorResolveRetries .*between 1 and 100, got 0/);
  });

  it('rejects a file that cannot be read or parsed, and unknown flags', () => {
    const enoent = configError(() =>
      loadAgentConfig(
        [],
        { FERRY_CONFIG: '/nope.yaml' },
        {
          readFile: () => {
            throw new Error('ENOENT: no such file');
          },
        },
      ),
    );
    assert.match(
      enoent.message,
      /config \(--config \/ FERRY_CONFIG\): cannot read config file \/nope.yaml.*from env/,
    );
    assert.match(
      configError(() => loadAgentConfig(['--config', 'x'], {}, { readFile: () => 'a: [' })).message,
      /cannot parse/,
    );
    assert.match(
      configError(() => loadAgentConfig(['--config', 'x'], {}, { readFile: () => '- 1\n' })).message,
      /mapping/,
    );
    assert.match(
      configError(() => loadAgentConfig(['--bogus'], {}, noFile)).message,
      /unknown option '--bogus'/,
    );
  });

  it('rejects bad registries, peers and clashing ports', () => {
    assert.match(
      configError(() => loadAgentConfig(['--mirrored-registries', 'https://docker.io/v2'], {}, noFile))
        .message,
      /mirroredRegistries .*a path is not allowed/,
    );
    assert.match(
      configError(() => loadAgentConfig(['--bootstrap-peers', 'nohost'], {}, noFile)).message,
      /bootstrapPeers/,
    );
    assert.match(
      configError(() => loadAgentConfig(['--metrics-addr', '127.0.0.1:5000'], {}, noFile)).message,
      /metricsAddr .*port 5000 is already used by registryAddr/,
    );
    // Port 0 (ephemeral) never clashes; distinct hosts may share a port.
    loadAgentConfig(['--registry-addr', ':0', '--router-addr', ':0', '--metrics-addr', ':0'], {}, noFile);
    loadAgentConfig(['--registry-addr', '127.0.0.11:5000', '--metrics-addr', '127.0.0.12:5000'], {}, noFile);
  });

  it('ignores empty env values', () => {
    const c = loadAgentConfig([], { FERRY_REGISTRY_ADDR: '', FERRY_DATA_DIR: '' }, noFile);
    assert.equal(c.registryAddr.port, 5000);
    assert.equal(c.dataDir, undefined);
  });

  it('has one table row per config field, with derived flag/env/YAML names', () => {
    const c = loadAgentConfig([], {}, noFile);
    const fields = Object.keys(c).filter((k) => k !== 'sources' && k !== 'upstreamEndpoints');
    assert.deepEqual(
      agentOptions.map((o) => o.name),
      fields,
    );
    for (const o of agentOptions) {
      assert.match(o.flag, /^--[a-z]+(-[a-z]+)*$/);
      assert.equal(o.env, `FERRY_${o.flag.slice(2).replaceAll('-', '_').toUpperCase()}`);
      assert.ok(o.description.length > 10);
    }
    assert.deepEqual(Object.keys(describeConfig(c)), fields);
    assert.equal(describeConfig(c).mirrorResolveTimeout, '20ms');
  });

  it('both READMEs embed the generated option table (cell by cell; formatters may pad it)', () => {
    for (const file of ['../README.md', '../../../README.md'])
      checkTable(readFileSync(new URL(file, import.meta.url), 'utf8'), renderOptionsMarkdown());
  });

  it('the README embeds the `ferry pinner` option table', () => {
    checkTable(
      readFileSync(new URL('../../../README.md', import.meta.url), 'utf8'),
      pinnerCommandTable.renderMarkdown(),
    );
  });

  function checkTable(readme: string, markdown: string): void {
    // Table rows as trimmed cells; separator rows dropped.
    const rows = (text: string) =>
      text
        .split('\n')
        .filter((l) => l.startsWith('|') && !/^\|[\s|:-]+\|$/.test(l.trim()))
        .map((l) =>
          l
            .trim()
            .slice(1, -1)
            .split(/(?<!\\)\|/)
            .map((c) => c.trim())
            .join(' | '),
        );
    const expected = rows(markdown);
    const actual = rows(readme);
    // Found by its first option row (the header rows of several tables are alike).
    const start = actual.indexOf(expected[1]!) - 1;
    assert.ok(start >= 0, 'README lacks the option table: paste the rendered Markdown');
    assert.deepEqual(
      actual.slice(start, start + expected.length),
      expected,
      'README option table is out of date',
    );
  }
});

describe('tag policy options', () => {
  it('defaults: verify, no rules, 1s upstream timeout, no credentials, no endpoints', () => {
    const c = loadAgentConfig([], {}, noFile);
    assert.equal(c.defaultTagMode, 'verify');
    assert.deepEqual(c.tagPolicy, []);
    assert.equal(c.upstreamTimeout, 1000);
    assert.equal(c.upstreamCredentials, undefined);
    assert.deepEqual(c.upstreamEndpoints, {});
  });

  it('takes rules as pattern=mode from flags and env, and as strings or {pattern, mode} in YAML', () => {
    const flags = loadAgentConfig(
      [
        '--tag-policy',
        ':latest$=upstream',
        '--tag-policy',
        '^ghcr\\.io/=cluster',
        '--default-tag-mode',
        'Cluster',
      ],
      {},
      noFile,
    );
    assert.deepEqual(flags.tagPolicy, [
      { pattern: ':latest$', mode: 'upstream' },
      { pattern: '^ghcr\\.io/', mode: 'cluster' },
    ]);
    assert.equal(flags.defaultTagMode, 'cluster');
    const env = loadAgentConfig([], { FERRY_TAG_POLICY: ':latest$=upstream,:dev-=cluster' }, noFile);
    assert.deepEqual(
      env.tagPolicy.map((r) => r.mode),
      ['upstream', 'cluster'],
    );
    const yaml = loadAgentConfig(
      ['--config', 'f.yaml'],
      {},
      {
        readFile: () =>
          'tagPolicy:\n  - {pattern: ":latest$", mode: upstream}\n  - "^x/a{1,2}:v=verify"\ndefaultTagMode: upstream\nupstreamTimeout: 250ms\nupstreamCredentials: /etc/ferry/config.json\n',
      },
    );
    assert.deepEqual(yaml.tagPolicy, [
      { pattern: ':latest$', mode: 'upstream' },
      { pattern: '^x/a{1,2}:v', mode: 'verify' },
    ]);
    assert.equal(yaml.defaultTagMode, 'upstream');
    assert.equal(yaml.upstreamTimeout, 250);
    assert.equal(yaml.upstreamCredentials, '/etc/ferry/config.json');
  });

  it('names bad rules and modes', () => {
    let e = configError(() => loadAgentConfig(['--tag-policy', ':latest$=sometimes'], {}, noFile));
    assert.match(
      e.message,
      /tagPolicy \(--tag-policy \/ FERRY_TAG_POLICY\): .*mode must be one of cluster, upstream, verify/,
    );
    e = configError(() => loadAgentConfig(['--tag-policy', '(x=cluster'], {}, noFile));
    assert.match(e.message, /invalid tagPolicy pattern "\(x"/);
    e = configError(() => loadAgentConfig([], { FERRY_DEFAULT_TAG_MODE: 'fresh' }, noFile));
    assert.match(
      e.message,
      /defaultTagMode .*expected one of cluster, upstream, verify, got "fresh" \(from env\)/,
    );
    e = configError(() =>
      loadAgentConfig(
        ['--config', 'c.yaml'],
        {},
        { readFile: () => 'tagPolicy:\n  - {pattern: x, mod: cluster}\n' },
      ),
    );
    assert.match(e.message, /unknown key "mod" in tag rule/);
  });

  it('derives upstream endpoints from --mirrored-registries URLs', () => {
    const c = loadAgentConfig(
      ['--mirrored-registries', 'http://127.0.0.2:5000,https://docker.io,ghcr.io,https://quay.io'],
      {},
      noFile,
    );
    assert.deepEqual(c.upstreamEndpoints, {
      '127.0.0.2:5000': 'http://127.0.0.2:5000',
      'ghcr.io': 'https://ghcr.io',
      'quay.io': 'https://quay.io',
    });
    assert.deepEqual(
      loadAgentConfig(['--mirrored-registries', '_default'], {}, noFile).upstreamEndpoints,
      {},
    );
  });
});
