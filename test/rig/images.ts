import { createCipheriv, createHash, randomBytes } from 'node:crypto';
import {
  createReadStream,
  createWriteStream,
  existsSync,
  mkdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable, Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGzip, constants as zlibConstants } from 'node:zlib';
import { MediaTypes } from '@ferry/oci';

export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
}

/** A blob held in memory (manifest, config, index). */
export interface MemoryBlob {
  mediaType: string;
  digest: string;
  size: number;
  bytes: Buffer;
}

/** A gzip-compressed tar layer on disk (one file of random bytes inside). */
export interface LayerBlob {
  mediaType: string;
  digest: string;
  size: number;
  /** Path of the .tar.gz file. */
  path: string;
  /** sha256 of the uncompressed tar (rootfs diff_id). */
  diffId: string;
  /** Size of the random file inside the tar. */
  contentSize: number;
}

export interface BuiltImage {
  kind: 'image';
  platform: Platform;
  manifest: MemoryBlob;
  config: MemoryBlob;
  layers: LayerBlob[];
  /** = manifest.digest */
  digest: string;
}

export interface BuiltIndex {
  kind: 'index';
  index: MemoryBlob;
  /** One image per platform, the node's own platform first. */
  images: BuiltImage[];
  /** = index.digest */
  digest: string;
}

export interface BuildImageOptions {
  /** Size in bytes of the random file in each layer (one layer per entry). */
  layers: number[];
  /** OCI or Docker media types for manifest, config and layers. Default `oci`. */
  mediaTypes?: 'oci' | 'docker';
  /**
   * Seed of the random bytes. With a seed, layers are deterministic and cached under
   * `$TMPDIR/ferry-rig-images/` by (size, seed, layer index) across runs; without one, bytes are unique
   * and the files live in a per-process temp dir removed at exit.
   */
  seed?: string;
  /** Image platform. Default: this node's (linux + process.arch mapped to GOARCH). */
  platform?: Platform;
}

const cacheRoot = join(tmpdir(), 'ferry-rig-images');
let scratch: string | undefined;
function scratchDir(): string {
  if (!scratch) {
    scratch = join(tmpdir(), `ferry-rig-images-${process.pid}-${randomBytes(4).toString('hex')}`);
    mkdirSync(scratch, { recursive: true });
    const dir = scratch;
    process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
  }
  return scratch;
}

/** This machine's platform in OCI terms. */
export function nodePlatform(): Platform {
  const arch = process.arch === 'x64' ? 'amd64' : process.arch === 'ia32' ? '386' : process.arch;
  return { os: 'linux', architecture: arch };
}

const sha256 = (b: Buffer | string) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

function memoryBlob(mediaType: string, value: unknown): MemoryBlob {
  const bytes = Buffer.from(JSON.stringify(value));
  return { mediaType, digest: sha256(bytes), size: bytes.length, bytes };
}

/** A 512-byte ustar header for one regular file. */
function tarHeader(name: string, size: number): Buffer {
  const h = Buffer.alloc(512);
  const put = (s: string, off: number, len: number) => h.write(s, off, len, 'ascii');
  const octal = (n: number, len: number) => `${n.toString(8).padStart(len - 1, '0')}\0`;
  put(name, 0, 100);
  put(octal(0o644, 8), 100, 8);
  put(octal(0, 8), 108, 8);
  put(octal(0, 8), 116, 8);
  put(octal(size, 12), 124, 12);
  put(octal(0, 12), 136, 12);
  put('        ', 148, 8); // checksum placeholder: spaces
  put('0', 156, 1);
  put('ustar\0', 257, 6);
  put('00', 263, 2);
  put('root', 265, 32);
  put('root', 297, 32);
  let sum = 0;
  for (const byte of h) sum += byte;
  put(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 8);
  return h;
}

/** Streams a tar holding `name` with `size` pseudo-random bytes (AES-256-CTR keystream of the seed). */
function tarStream(name: string, size: number, seed: string): Readable {
  const key = createHash('sha256').update(`ferry-rig:${seed}`).digest();
  const cipher = createCipheriv('aes-256-ctr', key, Buffer.alloc(16));
  const chunk = 1024 * 1024;
  const zeros = Buffer.alloc(chunk);
  async function* gen(): AsyncGenerator<Buffer> {
    yield tarHeader(name, size);
    let left = size;
    while (left > 0) {
      const n = Math.min(left, chunk);
      yield cipher.update(n === chunk ? zeros : zeros.subarray(0, n));
      left -= n;
    }
    const pad = (512 - (size % 512)) % 512;
    yield Buffer.alloc(pad + 1024); // padding + two zero blocks
  }
  return Readable.from(gen());
}

