// GET_PROVIDERS asked directly of the connected members closest to a key, all at once, each bounded
// by a short deadline: what Ferry adds to kad-dht's lookup for a node whose view is not known to be
// complete (joining, or beyond the mesh limit). kad-dht's own query is iterative (α = 3 peers at a
// time, following `closer` answers hop by hop), which at tens of milliseconds per hop on a busy node
// is slower than the mirror's resolve timeout; one round over connections we already hold is not.
// Answers are a peer's statements: each is bounded, and every provider in it is still dialled
// (noise checks its id) before the lookup yields it.
// Members that speak it are asked on `/ferry/ask/1.0.0`: the same kad `Message` both ways, answered
// from Ferry's provider store alone. kad-dht's GET_PROVIDERS handler also computes the closer peers
// (a peer-store read under a lock for each of the k closest, and one per provider for its
// addresses): while members join, every lookup on every node asks k members, and those answers were
// most of the cluster's CPU, delaying the very connections that settle the views.
import type { Connection, PeerId, Stream } from '@libp2p/interface';
import { peerIdFromMultihash } from '@libp2p/peer-id';
import { lpStream } from '@libp2p/utils';
import { type Multiaddr, multiaddr } from '@multiformats/multiaddr';
import type { Libp2p } from 'libp2p';
import * as Digest from 'multiformats/hashes/digest';
import { Message, MessageType } from '../generated/kad.js';
import { closestCandidates, kadId } from './batch-provide.ts';
import type { PeerBook } from './peer-book.ts';
import type { ProviderStore } from './provider-store.ts';

export const FERRY_ASK_PROTOCOL = '/ferry/ask/1.0.0';
/** Bound for one request (a kad Message with a sha2-256 multihash key). */
const MAX_REQUEST_BYTES = 256;
/** Deadline for a request to arrive and its answer to leave. */
const ANSWER_TIMEOUT_MS = 5_000;

/** Bound for one GET_PROVIDERS answer. */
const MAX_ANSWER_BYTES = 64 * 1024;
/** Providers and addresses taken from one answer. */
const MAX_PROVIDERS = 20;
const MAX_ADDRS = 4;

export interface FoundProvider {
  id: PeerId;
  multiaddrs: Multiaddr[];
}

export interface AskInit {
  getConnection: (id: PeerId) => Connection | undefined;
  peers: PeerBook;
  /** kad-dht's protocol, for members that do not speak FERRY_ASK_PROTOCOL. */
  protocol: string;
  isDead: (id: string) => boolean;
}

/**
 * Ask the `count` connected DHT members closest to `multihash` for its providers, in parallel; call
 * `onAnswer` with each answer's providers as it arrives. Resolves when every peer answered, failed,
 * or `signal` aborted (never rejects). Returns how many peers were asked.
 */
export async function askClosestMembers(
  init: AskInit,
  multihash: Uint8Array,
  count: number,
  signal: AbortSignal,
  onAnswer: (providers: FoundProvider[]) => void,
): Promise<number> {
  const members = init.peers.candidates(init.isDead).filter((c) => init.getConnection(c.id) !== undefined);
  const asked = closestCandidates(kadId(multihash), members, count);
  await Promise.all(
    asked.map(async (peer) => {
      const conn = init.getConnection(peer.id);
      if (conn === undefined) {
        return;
      }
      const protocol = init.peers.get(peer.key)?.ask === true ? FERRY_ASK_PROTOCOL : init.protocol;
      try {
        onAnswer(await getProviders(conn, protocol, multihash, signal));
      } catch {
        // a peer that does not answer in time is simply not heard
      }
    }),
  );
  return asked.length;
}

async function getProviders(
  conn: Connection,
  protocol: string,
  multihash: Uint8Array,
  signal: AbortSignal,
): Promise<FoundProvider[]> {
  const stream = await conn.newStream(protocol, { signal });
  let answer: Message;
  try {
    const lp = lpStream(stream, { maxDataLength: MAX_ANSWER_BYTES });
    const request = { type: MessageType.GET_PROVIDERS, key: multihash as Uint8Array<ArrayBuffer> };
    await lp.write(Message.encode({ ...request, closer: [], providers: [] }), { signal });
    answer = Message.decode(await lp.read({ signal }));
    await stream.close({ signal });
  } catch (err) {
    stream.abort(err instanceof Error ? err : new Error(String(err)));
    throw err;
  }
  const out: FoundProvider[] = [];
  for (const p of answer.providers.slice(0, MAX_PROVIDERS)) {
    try {
      out.push({
        id: peerIdFromMultihash(Digest.decode(p.id)),
        multiaddrs: p.multiaddrs.slice(0, MAX_ADDRS).map((b) => multiaddr(b)),
      });
    } catch {
      // malformed entry: skipped
    }
  }
  return out;
}

/**
 * Answer FERRY_ASK_PROTOCOL: the providers `store` holds for the key (at most MAX_PROVIDERS, none
 * this node holds dead), with the listen addresses of the connected ones. Anything malformed
 * aborts the stream; nothing is echoed.
 */
export async function handleAsks(
  libp2p: Libp2p,
  store: ProviderStore,
  peers: PeerBook,
  isDead: (id: string) => boolean,
): Promise<void> {
  await libp2p.handle(
    FERRY_ASK_PROTOCOL,
    (stream: Stream) => {
      answerAsk(stream, store, peers, isDead).catch((err: unknown) => {
        stream.abort(err instanceof Error ? err : new Error(String(err)));
      });
    },
    { maxInboundStreams: 32, maxOutboundStreams: 32 },
  );
}

async function answerAsk(
  stream: Stream,
  store: ProviderStore,
  peers: PeerBook,
  isDead: (id: string) => boolean,
): Promise<void> {
  const signal = AbortSignal.timeout(ANSWER_TIMEOUT_MS);
  const lp = lpStream(stream, { maxDataLength: MAX_REQUEST_BYTES });
  const request = Message.decode(await lp.read({ signal }));
  if (request.type !== MessageType.GET_PROVIDERS || request.key === undefined) {
    throw new Error('not a GET_PROVIDERS request');
  }
  const providers = store
    .get(request.key)
    .filter((id) => !isDead(id.toString()))
    .slice(0, MAX_PROVIDERS)
    .map((id) => ({
      id: id.toMultihash().bytes as Uint8Array<ArrayBuffer>,
      multiaddrs: (peers.get(id.toString())?.listenAddrs ?? [])
        .slice(0, MAX_ADDRS)
        .map((a) => a.bytes as Uint8Array<ArrayBuffer>),
    }));
  await lp.write(Message.encode({ type: MessageType.GET_PROVIDERS, closer: [], providers }), { signal });
  await stream.close({ signal });
}
