import assert from 'node:assert/strict';
import { test } from 'node:test';
import { MediaTypes, OciError, parseManifest } from '../src/index.ts';

const enc = (v: unknown): Uint8Array =>
  new TextEncoder().encode(typeof v === 'string' ? v : JSON.stringify(v));
const dg = (n: number): string => `sha256:${n.toString(16).padStart(2, '0').repeat(32)}`;

const config = { mediaType: MediaTypes.ociConfig, digest: dg(1), size: 173 };
const layer1 = { mediaType: MediaTypes.ociLayerGzip, digest: dg(2), size: 20_978_157 };
const layer2 = { mediaType: MediaTypes.ociLayerZstd, digest: dg(3), size: 0, annotations: { 'a.b': 'c' } };

function isInvalid(e: unknown): boolean {
  return e instanceof OciError && e.code === 'MANIFEST_INVALID' && e.status === 400;
}

test('OCI manifest -> config, layers, subject', () => {
  const subject = { mediaType: MediaTypes.ociManifest, digest: dg(4), size: 500 };
  const m = parseManifest(
    enc({
      schemaVersion: 2,
      mediaType: MediaTypes.ociManifest,
      config,
      layers: [layer1, layer2],
      subject,
      annotations: {},
    }),
  );
  assert.deepEqual(m, {
    mediaType: MediaTypes.ociManifest,
    isIndex: false,
    children: [config, layer1, layer2, subject],
  });
});

test('Docker manifest, no mediaType field in JSON: taken from the argument, or guessed', () => {
  const body = enc({
    schemaVersion: 2,
    config: { ...config, mediaType: MediaTypes.dockerConfig },
    layers: [],
  });
  const a = parseManifest(body, `${MediaTypes.dockerManifest}; charset=utf-8`);
  assert.equal(a.mediaType, MediaTypes.dockerManifest);
  assert.equal(a.children.length, 1);
  assert.equal(parseManifest(body).mediaType, MediaTypes.ociManifest);
  assert.equal(parseManifest(body, 'application/octet-stream').mediaType, MediaTypes.ociManifest);
});

test('index -> manifests with platforms; extra descriptor fields dropped', () => {
  const amd = {
    mediaType: MediaTypes.ociManifest,
    digest: dg(5),
    size: 423,
    platform: { os: 'linux', architecture: 'amd64', 'os.version': 'x' },
  };
  const arm = {
    mediaType: MediaTypes.ociManifest,
    digest: dg(6),
    size: 424,
    platform: { os: 'linux', architecture: 'arm64', variant: 'v8' },
    urls: ['http://x'],
  };
  const m = parseManifest(enc({ schemaVersion: 2, mediaType: MediaTypes.ociIndex, manifests: [amd, arm] }));
  assert.equal(m.isIndex, true);
  assert.equal(m.mediaType, MediaTypes.ociIndex);
  assert.deepEqual(m.children, [
    {
      mediaType: MediaTypes.ociManifest,
      digest: dg(5),
      size: 423,
      platform: { os: 'linux', architecture: 'amd64' },
    },
    {
      mediaType: MediaTypes.ociManifest,
      digest: dg(6),
      size: 424,
      platform: { os: 'linux', architecture: 'arm64', variant: 'v8' },
    },
  ]);
  const list = parseManifest(enc({ schemaVersion: 2, manifests: [] }), MediaTypes.dockerManifestList);
  assert.deepEqual(list, { mediaType: MediaTypes.dockerManifestList, isIndex: true, children: [] });
  assert.equal(parseManifest(enc({ manifests: [amd] })).isIndex, true);
});

test('MANIFEST_INVALID on bad JSON, wrong type or bad shape', () => {
  const bad: [string, Uint8Array, string?][] = [
    ['not json', enc('nope')],
    ['truncated', enc('{"layers": [')],
    ['array', enc('[]')],
    ['empty', new Uint8Array()],
    ['config blob', enc({ architecture: 'amd64', os: 'linux' })],
    ['config media type', enc({ mediaType: MediaTypes.ociConfig, config, layers: [] })],
    [
      'schema1',
      enc({ mediaType: 'application/vnd.docker.distribution.manifest.v1+prettyjws', fsLayers: [] }),
    ],
    ['index without manifests', enc({ mediaType: MediaTypes.ociIndex })],
    ['manifest without layers', enc({ mediaType: MediaTypes.ociManifest, config })],
    ['manifest without config', enc({ mediaType: MediaTypes.ociManifest, layers: [] })],
    ['layer not object', enc({ mediaType: MediaTypes.ociManifest, config, layers: ['x'] })],
    [
      'bad digest',
      enc({ mediaType: MediaTypes.ociManifest, config: { ...config, digest: 'sha256:zz' }, layers: [] }),
    ],
    [
      'negative size',
      enc({ mediaType: MediaTypes.ociManifest, config: { ...config, size: -1 }, layers: [] }),
    ],
    [
      'fractional size',
      enc({ mediaType: MediaTypes.ociManifest, config: { ...config, size: 1.5 }, layers: [] }),
    ],
    ['string size', enc({ mediaType: MediaTypes.ociManifest, config: { ...config, size: '1' }, layers: [] })],
    [
      'no mediaType',
      enc({ mediaType: MediaTypes.ociManifest, config: { digest: dg(1), size: 1 }, layers: [] }),
    ],
    ['bad subject', enc({ mediaType: MediaTypes.ociManifest, config, layers: [], subject: 'x' })],
    ['bad platform', enc({ manifests: [{ ...config, platform: { os: 'linux' } }] })],
    ['bad annotations', enc({ manifests: [{ ...config, annotations: { a: 1 } }] })],
    ['arg says index, shape is manifest', enc({ config, layers: [] }), MediaTypes.ociIndex],
  ];
  for (const [name, bytes, mt] of bad) assert.throws(() => parseManifest(bytes, mt), isInvalid, name);
});

test('error names the bad descriptor', () => {
  assert.throws(
    () =>
      parseManifest(
        enc({ mediaType: MediaTypes.ociManifest, config, layers: [layer1, { ...layer2, digest: 'x' }] }),
      ),
    (e: unknown) => isInvalid(e) && (e as Error).message.includes('layers[1]'),
  );
});
