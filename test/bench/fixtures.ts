/**
 * The advertising fixture: an OCI index with many tiny child images, so one `ctr content fetch
 * --all-platforms` puts thousands of digests into a node's content store in seconds. Each child has its own
 * platform (`linux/bench<i>`, which no node runs), one config and two tiny layers: four digests per child.
 * The node's own platform is the first child, so the index is a normal image for this machine too.
 */
import { createHash, randomBytes } from 'node:crypto';
import { Agent, request } from 'node:http';
import { gzipSync } from 'node:zlib';
import { MediaTypes } from '@ferry/oci';
import { nodePlatform, type Platform } from '../rig/index.ts';
import { pool } from './measure.ts';

export interface Blob {
  mediaType: string;
  digest: string;
  size: number;
  bytes: Buffer;
}

export interface ManyIndex {
  index: Blob;
  /** Child manifests (the node's platform first). */
  manifests: Blob[];
  /** Configs and layers of every child. */
  blobs: Blob[];
  /** Every digest: index, manifests, configs, layers. */
  digests: string[];
}

const sha256 = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

function blob(mediaType: string, bytes: Buffer): Blob {
  return { mediaType, digest: sha256(bytes), size: bytes.length, bytes };
}

const json = (mediaType: string, value: unknown) => blob(mediaType, Buffer.from(JSON.stringify(value)));
const desc = (b: Blob, platform?: Platform) => ({
  mediaType: b.mediaType,
  digest: b.digest,
  size: b.size,
  ...(platform ? { platform } : {}),
});

/** An index of `foreign` children on made-up platforms plus one for this node: 4 × (foreign + 1) + 1 digests. */
export function buildManyIndex(foreign: number): ManyIndex {
  const platforms: Platform[] = [
    nodePlatform(),
    ...Array.from({ length: foreign }, (_, i): Platform => ({ os: 'linux', architecture: `bench${i}` })),
  ];
  const manifests: Blob[] = [];
  const blobs: Blob[] = [];
  const children: ReturnType<typeof desc>[] = [];
  for (const platform of platforms) {
    const raws = [randomBytes(48), randomBytes(48)];
    const layers = raws.map((raw) => blob(MediaTypes.ociLayerGzip, gzipSync(raw)));
    const config = json(MediaTypes.ociConfig, {
      architecture: platform.architecture,
      os: platform.os,
      rootfs: { type: 'layers', diff_ids: raws.map(sha256) },
    });
    const manifest = json(MediaTypes.ociManifest, {
      schemaVersion: 2,
      mediaType: MediaTypes.ociManifest,
      config: desc(config),
      layers: layers.map((l) => desc(l)),
    });
    blobs.push(config, ...layers);
    manifests.push(manifest);
    children.push(desc(manifest, platform));
  }
  const index = json(MediaTypes.ociIndex, {
    schemaVersion: 2,
    mediaType: MediaTypes.ociIndex,
    manifests: children,
  });
  return {
    index,
    manifests,
    blobs,
    digests: [index.digest, ...manifests.map((m) => m.digest), ...blobs.map((b) => b.digest)],
  };
}

function send(
  agent: Agent,
  method: string,
  url: string,
  headers: Record<string, string | number>,
  body?: Buffer,
): Promise<{ status: number; location?: string; text: string }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method, agent, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.once('end', () =>
        resolve({
          status: res.statusCode ?? 0,
          ...(res.headers.location ? { location: res.headers.location } : {}),
          text: Buffer.concat(chunks).toString(),
        }),
      );
      res.once('error', reject);
    });
    req.once('error', reject);
    req.end(body);
  });
}

/** Pushes the index (blobs, child manifests by digest, the index by tag) with `concurrency` uploads in flight. */
export async function pushManyIndex(
  registryUrl: string,
  repo: string,
  tag: string,
  many: ManyIndex,
  concurrency = 8,
): Promise<void> {
  const agent = new Agent({ keepAlive: true, maxSockets: concurrency });
  try {
    await pool(many.blobs, concurrency, async (b) => {
      const start = await send(agent, 'POST', `${registryUrl}/v2/${repo}/blobs/uploads/`, {
        'content-length': 0,
      });
      if (start.status !== 202 || !start.location)
        throw new Error(`start upload ${b.digest}: HTTP ${start.status} ${start.text}`);
      const url = new URL(start.location, registryUrl);
      url.searchParams.set('digest', b.digest);
      const put = await send(
        agent,
        'PUT',
        url.toString(),
        { 'content-type': 'application/octet-stream', 'content-length': b.size },
        b.bytes,
      );
      if (put.status !== 201) throw new Error(`upload ${b.digest}: HTTP ${put.status} ${put.text}`);
    });
    const putManifest = async (m: Blob, ref: string) => {
      const r = await send(
        agent,
        'PUT',
        `${registryUrl}/v2/${repo}/manifests/${ref}`,
        { 'content-type': m.mediaType, 'content-length': m.size },
        m.bytes,
      );
      if (r.status !== 201) throw new Error(`put manifest ${repo}:${ref}: HTTP ${r.status} ${r.text}`);
    };
    await pool(many.manifests, concurrency, (m) => putManifest(m, m.digest));
    await putManifest(many.index, tag);
  } finally {
    agent.destroy();
  }
}
