import assert from 'node:assert/strict';
import { test } from 'node:test';
import { endpointsOf, firstHeader, hostPort, isWildcardRegistry, registryEndpoint } from '../src/index.ts';

test('registryEndpoint: Docker Hub and its aliases go to registry-1.docker.io', () => {
  assert.equal(registryEndpoint('docker.io'), 'https://registry-1.docker.io');
  assert.equal(registryEndpoint('index.docker.io'), 'https://registry-1.docker.io');
  assert.equal(registryEndpoint('ghcr.io'), 'https://ghcr.io');
  assert.equal(registryEndpoint('127.0.0.1:5000', 'http'), 'http://127.0.0.1:5000');
});

test('endpointsOf: normalised host -> base URL, docker.io and wildcards left out', () => {
  assert.deepEqual(
    endpointsOf([
      'http://127.0.0.2:5000',
      'ghcr.io',
      'https://registry-1.docker.io',
      'docker.io',
      '*',
      '_default',
      'http://[::1]:5001/',
      'ftp://x',
      'http://',
    ]),
    {
      '127.0.0.2:5000': 'http://127.0.0.2:5000',
      'ghcr.io': 'https://ghcr.io',
      '[::1]:5001': 'http://[::1]:5001',
    },
  );
  assert.equal(isWildcardRegistry(' * '), true);
  assert.equal(isWildcardRegistry('docker.io'), false);
});

test('hostPort brackets a bare IPv6 host only', () => {
  assert.equal(hostPort('10.0.0.1', 5000), '10.0.0.1:5000');
  assert.equal(hostPort('fd00::5', 5000), '[fd00::5]:5000');
  assert.equal(hostPort('[fd00::5]', 5000), '[fd00::5]:5000');
  assert.equal(hostPort('node-1', 80), 'node-1:80');
});

test('firstHeader takes the first of a list', () => {
  assert.equal(firstHeader(['a', 'b']), 'a');
  assert.equal(firstHeader('a'), 'a');
  assert.equal(firstHeader(undefined), undefined);
  assert.equal(firstHeader([]), undefined);
});
