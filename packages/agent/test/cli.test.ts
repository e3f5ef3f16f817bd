import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { chmod, copyFile, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { promisify } from 'node:util';
import { main } from '../src/cli.ts';

function io(env: Record<string, string> = {}) {
  const out: string[] = [];
  const err: string[] = [];
  return {
    io: { env, stdout: (s: string) => out.push(s), stderr: (s: string) => err.push(s) },
    out: () => out.join(''),
    err: () => err.join(''),
  };
}

describe('ferry CLI', () => {
  it('exits 2 with a one-line error (no stack) for bad config', async () => {
    const c = io({ FERRY_MIRROR_RESOLVE_RETRIES: 'many' });
    assert.equal(await main(['agent'], c.io), 2);
    assert.equal(
      c.err(),
      'invalid config: mirrorResolveRetries (--mirror-resolve-retries / FERRY_MIRROR_RESOLVE_RETRIES): expected an integer between 1 and 100, got "many" (from env)\n',
    );
    const u = io();
    assert.equal(await main(['agent', '--nope'], u.io), 2);
    assert.match(u.err(), /unknown option '--nope'/);
    assert.equal(await main(['frobnicate'], io().io), 2);
  });

  it('agent reaches runAgent with a valid config (placeholder until wired)', async () => {
    const c = io();
    assert.equal(await main(['agent', '--registry-addr', '127.0.0.1:0', '--log-level', 'debug'], c.io), 1);
    assert.match(c.err(), /^ferry: /);
    assert.doesNotMatch(c.err(), /\n\s+at /);
  });

  it('configure writes, is idempotent, and cleans up', async (t) => {
    const dir = await mkdtemp(join(tmpdir(), 'ferry-cli-'));
    t.after(() => rm(dir, { recursive: true, force: true }));
    const hosts = join(dir, 'certs.d');
    const args = [
      'configure',
      '--hosts-dir',
      hosts,
      '--mirror-targets',
      'http://127.0.0.11:5000',
      '--no-resolve-tags',
    ];
    const a = io();
    assert.equal(await main([...args, '--mirrored-registries', 'https://docker.io'], a.io), 0);
    assert.match(a.out(), /wrote .*docker.io\/hosts.toml/);
    const toml = await readFile(join(hosts, 'docker.io', 'hosts.toml'), 'utf8');
    assert.match(toml, /server = "https:\/\/registry-1.docker.io"/);
    assert.match(toml, /capabilities = \[ "pull" \]/);
    const b = io();
    assert.equal(await main([...args, '--mirrored-registries', 'https://docker.io'], b.io), 0);
    assert.match(b.out(), /unchanged .*docker.io\/hosts.toml/);
    const bad = io();
    assert.equal(
      await main(['configure', '--hosts-dir', hosts, '--mirror-targets', 'http://x/v2'], bad.io),
      2,
    );
    assert.match(bad.err(), /^ferry configure: mirror target "http:\/\/x\/v2": a path is not allowed/);
    const missing = io();
    assert.equal(await main(['configure', '--hosts-dir', hosts], missing.io), 2);
    const c = io();
    assert.equal(await main(['configure', '--hosts-dir', hosts, '--cleanup'], c.io), 0);
    assert.match(c.out(), /restored/);
  });

  it('version prints text and json; the bin launcher runs the CLI', async () => {
    const c = io();
    assert.equal(await main(['version', '--format', 'json'], c.io), 0);
    assert.match(JSON.parse(c.out()).version, /^\d+\.\d+\.\d+/);
    const bin = new URL('../bin/ferry', import.meta.url).pathname;
    const { stdout } = await promisify(execFile)(bin, ['version'], {
      env: { ...process.env, FERRY_NODE: process.execPath },
    });
    assert.match(stdout, /^ferry \d+\.\d+\.\d+\n$/);
  });

  it('the bin launcher names the Node it needs when only an older one is on PATH', async (t) => {
    const dir = await mkdtemp(join(tmpdir(), 'ferry-bin-'));
    t.after(() => rm(dir, { recursive: true, force: true }));
    // A launcher outside the workspace (no pinned Node in tools/) and a fake `node` on PATH.
    const bin = join(dir, 'a', 'b', 'c', 'bin');
    await mkdir(bin, { recursive: true });
    await copyFile(new URL('../bin/ferry', import.meta.url), join(bin, 'ferry'));
    await chmod(join(bin, 'ferry'), 0o755);
    const fake = join(dir, 'path');
    await mkdir(fake);
    const run = async (version: string) => {
      await writeFile(
        join(fake, 'node'),
        `#!/bin/sh\nif [ "$1" = --version ]; then echo ${version}; else echo "ran $*"; fi\n`,
      );
      await chmod(join(fake, 'node'), 0o755);
      return promisify(execFile)(join(bin, 'ferry'), ['version'], {
        env: { PATH: `${fake}:/usr/bin:/bin` },
      }).then(
        (r) => ({ code: 0, ...r }),
        (e: { code: number; stdout: string; stderr: string }) => e,
      );
    };
    const old = await run('v20.20.2');
    assert.equal(old.code, 1);
    assert.match(old.stderr, /needs Node\.js 24 or newer; found v20\.20\.2/);
    assert.match(old.stderr, /scripts\/bootstrap\.sh/);
    assert.match(old.stderr, /FERRY_NODE/);
    const ok = await run('v24.11.0');
    assert.equal(ok.code, 0);
    assert.match(ok.stdout, /^ran .*src\/cli\.ts version/);
  });

  it('--help lists every agent flag with its env var', async () => {
    const c = io();
    assert.equal(await main(['agent', '--help'], c.io), 0);
    assert.match(c.out(), /--mirror-resolve-timeout <value>/);
    assert.match(c.out(), /FERRY_MIRROR_RESOLVE_TIMEOUT/);
    assert.match(c.out(), /--no-resolve-tags/);
  });
});
