// Ferry's cluster membership on top of kad-dht: what kad-dht does not give a cluster of tens to a
// few hundred nodes.
// - Mesh: up to `meshLimit` members, every node keeps a connection to every other. A newly
//   identified DHT peer is asked for the members it is connected to (`/ferry/members/1.0.0`, one
//   kad `Message` with the members in `closer`), and the ones we lack are dialled. With the mesh and
//   provide.ts sending records to every member (not only the k closest), every node's provider
//   store holds every record: a lookup is local, a miss is immediate.
// - Liveness: when a member's last connection closes, it is redialled; if that fails it is dead:
//   its provider records are dropped at once and lookups never yield it, until it connects again.
//   A member that leaves a ping unanswered (liveness.ts: a vanished host closes nothing) is dead at
//   once.
// - Settled: the local view counts as complete while members ≤ meshLimit, no dial is pending, every
//   member some peer named is connected or known dead, and no member joined in the last `settleMs`
//   (its records may still be arriving). A node that holds a partial view (it has only heard of
//   some members yet) does not take its store for the cluster's: its lookups ask peers.
// - Gossip: a node below the mesh limit asks one random member for its members every few seconds,
//   so a mesh left partial by a lost request fills up.
// - Introductions: a member that a new member dials while its own view is settled (a node joining
//   or restarting into a formed mesh) names the newcomer to every other member at once
//   (`/ferry/introduce/1.0.0`, one kad `Message` with the newcomer in `closer`), and they dial it.
//   Without that, the newcomer reaches the mesh one dial after another from its own queue (its
//   records with it, provide.ts pushes them on each new connection), while the members only heard
//   of it through gossip; with it, every member dials it within one round trip, and its handshakes
//   run in parallel. A newcomer introduced (by anyone) within `INTRODUCED_MS` is not introduced
//   again. An introduction is a peer's statement like a members answer: the same bounds apply, and
//   it is taken from identified members only, one newcomer each.
// - Dial pacing: mesh dials run at most `MESH_DIAL_CONCURRENCY` at a time per node, the rest wait
//   in a queue (bounded by meshLimit). When many nodes start at once, a node that dialled every
//   member it heard of at once had each handshake compete with all the others: on a busy machine
//   they ran past the dial timeout, were cut off and retried, and the mesh formed later.
// - Dials on a peer's word are bounded: a members answer is a peer's statement, and a hostile member
//   could name many made-up ids at one address of its choosing (on every node that asks it, on
//   every gossip round). An address is dialled for a named member at most once per
//   `NAMED_REDIAL_MS` (a failed one is named again by gossip later; a connected one is skipped).
import type { Connection, PeerId, Stream } from '@libp2p/interface';
import { peerIdFromMultihash } from '@libp2p/peer-id';
import { lpStream } from '@libp2p/utils';
import { type Multiaddr, multiaddr } from '@multiformats/multiaddr';
import type { Libp2p } from 'libp2p';
import * as Digest from 'multiformats/hashes/digest';
import { Message, MessageType } from '../generated/kad.js';
import { ipAndPort, withPeerId } from './address.ts';
import { errorText } from './options.ts';
import type { PeerBook } from './peer-book.ts';
import type { ProviderStore } from './provider-store.ts';
import type { P2PLogger } from './types.ts';

export const FERRY_MEMBERS_PROTOCOL = '/ferry/members/1.0.0';
export const FERRY_INTRODUCE_PROTOCOL = '/ferry/introduce/1.0.0';

/** Bound for one members answer (256 members with a few addresses each fit well below it). */
const MAX_ANSWER_BYTES = 128 * 1024;
/** Bound for one introduction (one member with a few addresses). */
const MAX_INTRODUCTION_BYTES = 2 * 1024;
/** A newcomer introduced (by this node or to it) within this is not introduced again. */
const INTRODUCED_MS = 10_000;
/** Addresses taken per member from an answer. */
const MAX_ADDRS_PER_MEMBER = 4;
/** Least time between two members requests started by newly identified members. */
const ASK_SPACING_MS = 1_000;
/** Mesh dials in flight per node (redials of a lost member are not paced). */
const MESH_DIAL_CONCURRENCY = 4;
/** Least time between two dials of one address for members a peer named. */
const NAMED_REDIAL_MS = 10_000;

