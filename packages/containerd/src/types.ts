import type { FileHandle } from 'node:fs/promises';
import type { ByteRange, Descriptor } from '@ferry/oci';

export type { ByteRange, Descriptor };

/** Options of {@link createContainerdClient}. */
export interface ContainerdOptions {
  /** Path of containerd's gRPC unix socket, e.g. `/run/containerd/containerd.sock`. */
  socket: string;
  /** containerd namespace sent as the `containerd-namespace` header. Default `k8s.io` (the CRI namespace). */
  namespace?: string;
  /**
   * containerd's content store directory, `<root>/io.containerd.content.v1.content`. When set and a blob's
   * file `<contentPath>/blobs/<alg>/<hex>` is readable, `open`/`readAll` read it directly (fast path);
   * otherwise they stream it through Content.Read over gRPC.
   */
  contentPath?: string;
  /** Deadline of each unary call in ms (Version, Images.*, Content.Info, Plugins, CRI Status). Default 30000. */
  callTimeoutMs?: number;
  /**
   * HTTP/2 flow-control window of the channel in bytes (`grpc-node.flow_control_window`). Default 4 MiB,
   * which measured best for Content.Read here (see README); grpc-js' own default is 64 KiB.
   */
  flowControlWindow?: number;
}

/** An image record of containerd (one per name; CRI keeps three names per pulled image). */
export interface Image {
  /** Image name, e.g. `docker.io/library/nginx:1.27` or `…@sha256:…` or a bare `sha256:<config>` (CRI image id). */
  name: string;
  labels: Record<string, string>;
  /** Manifest or index descriptor. */
  target: Descriptor;
}

/** Content store metadata of one blob. */
export interface ContentEntry {
  digest: string;
  size: number;
  labels: Record<string, string>;
}

/** One decoded event from Events.Subscribe. */
export interface ContainerdEvent {
  /** e.g. `/images/create`, `/images/update`, `/images/delete`, `/content/create`, `/content/delete`. */
  topic: string;
  namespace: string;
  /** Image name (image events). */
  name?: string;
  /** Blob digest (content events). */
  digest?: string;
  /** Payload type with the type URL stripped up to its last `/`, e.g. `containerd.services.images.v1.ImageCreate`. */
  type: string;
}

/** The parts of the CRI plugin's configuration Ferry cares about. */
export interface CriConfig {
  /** `[plugins."io.containerd.grpc.v1.cri".registry] config_path` (hosts.toml root(s)); undefined when unset. */
  configPath?: string;
  /** `[plugins."io.containerd.grpc.v1.cri".containerd] discard_unpacked_layers`. */
  discardUnpackedLayers?: boolean;
  /** The CRI snapshotter, e.g. `overlayfs`. */
  snapshotter?: string;
}

export interface Plugin {
  type: string;
  id: string;
  /** Set when the plugin failed to initialise. */
  initError?: string;
}

export interface ContainerdClient {
  /** The namespace every namespaced call uses. */
  readonly namespace: string;
  version(): Promise<{ version: string; revision: string }>;
  /** Images.List; filters use containerd's filter language and are OR-ed. */
  listImages(filters?: string[]): Promise<Image[]>;
  /** Images.Get; undefined when there is no image of that name. */
  getImage(name: string): Promise<Image | undefined>;
  /** Content.Info; undefined when the blob is not in this namespace. */
  info(digest: string): Promise<ContentEntry | undefined>;
  /** Content.List (all batches). */
  listContent(filters?: string[]): Promise<ContentEntry[]>;
  /**
   * A blob's bytes, whole or a range (inclusive end). Reads the file under `contentPath` when readable,
   * else streams Content.Read. Rejects with NotFoundError when the blob is missing, and with a
   * ContainerdError OUT_OF_RANGE when the range starts past the end.
   */
  open(digest: string, range?: ByteRange): Promise<NodeJS.ReadableStream>;
  /**
   * The blob's file under `contentPath`, opened read-only, for callers that read it into their own
   * buffers (the registry's zero-allocation blob path); undefined when there is no readable file (the
   * caller falls back to {@link open}). The caller closes the handle.
   */
  openFile(digest: string): Promise<FileHandle | undefined>;
  /** A whole small blob (manifest, config) in memory; rejects with TOO_LARGE when it exceeds maxBytes. */
  readAll(digest: string, maxBytes: number): Promise<Buffer>;
  /**
   * One Events.Subscribe stream. Ends when `signal` aborts (quietly) or the server ends the stream;
   * throws a ContainerdError when the stream breaks (e.g. UNAVAILABLE on a containerd restart).
   */
  subscribe(filters: string[], signal: AbortSignal): AsyncIterable<ContainerdEvent>;
  /** Introspection.Plugins, e.g. filters `['type==io.containerd.grpc.v1,id==cri']`. */
  plugins(filters?: string[]): Promise<Plugin[]>;
  /**
   * The CRI plugin config from CRI RuntimeService/Status(verbose) `info.config` (containerd 1.6/1.7).
   * undefined when not available: CRI disabled, or containerd 2.x whose Status no longer carries it.
   */
  criConfig(): Promise<CriConfig | undefined>;
  /** Closes the gRPC channel; later calls fail. */
  close(): void;
}
