import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createRefPolicy } from '../src/index.ts';

describe('createRefPolicy', () => {
  it('allows everything by default, tags included', () => {
    const p = createRefPolicy();
    assert.equal(p.allows('docker.io', 'library/nginx', 'latest'), true);
    assert.equal(p.allows('ghcr.io', 'a/b'), true);
  });

  it('refuses tags when resolveTags is false, but not digests', () => {
    const p = createRefPolicy({ resolveTags: false });
    assert.equal(p.allows('docker.io', 'library/nginx', '1.27'), false);
    assert.equal(p.allows('docker.io', 'library/nginx'), true);
  });

  it('matches filters against registry/repo[:tag]', () => {
    const p = createRefPolicy({ registryFilters: [':latest$', '^docker\\.io/private/'] });
    assert.equal(p.allows('docker.io', 'library/nginx', 'latest'), false);
    assert.equal(p.allows('docker.io', 'library/nginx', '1.27'), true);
    assert.equal(p.allows('docker.io', 'private/app'), false);
    assert.equal(p.allows('ghcr.io', 'private/app'), true);
  });

  it('limits to mirroredRegistries, normalising names and URLs', () => {
    const p = createRefPolicy({
      mirroredRegistries: ['https://index.docker.io', 'ghcr.io', 'localhost:5000'],
    });
    assert.equal(p.allows('docker.io', 'library/nginx', 'latest'), true);
    assert.equal(p.allows('ghcr.io', 'x/y'), true);
    assert.equal(p.allows('localhost:5000', 'x'), true);
    assert.equal(p.allows('quay.io', 'x/y'), false);
  });

  it('names the bad pattern when a filter is not a regex', () => {
    assert.throws(
      () => createRefPolicy({ registryFilters: ['ok', '(unclosed'] }),
      (err: Error) => err instanceof TypeError && err.message.includes('"(unclosed"'),
    );
  });
});