export interface MembershipInit {
  libp2p: Libp2p;
  peers: PeerBook;
  store: ProviderStore;
  log: P2PLogger;
  /** Members this node connects to all of (full mesh) and replicates every record to. */
  meshLimit: number;
  settleMs: number;
  dialTimeoutMs: number;
  stopSignal: AbortSignal;
}

export class Membership {
  private readonly init: MembershipInit;
  /** Peers whose death is known (failed redial or dial), with when. */
  private readonly dead = new Map<string, number>();
  /** Member dials in flight (mesh and redials). */
  private readonly dialing = new Set<string>();
  /** Mesh dials waiting for a slot, by peer (bounded by meshLimit). */
  private readonly queued = new Map<string, { id: PeerId; addrs: Multiaddr[] }>();
  private meshDials = 0;
  /** Members some peer named that are neither connected nor known dead yet (bounded by meshLimit). */
  private readonly heardOf = new Set<string>();
  private lastJoin = 0;
  /** Addresses dialled for named members, with when (bounded: pruned, at most meshLimit × 4). */
  private readonly namedDials = new Map<string, number>();
  private lastAskAt = 0;
  private nextGossipAt = 0;
  /** Newcomers introduced by this node or to it, with when (bounded: pruned, at most meshLimit). */
  private readonly introduced = new Map<string, number>();
  /**
   * Since start (for the stats): introductions sent (one per member told), received, and of those
   * ignored (not from an identified member).
   */
  readonly counts = { introductionsSent: 0, introductionsReceived: 0, introductionsIgnored: 0 };

  constructor(init: MembershipInit) {
    this.init = init;
  }

  async start(): Promise<void> {
    await this.init.libp2p.handle(FERRY_MEMBERS_PROTOCOL, (stream) => this.answer(stream), {
      maxInboundStreams: 8,
      maxOutboundStreams: 8,
    });
    await this.init.libp2p.handle(
      FERRY_INTRODUCE_PROTOCOL,
      (stream, connection) => this.introduction(stream, connection.remotePeer.toString()),
      { maxInboundStreams: 4, maxOutboundStreams: 4 },
    );
  }

  isDead(id: string): boolean {
    return this.dead.has(id);
  }

  /** True when the local provider store can be taken as the whole cluster's. */
  settled(now = Date.now()): boolean {
    if (this.heardOf.size > 0) {
      for (const conn of this.init.libp2p.getConnections()) {
        this.heardOf.delete(conn.remotePeer.toString());
      }
    }
    const members = this.memberCount();
    return (
      members > 0 &&
      members <= this.init.meshLimit &&
      this.dialing.size === 0 &&
      this.queued.size === 0 &&
      this.heardOf.size === 0 &&
      now - this.lastJoin >= this.init.settleMs
    );
  }

  /** Members this node connects to all of (full mesh). */
  get meshLimit(): number {
    return this.init.meshLimit;
  }

  memberCount(): number {
    return this.init.peers.dhtConnected().length;
  }

  /** A DHT peer was identified: it is alive; learn the members it knows. */
  onMemberIdentified(id: PeerId, conn: Connection | undefined): void {
    if (this.dead.delete(id.toString())) {
      this.init.log.info({ peer: id.toString() }, 'peer back: connected again after it was declared gone');
    }
    this.heardOf.delete(id.toString());
    const now = Date.now();
    // it dialled us into a settled view: a newcomer the other members may not know of yet
    if (conn?.direction === 'inbound' && this.settled(now)) {
      this.introduce(id);
    }
    this.lastJoin = now;
    // one answer names every member the peer knows: while the mesh forms, asking each new member
    // again would cost every node O(members²) entries; gossip (tick) fills what one answer missed
    if (
      conn !== undefined &&
      this.memberCount() < this.init.meshLimit &&
      now - this.lastAskAt >= ASK_SPACING_MS
    ) {
      this.lastAskAt = now;
      this.askMembers(conn).catch((err: unknown) => {
        if (!this.init.stopSignal.aborted) {
          this.init.log.debug({ peer: id.toString(), err: errorText(err) }, 'members request failed');
        }
      });
    }
  }

