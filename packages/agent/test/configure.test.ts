import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import { parse as parseToml } from 'smol-toml';
import {
  bracketBareIPv6,
  ConfigureError,
  cleanupHosts,
  configureHosts,
  renderHostsToml,
} from '../src/configure.ts';

const HEADER =
  '# Written by `ferry configure`: Ferry mirrors first, then the upstream (server).\n' +
  '# The original configuration is kept in ../_backup; `ferry configure --cleanup` restores it.\n\n';

async function tempDir(t: TestContext): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'ferry-configure-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return join(dir, 'certs.d');
}

/** The whole tree as { 'rel/path': content } (directories end with '/'). */
async function snapshot(root: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  async function walk(rel: string): Promise<void> {
    for (const name of (await readdir(join(root, rel))).sort()) {
      const p = rel === '' ? name : `${rel}/${name}`;
      if ((await stat(join(root, p))).isDirectory()) {
        out[`${p}/`] = '';
        await walk(p);
      } else out[p] = await readFile(join(root, p), 'utf8');
    }
  }
  await walk('');
  return out;
}

const ORIGINAL_DOCKER = `server = "https://docker-mirror.corp.example"

[host."https://cache.corp.example"]
capabilities = ["pull"]
ca = "/etc/containerd/certs.d/docker.io/ca.crt"
`;

async function seedOriginal(dir: string): Promise<void> {
  await mkdir(join(dir, 'docker.io'), { recursive: true });
  await writeFile(join(dir, 'docker.io', 'hosts.toml'), ORIGINAL_DOCKER);
  await writeFile(join(dir, 'docker.io', 'ca.crt'), 'CERT');
  await mkdir(join(dir, 'private.example:8443'), { recursive: true });
  await writeFile(
    join(dir, 'private.example:8443', 'hosts.toml'),
    'server = "https://private.example:8443"\n',
  );
}

describe('renderHostsToml', () => {
  it('golden: docker.io with one mirror', () => {
    assert.equal(
      renderHostsToml({
        server: 'https://registry-1.docker.io',
        mirrors: ['http://10.0.0.5:30020'],
        capabilities: ['pull', 'resolve'],
        dialTimeout: '200ms',
      }),
      `${HEADER}server = "https://registry-1.docker.io"

[host."http://10.0.0.5:30020"]
capabilities = [ "pull", "resolve" ]
dial_timeout = "200ms"

`,
    );
  });

  it('golden: _default without server, two mirrors, pull only', () => {
    assert.equal(
      renderHostsToml({
        mirrors: ['http://[fd00::5]:30020', 'http://zot.example:5000'],
        capabilities: ['pull'],
        dialTimeout: '200ms',
      }),
      `${HEADER}[host."http://[fd00::5]:30020"]
capabilities = [ "pull" ]
dial_timeout = "200ms"

[host."http://zot.example:5000"]
capabilities = [ "pull" ]
dial_timeout = "200ms"

`,
    );
  });
});