class Hasher extends Transform {
  hash = createHash('sha256');
  bytes = 0;
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.hash.update(chunk);
    this.bytes += chunk.length;
    cb(null, chunk);
  }
}

async function buildLayer(
  size: number,
  seed: string | undefined,
  index: number,
  mediaType: string,
): Promise<LayerBlob> {
  const cached = seed !== undefined;
  const s = seed ?? randomBytes(16).toString('hex');
  const dir = cached ? cacheRoot : scratchDir();
  mkdirSync(dir, { recursive: true });
  const base = join(dir, `${size}-${createHash('sha256').update(s).digest('hex').slice(0, 16)}-${index}`);
  const path = `${base}.tar.gz`;
  const metaPath = `${base}.json`;
  if (cached && existsSync(metaPath) && existsSync(path)) {
    const meta = JSON.parse(readFileSync(metaPath, 'utf8')) as {
      digest: string;
      diffId: string;
      size: number;
    };
    if (statSync(path).size === meta.size) {
      return {
        mediaType,
        digest: meta.digest,
        size: meta.size,
        path,
        diffId: meta.diffId,
        contentSize: size,
      };
    }
  }
  const tmp = `${path}.${process.pid}.tmp`;
  const raw = new Hasher();
  const gz = new Hasher();
  // Random bytes do not compress: level 0 (stored deflate blocks) is still valid gzip and ~10x faster.
  await pipeline(
    tarStream(`layer-${index}.bin`, size, `${s}:${index}`),
    raw,
    createGzip({ level: zlibConstants.Z_NO_COMPRESSION, chunkSize: 256 * 1024 }),
    gz,
    createWriteStream(tmp),
  );
  renameSync(tmp, path);
  const digest = `sha256:${gz.hash.digest('hex')}`;
  const diffId = `sha256:${raw.hash.digest('hex')}`;
  if (cached) writeFileSync(metaPath, JSON.stringify({ digest, diffId, size: gz.bytes }));
  return { mediaType, digest, size: gz.bytes, path, diffId, contentSize: size };
}

/** Builds an image of random gzip tar layers (valid for containerd to unpack), with config and manifest. */
export async function buildImage(opts: BuildImageOptions): Promise<BuiltImage> {
  const docker = opts.mediaTypes === 'docker';
  const platform = opts.platform ?? nodePlatform();
  const seed = opts.seed === undefined ? undefined : `${opts.seed}:${platform.os}/${platform.architecture}`;
  const layerType = docker ? MediaTypes.dockerLayerGzip : MediaTypes.ociLayerGzip;
  const layers: LayerBlob[] = [];
  for (const [i, size] of opts.layers.entries()) layers.push(await buildLayer(size, seed, i, layerType));
  const config = memoryBlob(docker ? MediaTypes.dockerConfig : MediaTypes.ociConfig, {
    architecture: platform.architecture,
    os: platform.os,
    ...(platform.variant ? { variant: platform.variant } : {}),
    config: { Cmd: ['/bin/true'] },
    rootfs: { type: 'layers', diff_ids: layers.map((l) => l.diffId) },
  });
  const desc = (b: { mediaType: string; digest: string; size: number }) => ({
    mediaType: b.mediaType,
    digest: b.digest,
    size: b.size,
  });
  const manifestType = docker ? MediaTypes.dockerManifest : MediaTypes.ociManifest;
  const manifest = memoryBlob(manifestType, {
    schemaVersion: 2,
    mediaType: manifestType,
    config: desc(config),
    layers: layers.map(desc),
  });
  return { kind: 'image', platform, manifest, config, layers, digest: manifest.digest };
}

/**
 * A two-platform index (linux/amd64 + linux/arm64; the node's platform first). Each platform has its
 * own layers of the given sizes.
 */
export async function buildIndex(opts: Omit<BuildImageOptions, 'platform'>): Promise<BuiltIndex> {
  const own = nodePlatform();
  const other: Platform = { os: 'linux', architecture: own.architecture === 'arm64' ? 'amd64' : 'arm64' };
  const images = [
    await buildImage({ ...opts, platform: own }),
    await buildImage({ ...opts, platform: other }),
  ];
  const docker = opts.mediaTypes === 'docker';
  const indexType = docker ? MediaTypes.dockerManifestList : MediaTypes.ociIndex;
  const index = memoryBlob(indexType, {
    schemaVersion: 2,
    mediaType: indexType,
    manifests: images.map((im) => ({
      mediaType: im.manifest.mediaType,
      digest: im.manifest.digest,
      size: im.manifest.size,
      platform: im.platform,
    })),
  });
  return { kind: 'index', index, images, digest: index.digest };
}