  /**
   * Every `gossipMs` while below the mesh limit, ask one random member for its members: a mesh left
   * partial by a failed request or dial fills up over time, at one request per node per period.
   */
  tick(now: number, gossipMs: number): void {
    if (now < this.nextGossipAt || this.init.stopSignal.aborted) {
      return;
    }
    this.nextGossipAt = now + gossipMs;
    const members = this.init.peers.dhtConnected();
    if (members.length === 0 || members.length >= this.init.meshLimit) {
      return;
    }
    const pick = members[Math.floor(Math.random() * members.length)] as (typeof members)[number];
    const conn = this.init.libp2p.getConnections(pick.id).find((c) => c.status === 'open');
    if (conn !== undefined) {
      this.askMembers(conn).catch(() => {});
    }
  }

  /**
   * The last connection to a peer closed: redial it (twice, a second apart: a connection can close
   * for a slow ping on a busy node); dead if both fail. A peer that stopped refuses at once.
   */
  onDisconnected(id: PeerId): void {
    const key = id.toString();
    if (this.init.stopSignal.aborted || this.dialing.has(key)) {
      return;
    }
    (async () => {
      for (let attempt = 0; attempt < 2; attempt++) {
        if (attempt > 0) {
          await new Promise((r) => setTimeout(r, 1_000).unref());
        }
        if (this.init.stopSignal.aborted || (await this.dial(id, []))) {
          return;
        }
      }
      this.markDead(key, 'redial after disconnect failed');
    })();
  }

  /** A dial to a provider failed (lookup): it is dead. */
  onDialFailed(id: string): void {
    this.markDead(id, 'dial failed');
  }

  /**
   * A peer left a liveness ping unanswered (liveness.ts aborted its connections): dead now, even
   * while the redial that the closed connection started is still pending.
   */
  declareDead(id: string, reason: string): void {
    this.markDead(id, reason, true);
  }

  private markDead(id: string, reason: string, evenIfConnected = false): void {
    if (!evenIfConnected && this.init.libp2p.getConnections().some((c) => c.remotePeer.toString() === id)) {
      return;
    }
    this.dead.set(id, Date.now());
    this.heardOf.delete(id);
    const dropped = this.init.store.removePeer(id);
    this.init.log.info({ peer: id, records: dropped, reason }, 'peer gone: its provider records dropped');
  }

  /** Answer a members request: the DHT members we are connected to, with their listen addresses. */
  private async answer(stream: Stream): Promise<void> {
    try {
      const lp = lpStream(stream, { maxDataLength: 1024 });
      const signal = AbortSignal.timeout(this.init.dialTimeoutMs);
      await lp.read({ signal });
      const closer = this.init.peers
        .dhtConnected()
        .slice(0, this.init.meshLimit)
        .map(({ id, addrs }) => ({
          id: id.toMultihash().bytes as Uint8Array<ArrayBuffer>,
          multiaddrs: addrs.slice(0, MAX_ADDRS_PER_MEMBER).map((a) => a.bytes as Uint8Array<ArrayBuffer>),
        }));
      await lp.write(Message.encode({ type: MessageType.FIND_NODE, closer, providers: [] }), { signal });
      await stream.close({ signal });
    } catch (err) {
      stream.abort(err instanceof Error ? err : new Error(String(err)));
    }
  }

  private async askMembers(conn: Connection): Promise<void> {
    const signal = AbortSignal.any([AbortSignal.timeout(this.init.dialTimeoutMs), this.init.stopSignal]);
    const stream = await conn.newStream(FERRY_MEMBERS_PROTOCOL, { signal });
    let answer: Message;
    try {
      const lp = lpStream(stream, { maxDataLength: MAX_ANSWER_BYTES });
      await lp.write(Message.encode({ type: MessageType.FIND_NODE, closer: [], providers: [] }), { signal });
      answer = Message.decode(await lp.read({ signal }));
      await stream.close({ signal });
    } catch (err) {
      stream.abort(err instanceof Error ? err : new Error(String(err)));
      throw err;
    }
    this.learn(answer.closer.slice(0, this.init.meshLimit));
  }

