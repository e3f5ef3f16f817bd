import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { loadAgentConfig } from '../src/config.ts';
import { createAgentTagPolicy } from '../src/tag-resolution.ts';

const noFile = { readFile: () => '' };

function recorder() {
  const lines: { level: string; obj: object; msg?: string }[] = [];
  return {
    lines,
    logger: {
      warn: (obj: object, msg?: string) => lines.push({ level: 'warn', obj, ...(msg ? { msg } : {}) }),
      info: (obj: object, msg?: string) => lines.push({ level: 'info', obj, ...(msg ? { msg } : {}) }),
    },
  };
}

describe('createAgentTagPolicy', () => {
  it('without a data dir: an in-memory store and a warning; rules and resolveTags reach the policy', async (t) => {
    const config = loadAgentConfig(
      ['--tag-policy', ':latest$=upstream', '--registry-filters', '^docker\\.io/private/'],
      {},
      noFile,
    );
    const log = recorder();
    const p = await createAgentTagPolicy(config, log.logger);
    t.after(() => p.close());
    assert.ok(log.lines.some((l) => l.level === 'warn' && /will not survive a restart/.test(l.msg ?? '')));
    assert.equal(p.tags.modeFor('docker.io', 'library/nginx', 'latest'), 'upstream');
    assert.equal(p.tags.modeFor('docker.io', 'library/nginx', '1.27'), 'verify');
    assert.equal(p.policy.allows('docker.io', 'library/nginx', 'latest'), false);
    assert.equal(p.policy.allows('docker.io', 'private/x', '1'), false);
    assert.equal(p.tags.upstreamTimeoutMs, 1000);
    await p.lastKnown.record({
      registry: 'docker.io',
      repository: 'library/nginx',
      tag: '1.27',
      digest: `sha256:${'a'.repeat(64)}`,
      resolvedAt: 5,
      source: 'upstream',
    });
    assert.equal((await p.lastKnown.get('docker.io', 'library/nginx', '1.27'))?.resolvedAt, 5);
    const off = await createAgentTagPolicy(loadAgentConfig(['--no-resolve-tags'], {}, noFile), log.logger);
    t.after(() => off.close());
    assert.equal(off.tags.modeFor('docker.io', 'library/nginx', '1.27'), 'upstream');
  });

  it('keeps last-known digests in <dataDir>/tags across a reopen', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'ferry-agent-tags-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const config = loadAgentConfig(['--data-dir', dir], {}, noFile);
    const log = recorder();
    const first = await createAgentTagPolicy(config, log.logger);
    await first.lastKnown.record({
      registry: 'ghcr.io',
      repository: 'a/b',
      tag: 'v1',
      digest: `sha256:${'b'.repeat(64)}`,
      resolvedAt: 42,
      source: 'upstream',
    });
    await first.close();
    assert.ok(existsSync(join(dir, 'tags')));
    assert.equal(log.lines.filter((l) => l.level === 'warn').length, 0);
    const second = await createAgentTagPolicy(config, log.logger);
    t.after(() => second.close());
    assert.equal((await second.lastKnown.get('ghcr.io', 'a/b', 'v1'))?.resolvedAt, 42);
  });

  it('an unusable data dir does not stop it: last-known digests in memory, a loud error', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'ferry-agent-tags-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    // A regular file where the data dir should be: nothing can be created under it.
    writeFileSync(join(dir, 'file'), '');
    const config = loadAgentConfig(['--data-dir', join(dir, 'file')], {}, noFile);
    const log = recorder();
    const policy = await createAgentTagPolicy(config, log.logger);
    t.after(() => policy.close());
    assert.ok(
      log.lines.some((l) => l.level === 'warn' && /LAST-KNOWN DATABASE UNAVAILABLE/.test(String(l.msg))),
    );
    const r = {
      registry: 'ghcr.io',
      repository: 'a/b',
      tag: 'v1',
      digest: `sha256:${'b'.repeat(64)}`,
      resolvedAt: Date.now(),
      source: 'upstream' as const,
    };
    assert.equal(await policy.lastKnown.record(r), true);
    assert.equal((await policy.lastKnown.get('ghcr.io', 'a/b', 'v1'))?.digest, r.digest);
  });

  it('asks the upstream at the endpoint derived from --mirrored-registries, with the configured credentials', async (t) => {
    const seen: { method?: string; url?: string; auth?: string }[] = [];
    const digest = `sha256:${'c'.repeat(64)}`;
    const server = createServer((req, res) => {
      seen.push({ method: req.method, url: req.url, auth: req.headers.authorization });
      if (req.headers.authorization === undefined) {
        res.writeHead(401, { 'www-authenticate': 'Basic realm="x"' }).end();
        return;
      }
      res
        .writeHead(200, {
          'docker-content-digest': digest,
          'content-type': 'application/vnd.oci.image.manifest.v1+json',
          'content-length': '10',
        })
        .end();
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    t.after(() => new Promise<void>((resolve) => server.close(() => resolve())));
    const port = (server.address() as { port: number }).port;
    const dir = mkdtempSync(join(tmpdir(), 'ferry-agent-creds-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const creds = join(dir, 'config.json');
    writeFileSync(
      creds,
      JSON.stringify({ auths: { [`127.0.0.1:${port}`]: { auth: Buffer.from('u:p').toString('base64') } } }),
    );
    const config = loadAgentConfig(
      [`--mirrored-registries=http://127.0.0.1:${port}`, `--upstream-credentials=${creds}`],
      {},
      noFile,
    );
    const p = await createAgentTagPolicy(config, recorder().logger);
    t.after(() => p.close());
    assert.equal(p.upstream.hasCredentials(`127.0.0.1:${port}`), true);
    const outcome = await p.upstream.resolveTag(`127.0.0.1:${port}`, 'team/app', 'v1');
    assert.deepEqual(outcome.kind, 'resolved');
    assert.ok(seen.some((s) => s.url === '/v2/team/app/manifests/v1' && s.auth?.startsWith('Basic ')));
  });

  it('names the credentials file when it is not valid', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ferry-agent-badcreds-'));
    try {
      const file = join(dir, 'config.json');
      writeFileSync(file, '{ nope');
      const config = loadAgentConfig([`--upstream-credentials=${file}`], {}, noFile);
      await assert.rejects(createAgentTagPolicy(config, recorder().logger), (err: Error) =>
        err.message.includes(file),
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