describe('configureHosts', () => {
  it('writes one hosts.toml per mirrored registry (golden)', async (t) => {
    const dir = await tempDir(t);
    const r = await configureHosts({
      hostsDir: dir,
      mirrorTargets: ['http://127.0.0.11:5000'],
      mirroredRegistries: [
        'https://docker.io',
        'ghcr.io',
        'http://127.0.0.1:5000',
        'https://index.docker.io',
      ],
    });
    assert.equal(r.backedUp, true);
    assert.deepEqual(r.files, ['127.0.0.1:5000/hosts.toml', 'docker.io/hosts.toml', 'ghcr.io/hosts.toml']);
    const tree = await snapshot(dir);
    assert.deepEqual(Object.keys(tree), [
      '127.0.0.1:5000/',
      '127.0.0.1:5000/hosts.toml',
      '_backup/',
      'docker.io/',
      'docker.io/hosts.toml',
      'ghcr.io/',
      'ghcr.io/hosts.toml',
    ]);
    const mirror =
      '[host."http://127.0.0.11:5000"]\ncapabilities = [ "pull", "resolve" ]\ndial_timeout = "200ms"\n\n';
    assert.equal(
      tree['docker.io/hosts.toml'],
      `${HEADER}server = "https://registry-1.docker.io"\n\n${mirror}`,
    );
    assert.equal(tree['ghcr.io/hosts.toml'], `${HEADER}server = "https://ghcr.io"\n\n${mirror}`);
    assert.equal(tree['127.0.0.1:5000/hosts.toml'], `${HEADER}server = "http://127.0.0.1:5000"\n\n${mirror}`);
  });

  it('writes only _default (no server) when the list is empty, pull-only without resolve-tags', async (t) => {
    const dir = await tempDir(t);
    await configureHosts({ hostsDir: dir, mirrorTargets: ['http://127.0.0.11:5000'], resolveTags: false });
    const tree = await snapshot(dir);
    assert.deepEqual(Object.keys(tree), ['_backup/', '_default/', '_default/hosts.toml']);
    assert.equal(
      tree['_default/hosts.toml'],
      `${HEADER}[host."http://127.0.0.11:5000"]\ncapabilities = [ "pull" ]\ndial_timeout = "200ms"\n\n`,
    );
    assert.deepEqual(JSON.parse(JSON.stringify(parseToml(tree['_default/hosts.toml']!))), {
      host: { 'http://127.0.0.11:5000': { capabilities: ['pull'], dial_timeout: '200ms' } },
    });
  });

  it('backs up once, is idempotent, and cleanup restores the original', async (t) => {
    const dir = await tempDir(t);
    await seedOriginal(dir);
    const before = await snapshot(dir);
    const opts = {
      hostsDir: dir,
      mirrorTargets: ['http://127.0.0.11:5000'],
      mirroredRegistries: ['docker.io'],
    };
    const first = await configureHosts(opts);
    assert.equal(first.backedUp, true);
    const after1 = await snapshot(dir);
    // The backup holds exactly the original tree.
    for (const [p, content] of Object.entries(before)) assert.equal(after1[`_backup/${p}`], content, p);
    // docker.io replaced (no prepend: original hosts and CA not kept); the unrelated registry stays as it was.
    assert.ok(!after1['docker.io/hosts.toml']!.includes('cache.corp.example'));
    assert.equal(after1['docker.io/ca.crt'], undefined);
    assert.equal(after1['private.example:8443/hosts.toml'], before['private.example:8443/hosts.toml']);

    const second = await configureHosts(opts);
    assert.equal(second.backedUp, false);
    assert.deepEqual(second.changed, []);
    assert.deepEqual(await snapshot(dir), after1);

    // A later run with other options never overwrites the backup.
    await configureHosts({ ...opts, mirroredRegistries: ['ghcr.io'] });
    const after3 = await snapshot(dir);
    for (const [p, content] of Object.entries(before)) assert.equal(after3[`_backup/${p}`], content, p);
    assert.equal(
      after3['docker.io/hosts.toml'],
      ORIGINAL_DOCKER,
      'docker.io no longer mirrored: original back',
    );
    assert.ok(after3['ghcr.io/hosts.toml']);

    assert.deepEqual(await cleanupHosts(dir), { restored: true });
    assert.deepEqual(await snapshot(dir), before);
    assert.deepEqual(await cleanupHosts(dir), { restored: false });
    assert.deepEqual(await snapshot(dir), before);
  });

  it('--prepend-existing keeps original hosts after Ferry, the original server, and other files', async (t) => {
    const dir = await tempDir(t);
    await seedOriginal(dir);
    await configureHosts({
      hostsDir: dir,
      mirrorTargets: ['http://127.0.0.11:5000'],
      mirroredRegistries: ['https://docker.io'],
      prependExisting: true,
    });
    const tree = await snapshot(dir);
    assert.equal(tree['docker.io/ca.crt'], 'CERT');
    assert.equal(
      tree['docker.io/hosts.toml'],
      `${HEADER}server = "https://docker-mirror.corp.example"

[host."http://127.0.0.11:5000"]
capabilities = [ "pull", "resolve" ]
dial_timeout = "200ms"

[host."https://cache.corp.example"]
capabilities = [ "pull" ]
ca = "/etc/containerd/certs.d/docker.io/ca.crt"

`,
    );
    // Idempotent with prepend too (the originals come from the backup, not from Ferry's own files).
    const again = await configureHosts({
      hostsDir: dir,
      mirrorTargets: ['http://127.0.0.11:5000'],
      mirroredRegistries: ['https://docker.io'],
      prependExisting: true,
    });
    assert.deepEqual(again.changed, []);
    assert.deepEqual(await snapshot(dir), tree);
  });

  it('--prepend-existing with all registries also mirrors original registry dirs that would shadow _default', async (t) => {
    const dir = await tempDir(t);
    await seedOriginal(dir);
    const r = await configureHosts({
      hostsDir: dir,
      mirrorTargets: ['http://127.0.0.11:5000'],
      prependExisting: true,
    });
    assert.deepEqual(r.files, [
      '_default/hosts.toml',
      'docker.io/hosts.toml',
      'private.example:8443/hosts.toml',
    ]);
    const priv = parseToml((await snapshot(dir))['private.example:8443/hosts.toml']!) as Record<
      string,
      unknown
    >;
    assert.equal(priv.server, 'https://private.example:8443');
    assert.deepEqual(Object.keys(priv.host as object), ['http://127.0.0.11:5000']);
  });

  it('brackets an IPv6 node address substituted bare into a mirror target', async (t) => {
    assert.equal(bracketBareIPv6('http://fd00::5:5000'), 'http://[fd00::5]:5000');
    assert.equal(bracketBareIPv6('http://[fd00::5]:5000'), 'http://[fd00::5]:5000');
    assert.equal(bracketBareIPv6('http://10.0.0.5:5000'), 'http://10.0.0.5:5000');
    assert.equal(bracketBareIPv6('http://registry.local:5000'), 'http://registry.local:5000');
    const dir = await tempDir(t);
    await configureHosts({
      hostsDir: dir,
      mirrorTargets: ['http://fd00::5:5000'],
      mirroredRegistries: ['docker.io'],
    });
    const docker = parseToml((await snapshot(dir))['docker.io/hosts.toml']!) as Record<string, unknown>;
    assert.deepEqual(Object.keys(docker.host as object), ['http://[fd00::5]:5000']);
  });

  it('rejects bad URLs with clear errors', async (t) => {
    const dir = await tempDir(t);
    const cases: [Parameters<typeof configureHosts>[0], RegExp][] = [
      [{ hostsDir: dir, mirrorTargets: [] }, /at least one mirror target/],
      [
        { hostsDir: dir, mirrorTargets: ['127.0.0.1:5000'] },
        /mirror target "127.0.0.1:5000": expected a URL/,
      ],
      [{ hostsDir: dir, mirrorTargets: ['ftp://x:1'] }, /scheme must be http or https/],
      [{ hostsDir: dir, mirrorTargets: ['http://x:1/v2'] }, /a path is not allowed/],
      [{ hostsDir: dir, mirrorTargets: ['http://u:p@x:1'] }, /user info is not allowed/],
      [
        { hostsDir: dir, mirrorTargets: ['http://x:1'], mirroredRegistries: ['https://docker.io?x=1'] },
        /query/,
      ],
    ];
    for (const [opts, re] of cases) {
      await assert.rejects(
        configureHosts(opts),
        (err: Error) => err instanceof ConfigureError && re.test(err.message),
      );
    }
    // Nothing was written for invalid options.
    await assert.rejects(stat(dir));
  });
});
