// Ferry's compact provider-record protocol, `/ferry/providers/1.0.0`: thousands of records in a
// few frames instead of one kad ADD_PROVIDER message each. kad-dht handles each ADD_PROVIDER
// message on its own (decode, CID and peer id parsing, a fresh timeout, a peer-store write of the
// provider's addresses): 10,000 records sent to 49 members cost each member seconds of CPU and
// the sender 490,000 messages. Here the provider is the authenticated remote peer of the stream
// (noise), so a record is only its key.
//
// Wire: length-prefixed frames. A records frame is 1..MAX_KEYS_PER_FRAME sha2-256 multihashes
// (34 bytes each: 0x12 0x20 and the 32-byte digest) back to back; the one-byte frame END ends the
// batch; the receiver answers with the one-byte frame END once every record is stored. Bounds
// (hostile peer): frame size, frames per stream, a read deadline per frame, streams per
// connection, and the provider store's own bounds (keys, peers, records per peer). Anything else
// aborts the stream; nothing is echoed.
import type { Connection, PeerId, Stream } from '@libp2p/interface';
import { lpStream } from '@libp2p/utils';
import type { Libp2p } from 'libp2p';
import type { ProviderStore } from './provider-store.ts';

export const FERRY_PROVIDERS_PROTOCOL = '/ferry/providers/1.0.0';

/** A sha2-256 multihash: code, length, digest. */
export const MULTIHASH_BYTES = 34;
/** Records per frame (34,816 bytes). */
export const MAX_KEYS_PER_FRAME = 1_024;
/** Records frames one stream may carry (65,536 records). */
export const MAX_FRAMES_PER_STREAM = 64;
/** Deadline for each frame of a batch to arrive. */
const FRAME_TIMEOUT_MS = 10_000;
const END = new Uint8Array([0]);

/** Split `keys` (sha2-256 multihash bytes) into records frames. */
export function encodeRecordFrames(keys: Uint8Array[]): Uint8Array[] {
  const frames: Uint8Array[] = [];
  for (let i = 0; i < keys.length; i += MAX_KEYS_PER_FRAME) {
    const chunk = keys.slice(i, i + MAX_KEYS_PER_FRAME);
    const frame = new Uint8Array(chunk.length * MULTIHASH_BYTES);
    chunk.forEach((k, j) => {
      frame.set(k, j * MULTIHASH_BYTES);
    });
    frames.push(frame);
  }
  return frames;
}

/** The keys of a records frame; throws on anything but whole sha2-256 multihashes. */
export function decodeRecordFrame(frame: Uint8Array): Uint8Array[] {
  if (frame.length === 0 || frame.length % MULTIHASH_BYTES !== 0) {
    throw new Error('records frame is not a whole number of sha2-256 multihashes');
  }
  const keys: Uint8Array[] = [];
  for (let i = 0; i < frame.length; i += MULTIHASH_BYTES) {
    if (frame[i] !== 0x12 || frame[i + 1] !== 0x20) {
      throw new Error('records frame holds a key that is not a sha2-256 multihash');
    }
    keys.push(frame.subarray(i, i + MULTIHASH_BYTES));
  }
  return keys;
}

/**
 * Send `keys` (at most MAX_KEYS_PER_FRAME × MAX_FRAMES_PER_STREAM) as this node's records to
 * `peer` on one stream and wait for its acknowledgement. Throws on any failure.
 */
export async function sendRecordBatch(
  libp2p: Pick<Libp2p, 'dialProtocol'>,
  peer: PeerId,
  keys: Uint8Array[],
  signal: AbortSignal,
): Promise<void> {
  const frames = encodeRecordFrames(keys);
  if (frames.length > MAX_FRAMES_PER_STREAM) {
    throw new Error(`at most ${MAX_KEYS_PER_FRAME * MAX_FRAMES_PER_STREAM} records per batch`);
  }
  const stream = await libp2p.dialProtocol(peer, FERRY_PROVIDERS_PROTOCOL, { signal });
  try {
    const lp = lpStream(stream, { maxDataLength: 1 });
    await lp.writeV([...frames, END], { signal });
    const ack = await lp.read({ signal });
    if (ack.byteLength !== 1 || ack.get(0) !== 0) {
      throw new Error('peer answered the records batch with something else than END');
    }
    await stream.close({ signal });
  } catch (err) {
    stream.abort(err instanceof Error ? err : new Error(String(err)));
    throw err;
  }
}

/** Register the receiving side: records go into `store`, with the stream's remote peer as provider. */
export async function handleRecordBatches(libp2p: Libp2p, store: ProviderStore): Promise<void> {
  await libp2p.handle(
    FERRY_PROVIDERS_PROTOCOL,
    (stream: Stream, connection: Connection) => {
      receive(stream, connection.remotePeer, store).catch((err: unknown) => {
        stream.abort(err instanceof Error ? err : new Error(String(err)));
      });
    },
    { maxInboundStreams: 4, maxOutboundStreams: 16 },
  );
}

async function receive(stream: Stream, provider: PeerId, store: ProviderStore): Promise<void> {
  const lp = lpStream(stream, { maxDataLength: MAX_KEYS_PER_FRAME * MULTIHASH_BYTES });
  for (let frames = 0; ; frames++) {
    const frame = (await lp.read({ signal: AbortSignal.timeout(FRAME_TIMEOUT_MS) })).subarray();
    if (frame.length === 1 && frame[0] === 0) {
      break;
    }
    if (frames >= MAX_FRAMES_PER_STREAM) {
      throw new Error('too many records frames on one stream');
    }
    for (const key of decodeRecordFrame(frame)) {
      store.add(key, provider);
    }
  }
  const signal = AbortSignal.timeout(FRAME_TIMEOUT_MS);
  await lp.write(END, { signal });
  await stream.close({ signal });
}
