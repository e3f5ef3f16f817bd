import assert from 'node:assert/strict';
import { test } from 'node:test';
import protobuf from 'protobufjs';
import { decodeEnvelope, parseCriConfig } from '../src/index.ts';

function payload(fields: { id: number; value: string }[]): Buffer {
  const w = protobuf.Writer.create();
  for (const f of fields) w.uint32((f.id << 3) | 2).string(f.value);
  return Buffer.from(w.finish());
}

test('decodeEnvelope: image and content payloads, type URL with or without prefix', () => {
  const img = decodeEnvelope({
    namespace: 'k8s.io',
    topic: '/images/create',
    event: {
      type_url: 'containerd.services.images.v1.ImageCreate',
      value: payload([{ id: 1, value: 'a/b:c' }]),
    },
  });
  assert.deepEqual(img, {
    topic: '/images/create',
    namespace: 'k8s.io',
    name: 'a/b:c',
    type: 'containerd.services.images.v1.ImageCreate',
  });
  const del = decodeEnvelope({
    namespace: 'x',
    topic: '/content/delete',
    event: {
      type_url: 'type.googleapis.com/containerd.events.ContentDelete',
      value: payload([{ id: 1, value: 'sha256:ab' }]),
    },
  });
  assert.equal(del.digest, 'sha256:ab');
  assert.equal(del.type, 'containerd.events.ContentDelete');
  // Unknown or garbage payloads keep topic and type and never throw.
  assert.deepEqual(
    decodeEnvelope({
      namespace: 'n',
      topic: '/tasks/exit',
      event: { type_url: 'x.Unknown', value: Buffer.from([1]) },
    }),
    { topic: '/tasks/exit', namespace: 'n', type: 'x.Unknown' },
  );
  assert.equal(
    decodeEnvelope({
      namespace: 'n',
      topic: '/images/delete',
      event: { type_url: 'containerd.services.images.v1.ImageDelete', value: Buffer.from([0xff, 0xff]) },
    }).name,
    undefined,
  );
});

test('parseCriConfig: 1.x shape, 2.x shape, garbage', () => {
  assert.deepEqual(
    parseCriConfig(
      JSON.stringify({
        containerd: { snapshotter: 'overlayfs', discardUnpackedLayers: true },
        registry: { configPath: '/etc/containerd/certs.d' },
      }),
    ),
    { configPath: '/etc/containerd/certs.d', discardUnpackedLayers: true, snapshotter: 'overlayfs' },
  );
  assert.deepEqual(parseCriConfig(JSON.stringify({ registry: { configPath: '' }, containerd: {} })), {});
  assert.equal(parseCriConfig(JSON.stringify({ enableSelinux: false, runtimes: {} })), undefined); // 2.x
  assert.equal(parseCriConfig('{not json'), undefined);
  assert.equal(parseCriConfig(undefined), undefined);
});

test('src/descriptors.generated.ts matches proto/ (regenerate with scripts/gen-descriptors.ts)', async () => {
  const { readFileSync } = await import('node:fs');
  const { render } = await import('../scripts/gen-descriptors.ts');
  const file = readFileSync(new URL('../src/descriptors.generated.ts', import.meta.url), 'utf8');
  assert.equal(file, render());
});