  /**
   * Tell every other member about `id` (a newcomer that dialled us), unless it was introduced
   * within INTRODUCED_MS. Never throws.
   */
  private introduce(id: PeerId): void {
    const key = id.toString();
    if (!this.noteIntroduced(key)) {
      return;
    }
    const addrs = this.init.peers.get(key)?.listenAddrs ?? [];
    if (addrs.length === 0) {
      return;
    }
    const body = Message.encode({
      type: MessageType.FIND_NODE,
      closer: [
        {
          id: id.toMultihash().bytes as Uint8Array<ArrayBuffer>,
          multiaddrs: addrs.slice(0, MAX_ADDRS_PER_MEMBER).map((a) => a.bytes as Uint8Array<ArrayBuffer>),
        },
      ],
      providers: [],
    });
    for (const member of this.init.peers.dhtConnected()) {
      if (member.id.equals(id)) {
        continue;
      }
      const conn = this.init.libp2p.getConnections(member.id).find((c) => c.status === 'open');
      if (conn === undefined) {
        continue;
      }
      this.counts.introductionsSent++;
      this.sendIntroduction(conn, body).catch((err: unknown) => {
        if (!this.init.stopSignal.aborted) {
          this.init.log.debug({ peer: member.id.toString(), err: errorText(err) }, 'introduction failed');
        }
      });
    }
    this.init.log.debug({ peer: key }, 'newcomer introduced to the members');
  }

  private async sendIntroduction(conn: Connection, body: Uint8Array): Promise<void> {
    const signal = AbortSignal.any([AbortSignal.timeout(this.init.dialTimeoutMs), this.init.stopSignal]);
    const stream = await conn.newStream(FERRY_INTRODUCE_PROTOCOL, { signal });
    try {
      await lpStream(stream, { maxDataLength: MAX_INTRODUCTION_BYTES }).write(body, { signal });
      await stream.close({ signal });
    } catch (err) {
      stream.abort(err instanceof Error ? err : new Error(String(err)));
      throw err;
    }
  }

  /**
   * A member introduces a newcomer: dial it (as a member a members answer names). Taken from
   * identified members only, and one newcomer per introduction; the rest is ignored (counted).
   */
  private async introduction(stream: Stream, sender: string): Promise<void> {
    try {
      const lp = lpStream(stream, { maxDataLength: MAX_INTRODUCTION_BYTES });
      const message = Message.decode(await lp.read({ signal: AbortSignal.timeout(this.init.dialTimeoutMs) }));
      await stream.close();
      this.counts.introductionsReceived++;
      if (this.init.peers.get(sender)?.dht !== true) {
        this.counts.introductionsIgnored++;
        return;
      }
      const named = message.closer.slice(0, 1);
      for (const member of named) {
        try {
          this.noteIntroduced(peerIdFromMultihash(Digest.decode(member.id)).toString());
        } catch {
          // malformed: learn() skips it too
        }
      }
      this.learn(named);
    } catch (err) {
      stream.abort(err instanceof Error ? err : new Error(String(err)));
    }
  }

  /** Record that `key` was introduced now; false when it already was within INTRODUCED_MS. */
  private noteIntroduced(key: string): boolean {
    const now = Date.now();
    const last = this.introduced.get(key);
    if (last !== undefined && now - last < INTRODUCED_MS) {
      return false;
    }
    if (this.introduced.size >= this.init.meshLimit) {
      for (const [peer, at] of this.introduced) {
        if (now - at >= INTRODUCED_MS || this.introduced.size >= this.init.meshLimit) {
          this.introduced.delete(peer);
        }
      }
    }
    this.introduced.delete(key); // re-inserted: the map stays in time order
    this.introduced.set(key, now);
    return true;
  }

