// GET_PROVIDERS asked directly of the connected members closest to a key, all at once, each bounded
// by a short deadline: what Ferry adds to kad-dht's lookup for a node whose view is not known to be
// complete (joining, or beyond the mesh limit). kad-dht's own query is iterative (α = 3 peers at a
// time, following `closer` answers hop by hop), which at tens of milliseconds per hop on a busy node
// is slower than the mirror's resolve timeout; one round over connections we already hold is not.
// Answers are a peer's statements: each is bounded, and every provider in it is still dialled
// (noise checks its id) before the lookup yields it.
import type { Connection, PeerId } from '@libp2p/interface';
import { peerIdFromMultihash } from '@libp2p/peer-id';
import { lpStream } from '@libp2p/utils';
import { type Multiaddr, multiaddr } from '@multiformats/multiaddr';
import * as Digest from 'multiformats/hashes/digest';
import { Message, MessageType } from '../generated/kad.js';
import { closestCandidates, kadId } from './batch-provide.ts';
import type { PeerBook } from './peer-book.ts';

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
      try {
        onAnswer(await getProviders(conn, init.protocol, multihash, signal));
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