interface HttpResult {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

function http(
  method: string,
  url: string,
  headers: Record<string, string | number>,
  body?: Buffer | (() => Readable),
): Promise<HttpResult> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () =>
        resolve({
          status: res.statusCode ?? 0,
          headers: res.headers,
          body: Buffer.concat(chunks).toString(),
        }),
      );
      res.on('error', reject);
    });
    req.on('error', reject);
    if (body === undefined) req.end();
    else if (Buffer.isBuffer(body)) req.end(body);
    else pipeline(body(), req).catch(reject);
  });
}

function expect(r: HttpResult, status: number, what: string): void {
  if (r.status !== status) throw new Error(`${what}: HTTP ${r.status} ${r.body.slice(0, 500)}`);
}

export interface PushOptions {
  /** Upload blobs in PATCH chunks of this many bytes instead of one monolithic PUT. */
  chunkSize?: number;
}

export interface PushResult {
  /** Digest the tag points to (manifest or index). */
  digest: string;
  /** Every manifest digest pushed (index children and the top). */
  manifests: string[];
  /** Every blob digest (configs and layers). */
  blobs: string[];
}

async function pushBlob(
  registryUrl: string,
  repo: string,
  blob: MemoryBlob | LayerBlob,
  opts: PushOptions,
): Promise<void> {
  const head = await http('HEAD', `${registryUrl}/v2/${repo}/blobs/${blob.digest}`, {});
  if (head.status === 200) return;
  const start = await http('POST', `${registryUrl}/v2/${repo}/blobs/uploads/`, { 'content-length': 0 });
  expect(start, 202, `start upload ${blob.digest}`);
  let location = new URL(String(start.headers.location), registryUrl);
  const source = (from: number, to: number) => (): Readable =>
    'bytes' in blob
      ? Readable.from([blob.bytes.subarray(from, to + 1)])
      : createReadStream(blob.path, { start: from, end: to });
  const finish = (u: URL) => {
    u.searchParams.set('digest', blob.digest);
    return u.toString();
  };
  if (!opts.chunkSize) {
    const put = await http(
      'PUT',
      finish(location),
      { 'content-type': 'application/octet-stream', 'content-length': blob.size },
      blob.size === 0 ? Buffer.alloc(0) : source(0, blob.size - 1),
    );
    expect(put, 201, `upload ${blob.digest}`);
    return;
  }
  for (let off = 0; off < blob.size; off += opts.chunkSize) {
    const end = Math.min(off + opts.chunkSize, blob.size) - 1;
    const patch = await http(
      'PATCH',
      location.toString(),
      {
        'content-type': 'application/octet-stream',
        'content-length': end - off + 1,
        'content-range': `${off}-${end}`,
      },
      source(off, end),
    );
    expect(patch, 202, `upload chunk ${off}-${end} of ${blob.digest}`);
    location = new URL(String(patch.headers.location), registryUrl);
  }
  const put = await http('PUT', finish(location), { 'content-length': 0 });
  expect(put, 201, `finish upload ${blob.digest}`);
}

async function pushManifest(registryUrl: string, repo: string, ref: string, m: MemoryBlob): Promise<void> {
  const r = await http(
    'PUT',
    `${registryUrl}/v2/${repo}/manifests/${ref}`,
    { 'content-type': m.mediaType, 'content-length': m.size },
    m.bytes,
  );
  expect(r, 201, `put manifest ${repo}:${ref}`);
}

/** Pushes an image or index to a registry over plain HTTP (distribution API) and tags it. */
export async function pushImage(
  registryUrl: string,
  repo: string,
  tag: string,
  image: BuiltImage | BuiltIndex,
  opts: PushOptions = {},
): Promise<PushResult> {
  const images = image.kind === 'index' ? image.images : [image];
  const out: PushResult = { digest: image.digest, manifests: [], blobs: [] };
  for (const im of images) {
    for (const b of [...im.layers, im.config]) {
      await pushBlob(registryUrl, repo, b, opts);
      out.blobs.push(b.digest);
    }
    const ref = image.kind === 'index' ? im.manifest.digest : tag;
    await pushManifest(registryUrl, repo, ref, im.manifest);
    out.manifests.push(im.manifest.digest);
  }
  if (image.kind === 'index') {
    await pushManifest(registryUrl, repo, tag, image.index);
    out.manifests.push(image.index.digest);
  }
  return out;
}
