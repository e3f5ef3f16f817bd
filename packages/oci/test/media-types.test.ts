import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  baseMediaType,
  fingerprintMediaType,
  isIndexMediaType,
  isManifestMediaType,
  MediaTypes,
  manifestAcceptTypes,
} from '../src/index.ts';

const enc = (v: unknown): Uint8Array =>
  new TextEncoder().encode(typeof v === 'string' ? v : JSON.stringify(v));

test('constants', () => {
  assert.equal(MediaTypes.ociManifest, 'application/vnd.oci.image.manifest.v1+json');
  assert.equal(MediaTypes.ociIndex, 'application/vnd.oci.image.index.v1+json');
  assert.equal(MediaTypes.dockerManifest, 'application/vnd.docker.distribution.manifest.v2+json');
  assert.equal(MediaTypes.dockerManifestList, 'application/vnd.docker.distribution.manifest.list.v2+json');
  assert.equal(MediaTypes.ociEmpty, 'application/vnd.oci.empty.v1+json');
  assert.equal(MediaTypes.dockerForeignLayer, 'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip');
  assert.equal(Object.keys(MediaTypes).length, 12);
  assert.equal(manifestAcceptTypes.length, 4);
  for (const t of manifestAcceptTypes) assert.equal(isManifestMediaType(t), true, t);
});

test('isManifestMediaType / isIndexMediaType', () => {
  assert.equal(isManifestMediaType(MediaTypes.ociManifest), true);
  assert.equal(isManifestMediaType(MediaTypes.dockerManifestList), true);
  assert.equal(isManifestMediaType(`${MediaTypes.dockerManifest}; charset=utf-8`), true);
  assert.equal(isManifestMediaType(MediaTypes.ociConfig), false);
  assert.equal(isManifestMediaType(MediaTypes.ociLayerGzip), false);
  assert.equal(isManifestMediaType('application/vnd.docker.distribution.manifest.v1+prettyjws'), false);
  assert.equal(isManifestMediaType(''), false);
  assert.equal(isIndexMediaType(MediaTypes.ociIndex), true);
  assert.equal(isIndexMediaType(MediaTypes.dockerManifestList.toUpperCase()), true);
  assert.equal(isIndexMediaType(MediaTypes.ociManifest), false);
  assert.equal(baseMediaType(' Application/JSON ; charset=utf-8'), 'application/json');
});

test('fingerprintMediaType', () => {
  assert.equal(
    fingerprintMediaType(enc({ mediaType: MediaTypes.dockerManifest, config: {}, layers: [] })),
    MediaTypes.dockerManifest,
  );
  assert.equal(fingerprintMediaType(enc({ mediaType: 'application/x-custom' })), 'application/x-custom');
  assert.equal(fingerprintMediaType(enc({ schemaVersion: 2, manifests: [] })), MediaTypes.ociIndex);
  assert.equal(
    fingerprintMediaType(enc({ schemaVersion: 2, config: { digest: 'x' }, layers: [] })),
    MediaTypes.ociManifest,
  );
  assert.equal(fingerprintMediaType(enc(`\n\t ${JSON.stringify({ manifests: [] })}`)), MediaTypes.ociIndex);
  assert.equal(fingerprintMediaType(enc(`\uFEFF${JSON.stringify({ manifests: [] })}`)), MediaTypes.ociIndex);
  // configs, empty descriptors, layers and broken JSON are not recognised
  assert.equal(fingerprintMediaType(enc({ architecture: 'amd64', os: 'linux', rootfs: {} })), undefined);
  assert.equal(fingerprintMediaType(enc({})), undefined);
  assert.equal(fingerprintMediaType(enc({ config: {} })), undefined);
  assert.equal(fingerprintMediaType(enc({ mediaType: 42, manifests: [] })), MediaTypes.ociIndex);
  assert.equal(fingerprintMediaType(enc('[1,2]')), undefined);
  assert.equal(fingerprintMediaType(enc('{"manifests": [')), undefined);
  assert.equal(fingerprintMediaType(new Uint8Array([0x1f, 0x8b, 0x08, 0x00])), undefined);
  assert.equal(fingerprintMediaType(new Uint8Array([0x7b, 0xff, 0xfe, 0x7d])), undefined);
  assert.equal(fingerprintMediaType(new Uint8Array()), undefined);
});
