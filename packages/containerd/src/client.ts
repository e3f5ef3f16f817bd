import { constants as fsConstants } from 'node:fs';
import { type FileHandle, open as openFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import protobuf from 'protobufjs';
import * as descriptors from './descriptors.generated.ts';
import { ContainerdError, fromGrpcError, isNotFound } from './errors.ts';
import type {
  ByteRange,
  ContainerdClient,
  ContainerdEvent,
  ContainerdOptions,
  ContentEntry,
  CriConfig,
  Descriptor,
  Image,
  Plugin,
} from './types.ts';

/** Directory of the hand-written .proto files (the source of src/descriptors.generated.ts). */
export const protoDir: string = fileURLToPath(new URL('../proto/', import.meta.url));

const MiB = 1024 * 1024;

// ---- raw wire shapes (proto-loader: keepCase, longs as String, defaults) ----
interface RawDescriptor {
  media_type: string;
  digest: string;
  size: string;
  annotations: Record<string, string>;
}
interface RawImage {
  name: string;
  labels: Record<string, string>;
  target: RawDescriptor | null;
}
interface RawInfo {
  digest: string;
  size: string;
  labels: Record<string, string>;
}
interface RawEnvelope {
  namespace: string;
  topic: string;
  event: { type_url: string; value: Buffer } | null;
}
interface RawPlugin {
  type: string;
  id: string;
  init_err: { code: number; message: string } | null;
}

type Unary<Req, Res> = (
  req: Req,
  md: grpc.Metadata,
  opts: grpc.CallOptions,
  cb: (err: grpc.ServiceError | null, res?: Res) => void,
) => grpc.ClientUnaryCall;
type ServerStream<Req, Res> = (
  req: Req,
  md: grpc.Metadata,
  opts?: grpc.CallOptions,
) => grpc.ClientReadableStream<Res>;

interface Services {
  images: {
    Get: Unary<{ name: string }, { image: RawImage | null }>;
    List: Unary<{ filters: string[] }, { images: RawImage[] }>;
  };
  content: {
    Info: Unary<{ digest: string }, { info: RawInfo | null }>;
    List: ServerStream<{ filters: string[] }, { info: RawInfo[] }>;
    Read: ServerStream<{ digest: string; offset: number; size: number }, { offset: string; data: Buffer }>;
  };
  events: { Subscribe: ServerStream<{ filters: string[] }, RawEnvelope> };
  version: { Version: Unary<Record<string, never>, { version: string; revision: string }> };
  introspection: { Plugins: Unary<{ filters: string[] }, { plugins: RawPlugin[] }> };
  runtime: {
    Status: Unary<{ verbose: boolean }, { info: Record<string, string> }>;
  };
}

let packageDefinition: grpc.GrpcObject | undefined;
function grpcObject(): grpc.GrpcObject {
  // From the descriptors generated from proto/ (no .proto parsing at run time).
  packageDefinition ??= grpc.loadPackageDefinition(
    protoLoader.fromJSON(descriptors.services, {
      keepCase: true,
      longs: String,
      enums: String,
      defaults: true,
      oneofs: true,
    }),
  );
  return packageDefinition;
}

let eventRoot: protobuf.Root | undefined;
function eventTypes(): protobuf.Root {
  eventRoot ??= protobuf.Root.fromJSON(descriptors.events);
  return eventRoot;
}

function lookupCtor(path: string): grpc.ServiceClientConstructor {
  let node: unknown = grpcObject();
  for (const part of path.split('.')) node = (node as Record<string, unknown>)[part];
  if (typeof node !== 'function') throw new Error(`proto service ${path} not loaded`);
  return node as grpc.ServiceClientConstructor;
}

function toNumber(v: string | number | undefined): number {
  if (v === undefined) return 0;
  const n = typeof v === 'number' ? v : Number(v);
  return Number.isFinite(n) ? n : 0;
}

function toDescriptor(d: RawDescriptor | null): Descriptor {
  const out: Descriptor = {
    mediaType: d?.media_type ?? '',
    digest: d?.digest ?? '',
    size: toNumber(d?.size),
  };
  if (d && Object.keys(d.annotations ?? {}).length > 0) out.annotations = { ...d.annotations };
  return out;
}

function toImage(i: RawImage): Image {
  return { name: i.name, labels: { ...(i.labels ?? {}) }, target: toDescriptor(i.target) };
}

function toEntry(i: RawInfo): ContentEntry {
  return { digest: i.digest, size: toNumber(i.size), labels: { ...(i.labels ?? {}) } };
}

/** Decodes an Envelope; unknown payload types keep topic/namespace/type only. */
export function decodeEnvelope(env: RawEnvelope): ContainerdEvent {
  const typeUrl = env.event?.type_url ?? '';
  const type = typeUrl.slice(typeUrl.lastIndexOf('/') + 1);
  const out: ContainerdEvent = { topic: env.topic, namespace: env.namespace, type };
  if (!env.event || type === '') return out;
  let payload: Record<string, unknown> | undefined;
  try {
    const t = eventTypes().lookupType(type);
    payload = t.toObject(t.decode(env.event.value), { longs: String }) as Record<string, unknown>;
  } catch {
    return out; // unknown type or undecodable payload: still report the topic
  }
  if (typeof payload.name === 'string' && payload.name !== '') out.name = payload.name;
  if (typeof payload.digest === 'string' && payload.digest !== '') out.digest = payload.digest;
  return out;
}

function parseDigestPath(digest: string): { alg: string; hex: string } | undefined {
  const m = /^(sha256|sha512):([a-f0-9]{64}|[a-f0-9]{128})$/.exec(digest);
  if (!m?.[1] || !m[2]) return undefined;
  return { alg: m[1], hex: m[2] };
}

/** Creates a client over containerd's gRPC socket. The channel connects lazily on the first call. */
export function createContainerdClient(opts: ContainerdOptions): ContainerdClient {
  const namespace = opts.namespace ?? 'k8s.io';
  const callTimeoutMs = opts.callTimeoutMs ?? 30_000;
  const channelOptions: grpc.ChannelOptions = {
    'grpc.max_receive_message_length': 16 * MiB,
    'grpc.max_send_message_length': 16 * MiB,
    'grpc-node.flow_control_window': opts.flowControlWindow ?? 4 * MiB,
    // containerd restarts should be noticed within seconds, not grpc-js' default 120 s back-off ceiling.
    'grpc.initial_reconnect_backoff_ms': 200,
    'grpc.max_reconnect_backoff_ms': 2000,
  };
  const target = `unix://${opts.socket}`;
  const channel = new grpc.Channel(target, grpc.credentials.createInsecure(), channelOptions);
  const make = <T>(path: string): T => {
    const Ctor = lookupCtor(path);
    return new Ctor(target, grpc.credentials.createInsecure(), { channelOverride: channel }) as unknown as T;
  };
  const svc: Services = {
    images: make('containerd.services.images.v1.Images'),
    content: make('containerd.services.content.v1.Content'),
    events: make('containerd.services.events.v1.Events'),
    version: make('containerd.services.version.v1.Version'),
    introspection: make('containerd.services.introspection.v1.Introspection'),
    runtime: make('runtime.v1.RuntimeService'),
  };

  const md = (namespaced: boolean): grpc.Metadata => {
    const m = new grpc.Metadata();
    if (namespaced) m.set('containerd-namespace', namespace);
    return m;
  };

  function unary<Req, Res>(
    s: object,
    fn: Unary<Req, Res>,
    req: Req,
    namespaced: boolean,
    what: string,
  ): Promise<Res> {
    return new Promise((resolve, reject) => {
      fn.call(s, req, md(namespaced), { deadline: Date.now() + callTimeoutMs }, (err, res) => {
        if (err || !res) reject(fromGrpcError(err ?? new Error('empty response'), what));
        else resolve(res);
      });
    });
  }

  async function* readStream(
    digest: string,
    offset: number,
    size: number,
  ): AsyncGenerator<Buffer, void, undefined> {
    const call = svc.content.Read.call(svc.content, { digest, offset, size }, md(true));
    try {
      for await (const msg of call as AsyncIterable<{ data: Buffer }>) {
        if (msg.data.length > 0) yield msg.data;
      }
    } catch (err) {
      throw fromGrpcError(err, `Content.Read ${digest}`);
    } finally {
      call.cancel();
    }
  }

  async function openGrpc(digest: string, range?: ByteRange): Promise<NodeJS.ReadableStream> {
    const offset = range ? range.start : 0;
    const size = range ? range.end - range.start + 1 : 0;
    const gen = readStream(digest, offset, size);
    // Wait for the first chunk (or error) so that NOT_FOUND rejects open() instead of failing the stream.
    const first = await gen.next();
    async function* rest(): AsyncGenerator<Buffer, void, undefined> {
      if (first.done) return;
      yield first.value;
      yield* gen;
    }
    const stream = Readable.from(rest(), { objectMode: false });
    stream.once('close', () => void gen.return(undefined));
    return stream;
  }

  /** The blob's file under contentPath, opened read-only; undefined when missing or unreadable. */
  async function openContentFile(digest: string): Promise<FileHandle | undefined> {
    if (!opts.contentPath) return undefined;
    const p = parseDigestPath(digest);
    if (!p) return undefined;
    try {
      return await openFile(join(opts.contentPath, 'blobs', p.alg, p.hex), fsConstants.O_RDONLY);
    } catch {
      return undefined; // missing or unreadable: the gRPC path decides
    }
  }

  async function openFileFast(digest: string, range?: ByteRange): Promise<NodeJS.ReadableStream | undefined> {
    const fh = await openContentFile(digest);
    if (!fh) return undefined;
    try {
      const { size } = await fh.stat();
      if (range && range.start >= size && !(size === 0 && range.start === 0)) {
        throw new ContainerdError(
          'OUT_OF_RANGE',
          `containerd open ${digest}: range starts past ${size} bytes`,
        );
      }
      return fh.createReadStream({
        highWaterMark: 256 * 1024,
        ...(range ? { start: range.start, end: range.end } : {}),
      });
    } catch (err) {
      await fh.close().catch(() => {});
      throw err;
    }
  }

  const client: ContainerdClient = {
    namespace,

    async version() {
      const r = await unary(svc.version, svc.version.Version, {}, false, 'Version');
      return { version: r.version, revision: r.revision };
    },

    async listImages(filters = []) {
      const r = await unary(svc.images, svc.images.List, { filters }, true, 'Images.List');
      return (r.images ?? []).map(toImage);
    },

    async getImage(name) {
      const r = await unlessNotFound(unary(svc.images, svc.images.Get, { name }, true, `Images.Get ${name}`));
      return r?.image ? toImage(r.image) : undefined;
    },

    async info(digest) {
      const r = await unlessNotFound(
        unary(svc.content, svc.content.Info, { digest }, true, `Content.Info ${digest}`),
      );
      return r?.info ? toEntry(r.info) : undefined;
    },

    async listContent(filters = []) {
      const call = svc.content.List.call(svc.content, { filters }, md(true), {
        deadline: Date.now() + callTimeoutMs,
      });
      const out: ContentEntry[] = [];
      try {
        for await (const batch of call as AsyncIterable<{ info: RawInfo[] }>) {
          for (const i of batch.info ?? []) out.push(toEntry(i));
        }
      } catch (err) {
        throw fromGrpcError(err, 'Content.List');
      }
      return out;
    },

    async open(digest, range) {
      if (range && (range.start < 0 || range.end < range.start)) {
        throw new ContainerdError('INVALID_ARGUMENT', `containerd open ${digest}: bad range`);
      }
      return (await openFileFast(digest, range)) ?? (await openGrpc(digest, range));
    },

    openFile: openContentFile,

    async readAll(digest, maxBytes) {
      const stream = await client.open(digest);
      const chunks: Buffer[] = [];
      let total = 0;
      for await (const chunk of stream as AsyncIterable<Buffer>) {
        total += chunk.length;
        if (total > maxBytes) {
          (stream as Readable).destroy();
          throw new ContainerdError(
            'TOO_LARGE',
            `containerd blob ${digest} is larger than ${maxBytes} bytes`,
          );
        }
        chunks.push(chunk);
      }
      return Buffer.concat(chunks, total);
    },

    subscribe(filters, signal) {
      return {
        async *[Symbol.asyncIterator]() {
          if (signal.aborted) return;
          const call = svc.events.Subscribe.call(svc.events, { filters }, md(false));
          const onAbort = () => call.cancel();
          signal.addEventListener('abort', onAbort, { once: true });
          // grpc-js emits 'error' then 'end' on a broken stream; the iterator surfaces the error once.
          call.on('error', () => {});
          try {
            for await (const env of call as AsyncIterable<RawEnvelope>) yield decodeEnvelope(env);
          } catch (err) {
            if (signal.aborted) return;
            throw fromGrpcError(err, 'Events.Subscribe');
          } finally {
            signal.removeEventListener('abort', onAbort);
            call.cancel();
          }
        },
      };
    },

    async plugins(filters = []) {
      const r = await unary(svc.introspection, svc.introspection.Plugins, { filters }, false, 'Plugins');
      return (r.plugins ?? []).map((p) => {
        const out: Plugin = { type: p.type, id: p.id };
        if (p.init_err && (p.init_err.code !== 0 || p.init_err.message)) out.initError = p.init_err.message;
        return out;
      });
    },

    async criConfig() {
      let info: Record<string, string>;
      try {
        info = (await unary(svc.runtime, svc.runtime.Status, { verbose: true }, false, 'CRI Status')).info;
      } catch (err) {
        if (err instanceof ContainerdError && (err.code === 'UNIMPLEMENTED' || err.code === 'NOT_FOUND')) {
          return undefined;
        }
        throw err;
      }
      return parseCriConfig(info?.config);
    },

    close() {
      for (const s of Object.values(svc)) (s as grpc.Client).close();
      channel.close();
    },
  };
  return client;
}

/** Parses CRI Status info.config JSON (1.6/1.7 shape). undefined when absent or not the 1.x shape (2.x). */
export function parseCriConfig(json: string | undefined): CriConfig | undefined {
  if (!json) return undefined;
  let cfg: unknown;
  try {
    cfg = JSON.parse(json);
  } catch {
    return undefined;
  }
  if (typeof cfg !== 'object' || cfg === null) return undefined;
  const c = cfg as { registry?: { configPath?: unknown }; containerd?: Record<string, unknown> };
  if (typeof c.registry !== 'object' && typeof c.containerd !== 'object') return undefined;
  const out: CriConfig = {};
  const configPath = c.registry?.configPath;
  if (typeof configPath === 'string' && configPath !== '') out.configPath = configPath;
  const discard = c.containerd?.discardUnpackedLayers;
  if (typeof discard === 'boolean') out.discardUnpackedLayers = discard;
  const snap = c.containerd?.snapshotter;
  if (typeof snap === 'string' && snap !== '') out.snapshotter = snap;
  return out;
}

/** The call's answer, or undefined when containerd answers NotFound. */
async function unlessNotFound<T>(call: Promise<T>): Promise<T | undefined> {
  try {
    return await call;
  } catch (err) {
    if (isNotFound(err)) return undefined;
    throw err;
  }
}