  /**
   * Members a peer named (an answer or an introduction): queue dials to the ones we lack, within
   * the mesh limit and the per-address bound.
   */
  private learn(members: Message['closer']): void {
    const self = this.init.libp2p.peerId.toString();
    let room = this.init.meshLimit - this.memberCount() - this.dialing.size - this.queued.size;
    for (const member of members) {
      if (room <= 0) {
        return;
      }
      let id: PeerId;
      let addrs: Multiaddr[];
      try {
        id = peerIdFromMultihash(Digest.decode(member.id));
        addrs = member.multiaddrs.slice(0, MAX_ADDRS_PER_MEMBER).map((b) => multiaddr(b));
      } catch {
        continue; // a peer's statement: evidence, skipped when malformed
      }
      const key = id.toString();
      if (
        key === self ||
        this.dialing.has(key) ||
        this.queued.has(key) ||
        this.init.libp2p.getConnections(id).length > 0
      ) {
        continue;
      }
      addrs = this.fresh(addrs);
      if (addrs.length === 0) {
        continue;
      }
      if (this.heardOf.size < this.init.meshLimit) {
        this.heardOf.add(key);
      }
      this.queued.set(key, { id, addrs });
      room--;
    }
    this.nextMeshDial();
  }

  /**
   * The addresses not dialled for a named member within NAMED_REDIAL_MS; marks them dialled (a
   * member skipped after this is named again by gossip). Addresses without an IP and port are kept
   * out: only a dial by IP and port is ever started from a peer's word.
   */
  private fresh(addrs: Multiaddr[]): Multiaddr[] {
    const now = Date.now();
    const cap = this.init.meshLimit * MAX_ADDRS_PER_MEMBER;
    if (this.namedDials.size >= cap) {
      for (const [addr, at] of this.namedDials) {
        if (now - at >= NAMED_REDIAL_MS) {
          this.namedDials.delete(addr);
        }
      }
    }
    const out: Multiaddr[] = [];
    for (const addr of addrs) {
      const ep = ipAndPort(addr);
      if (ep?.port === undefined) {
        continue;
      }
      const key = `${ep.ip}|${ep.port}`;
      const last = this.namedDials.get(key);
      if ((last !== undefined && now - last < NAMED_REDIAL_MS) || this.namedDials.size >= cap) {
        continue;
      }
      this.namedDials.delete(key); // re-inserted: the map stays in time order
      this.namedDials.set(key, now);
      out.push(addr);
    }
    return out;
  }

  /** Start queued mesh dials while below the concurrency; each finished dial starts the next. */
  private nextMeshDial(): void {
    while (this.meshDials < MESH_DIAL_CONCURRENCY && this.queued.size > 0 && !this.init.stopSignal.aborted) {
      const [key, { id, addrs }] = this.queued.entries().next().value as [
        string,
        { id: PeerId; addrs: Multiaddr[] },
      ];
      this.queued.delete(key);
      if (this.init.libp2p.getConnections(id).length > 0) {
        continue; // it dialled us meanwhile
      }
      this.meshDials++;
      // a member we cannot reach now no longer holds the view open (gossip names it again later);
      // it is not declared dead: on a busy node a dial can time out while the peer is alive
      this.dial(id, addrs).then((ok) => {
        this.meshDials--;
        if (!ok && !this.dialing.has(key)) {
          this.heardOf.delete(key);
        }
        this.nextMeshDial();
      });
    }
    if (this.init.stopSignal.aborted) {
      this.queued.clear();
    }
  }

  /** Dial a member (by address when given; noise checks it is `id`). Never throws. */
  private async dial(id: PeerId, addrs: Multiaddr[]): Promise<boolean> {
    const key = id.toString();
    if (this.dialing.has(key)) {
      return false;
    }
    this.dialing.add(key);
    try {
      const signal = AbortSignal.any([AbortSignal.timeout(this.init.dialTimeoutMs), this.init.stopSignal]);
      const target = addrs.length > 0 ? addrs.map((a) => withPeerId(a, key)) : id;
      await this.init.libp2p.dial(target, { signal });
      return true;
    } catch (err) {
      if (!this.init.stopSignal.aborted) {
        this.init.log.debug({ peer: key, err: errorText(err) }, 'member dial failed');
      }
      return false;
    } finally {
      this.dialing.delete(key);
    }
  }
}
