/**
 * Static checks that keep deploy/Dockerfile in step with the repository: the pinned pnpm, a frozen
 * production install, the paths the chart runs, a non-root default user. The image itself is built by
 * scripts/image.sh and run as the chart runs it by test/image/image.test.ts.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { chartEnv } from '../rig/chart-env.ts';
import { find, type Obj, render, repoRoot } from './k8s.ts';

const dockerfile = readFileSync(`${repoRoot}deploy/Dockerfile`, 'utf8');
const ignore = readFileSync(`${repoRoot}deploy/Dockerfile.dockerignore`, 'utf8');

describe('deploy/Dockerfile', () => {
  it('builds on Node 24 slim with the pinned pnpm and a frozen production install', () => {
    assert.match(dockerfile, /^ARG NODE_IMAGE=node:24-slim$/m);
    const tools = JSON.parse(readFileSync(`${repoRoot}tools/package.json`, 'utf8')) as {
      dependencies: Record<string, string>;
    };
    assert.ok(dockerfile.includes(`pnpm@${tools.dependencies.pnpm}`), 'pnpm version differs from tools/');
    assert.match(dockerfile, /pnpm install --frozen-lockfile --prod/);
    assert.match(ignore, /^\*\*\/node_modules$/m);
  });

  it('sets the malloc environment the chart gives the agent', () => {
    const env = chartEnv();
    const malloc = Object.keys(env).filter((k) => k.startsWith('MALLOC_'));
    assert.ok(malloc.length > 0);
    for (const k of malloc) assert.match(dockerfile, new RegExp(`^ENV .*\\b${k}=${env[k]}(\\s|$)`, 'm'), k);
  });

  it('runs the CLI and ships every file the chart executes', () => {
    // The bundled CLI (scripts/build.ts), built in the build stage and copied into the runtime image.
    assert.match(
      dockerfile,
      /^ENTRYPOINT \["node", "--optimize-for-size", "\/app\/packages\/agent\/dist\/ferry\.mjs"\]$/m,
    );
    assert.match(dockerfile, /&& node scripts\/build\.ts$/m);
    assert.match(
      dockerfile,
      /^COPY --from=build \/app\/packages\/agent\/dist\/ferry\.mjs \.\/packages\/agent\/dist\/ferry\.mjs$/m,
    );
    assert.ok(existsSync(`${repoRoot}scripts/build.ts`));
    const job = find(render(), 'Job', 'ferry-cleanup-wait');
    const cmd = (job.spec as { template: { spec: { containers: Obj[] } } }).template.spec.containers[0]!
      .command as string[];
    const script = cmd[1]!;
    assert.ok(script.startsWith('/app/'));
    const rel = script.slice('/app/'.length);
    assert.ok(existsSync(`${repoRoot}${rel}`), `${rel} missing`);
    assert.ok(
      dockerfile.includes(`COPY --from=deps /app/${rel} ./${rel}`),
      `${rel} not copied into the image`,
    );
  });

  it('defaults to a non-root user', () => {
    const users = [...dockerfile.matchAll(/^USER (\S+)$/gm)].map((m) => m[1]);
    assert.deepEqual(users, ['65532:65532']);
  });
});
