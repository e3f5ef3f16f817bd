// Ferry's failure detector, in place of libp2p's connection monitor and yamux's keep-alive. Its
// cost per node does not grow with the cluster: a node pings a bounded number of members, not
// every connection.
// - A probe is one yamux PING frame on the peer's connection (no stream). Any frame received on a
//   connection is a sign of life: a connection carrying traffic is never probed.
// - Ring: the peers a node has an open connection to, sorted by peer id with the node itself, form
//   a ring. A node watches its `SUCCESSORS` (2) next peers on it: it probes one once nothing
//   arrived from it for `quietMs`. In a full mesh every member is watched by its 2 predecessors,
//   whatever the cluster size; a node sends at most 2 probes per `quietMs` and answers about as
//   many.
// - Round robin: every `ROUND_ROBIN_MS` one other peer, in a shuffled round robin, is probed if
//   quiet: connections outside every ring (a partial mesh, beyond meshLimit) are checked too.
// - A probe unanswered within `timeoutMs` (and nothing else heard from the peer meanwhile): the
//   peer is gone. Every connection to it is aborted and `onUnresponsive` names it: the node drops
//   its records (membership.ts) and tells its members (suspicion.ts), who stop sending lookups to
//   it at once and confirm with their own probe (`check`) before dropping its records.
// - Under load: an answer that came in with the deadline is read before the verdict, and a deadline
//   this node's own event loop let pass late (by 1 s or more: a blocked or CPU-starved process)
//   proves nothing of the peer: the ping is waited for again (3 deadlines at most). A ping is never
//   abandoned: yamux takes the late answer to a ping it forgot for a protocol error and aborts the
//   connection, so a slow answer would otherwise cut a live peer off.
// - Worst case, with the defaults (quietMs 2 s, the 500 ms housekeeping tick, pingTimeoutMs 5 s),
//   at 100 nodes as at any size within the mesh: a peer that freezes or vanishes (it closes
//   nothing) is probed by each of its 2 predecessors within 2 + 0.5 s of its last frame, known dead
//   by them 5 s later (7.5 s), and every member is told over one stream each at once: lookups
//   everywhere avoid it within about 8 s (target: 10 s); a told member drops its records after its
//   own probe, within a further 5 s. Two adjacent silent peers: the second is watched by its other
//   predecessor. A crashed process closes its connections and is found by the membership's redial
//   (membership.ts) at once.
// - One connection per pair: when two peers dial each other at the same time, both keep two
//   connections (twice the idle cost). The one dialled by the lower peer id stays, whatever the
//   timing; the dialler of the other closes it once it is idle (no stream) and 2 s old.
import type { Connection } from '@libp2p/interface';
import type { Libp2p } from 'libp2p';
import { connectionMuxer, type MuxerInternals } from './kad-internals.ts';
import type { P2PLogger } from './types.ts';

/** Least age of a duplicate connection before it is closed. */
const DUPLICATE_GRACE_MS = 2_000;
/** Ring successors each node watches. */
export const SUCCESSORS = 2;
/** One more peer, in a shuffled round robin, is probed this often (if quiet). */
export const ROUND_ROBIN_MS = 10_000;
/** A probe's deadline that fires this late was held up by this node's own event loop. */
const STALL_MS = 1_000;
/** Deadlines one probe is waited for at most, when this node's own stalls spoil them. */
const PROBES_WHEN_STALLED = 3;

export interface LivenessInit {
  libp2p: Libp2p;
  log: P2PLogger;
  /** Silence after which a watched peer is probed. */
  quietMs: number;
  /** Deadline of a probe's answer. */
  timeoutMs: number;
  /** Peers left out of the ring (suspected: being checked already). */
  skip: (peer: string) => boolean;
  /** A peer did not answer this node's own probe in time: its connections were aborted. */
  onUnresponsive: (peer: string, reason: string) => void;
  stopSignal: AbortSignal;
}

/** What a check of a peer found. */
export type CheckResult = 'alive' | 'gone' | 'unconnected';

/** Per peer, shared by its connections. */
interface PeerState {
  lastHeard: number;
  /** The probe in flight. */
  probing?: Promise<CheckResult>;
}

export class Liveness {
  private readonly init: LivenessInit;
  private readonly self: string;
  private readonly watched = new WeakMap<Connection, { peer: string; muxer: MuxerInternals }>();
  /** Peers with an open connection (pruned every tick). */
  private readonly peers = new Map<string, PeerState>();
  private roundRobin: string[] = [];
  private nextRoundRobinAt = 0;
  /**
   * Since start (for the stats): probes sent, duplicate connections closed, peers found gone by this
   * node's own probes (confirmations of a member's suspicion included).
   */
  readonly counts = { pings: 0, duplicatesClosed: 0, unresponsive: 0, stalledProbes: 0 };
  private warned = false;

  constructor(init: LivenessInit) {
    this.init = init;
    this.self = init.libp2p.peerId.toString();
  }

  /** Call on every new connection: watch what arrives on it. */
  onConnectionOpen(conn: Connection): void {
    this.watch(conn, Date.now());
  }

  /** Probe the watched peers that were quiet too long; close duplicates (every housekeeping tick). */
  tick(now: number): void {
    if (this.init.stopSignal.aborted) {
      return;
    }
    const open = new Set<string>();
    for (const conn of this.init.libp2p.getConnections()) {
      if (conn.status !== 'open') {
        continue;
      }
      const w = this.watched.get(conn) ?? this.watch(conn, now);
      if (w === undefined) {
        continue;
      }
      if (open.has(w.peer)) {
        this.dedupe(w.peer, now);
      }
      open.add(w.peer);
    }
    for (const peer of this.peers.keys()) {
      if (!open.has(peer)) {
        this.peers.delete(peer);
      }
    }
    const targets = this.successors([...open].filter((p) => !this.init.skip(p)));
    if (now >= this.nextRoundRobinAt) {
      this.nextRoundRobinAt = now + ROUND_ROBIN_MS;
      const next = this.nextRoundRobin(open, targets);
      if (next !== undefined) {
        targets.push(next);
      }
    }
    for (const peer of targets) {
      const state = this.peers.get(peer);
      if (state !== undefined && state.probing === undefined && now - state.lastHeard >= this.init.quietMs) {
        this.check(peer).then((result) => {
          if (result === 'gone') {
            this.init.onUnresponsive(peer, `no answer to a ping within ${this.init.timeoutMs} ms`);
          }
        });
      }
    }
  }

  /**
   * Probe `peer` now (joining a probe in flight): 'alive' if it answered or anything arrived from it
   * within `timeoutMs`; 'gone' if not (its connections are aborted); 'unconnected' without an open
   * connection. Never rejects.
   */
  check(peer: string): Promise<CheckResult> {
    const state = this.peers.get(peer);
    const conn = this.init.libp2p
      .getConnections()
      .find((c) => c.status === 'open' && c.remotePeer.toString() === peer);
    const muxer = conn === undefined ? undefined : this.watched.get(conn)?.muxer;
    if (state === undefined || conn === undefined || muxer === undefined) {
      return Promise.resolve('unconnected');
    }
    if (state.probing !== undefined) {
      return state.probing;
    }
    const probing = this.probe(peer, state, conn, muxer);
    state.probing = probing;
    probing.finally(() => {
      state.probing = undefined;
    });
    return probing;
  }

  /**
   * One ping, waited for `timeoutMs`. The ping is never abandoned (see `MuxerInternals.ping`): it
   * stays in flight until answered or the connection goes, and a later probe joins it. A deadline
   * this node's own event loop let pass (it fired `STALL_MS` late: a blocked or CPU-starved process)
   * proves nothing of the peer: the ping is waited for again, `PROBES_WHEN_STALLED` deadlines in all.
   */
  private async probe(
    peer: string,
    state: PeerState,
    conn: Connection,
    muxer: MuxerInternals,
  ): Promise<CheckResult> {
    this.counts.pings++;
    const answered = muxer.ping().then(
      () => true,
      () => false,
    );
    for (let left = PROBES_WHEN_STALLED; ; left--) {
      const waited = Date.now();
      if (await this.within(answered, this.init.timeoutMs)) {
        state.lastHeard = Date.now();
        return 'alive';
      }
      // Timers run before the poll phase: an answer that came with the deadline is read first.
      await new Promise((resolve) => setImmediate(resolve));
      if (this.init.stopSignal.aborted || conn.status !== 'open') {
        return 'unconnected';
      }
      // a frame may have come in meanwhile: only silence for the whole deadline counts
      if (Date.now() - state.lastHeard < this.init.timeoutMs) {
        return 'alive';
      }
      if (left > 1 && Date.now() - waited >= this.init.timeoutMs + STALL_MS) {
        this.counts.stalledProbes++;
        continue;
      }
      this.counts.unresponsive++;
      this.init.log.info({ peer }, 'peer unresponsive: connections aborted');
      for (const c of this.init.libp2p.getConnections(conn.remotePeer)) {
        c.abort(new Error(`no answer to a ping within ${this.init.timeoutMs} ms`));
      }
      return 'gone';
    }
  }

  /** Whether `answer` resolves true within `ms` (false at the deadline, or once the node stops). */
  private within(answer: Promise<boolean>, ms: number): Promise<boolean> {
    return new Promise((resolve) => {
      const done = (v: boolean) => {
        clearTimeout(timer);
        this.init.stopSignal.removeEventListener('abort', stop);
        resolve(v);
      };
      const stop = () => done(false);
      const timer = setTimeout(stop, ms);
      this.init.stopSignal.addEventListener('abort', stop, { once: true });
      answer.then(done);
    });
  }

  /** The `SUCCESSORS` peers after this node on the ring of `peers` and itself, sorted by id. */
  private successors(peers: string[]): string[] {
    peers.sort();
    let start = peers.findIndex((p) => p > this.self);
    if (start < 0) {
      start = 0;
    }
    const out: string[] = [];
    for (let n = 0; n < Math.min(SUCCESSORS, peers.length); n++) {
      out.push(peers[(start + n) % peers.length] as string);
    }
    return out;
  }

  /** The next connected peer of the shuffled round robin that is not among `targets`. */
  private nextRoundRobin(open: Set<string>, targets: string[]): string | undefined {
    for (let pass = 0; pass < 2; pass++) {
      while (this.roundRobin.length > 0) {
        const peer = this.roundRobin.pop() as string;
        if (open.has(peer) && !targets.includes(peer)) {
          return peer;
        }
      }
      // a new round: every connected peer once, in random order
      this.roundRobin = [...open];
      for (let i = this.roundRobin.length - 1; i > 0; i--) {
        const j = Math.floor(Math.random() * (i + 1));
        [this.roundRobin[i], this.roundRobin[j]] = [
          this.roundRobin[j] as string,
          this.roundRobin[i] as string,
        ];
      }
    }
    return undefined;
  }

  private watch(conn: Connection, now: number): { peer: string; muxer: MuxerInternals } | undefined {
    const muxer = connectionMuxer(conn);
    if (muxer === undefined) {
      if (!this.warned) {
        this.warned = true;
        this.init.log.error({}, 'liveness: connection has no yamux muxer with ping (libp2p changed?)');
      }
      return undefined;
    }
    const peer = conn.remotePeer.toString();
    let state = this.peers.get(peer);
    if (state === undefined) {
      state = { lastHeard: now };
      this.peers.set(peer, state);
    }
    const w = { peer, muxer };
    const onData = muxer.onData.bind(muxer);
    muxer.onData = (buf) => {
      // the peer's current state: a connection outliving a prune still counts
      const s = this.peers.get(peer);
      if (s !== undefined) {
        s.lastHeard = Date.now();
      }
      onData(buf);
    };
    this.watched.set(conn, w);
    return w;
  }

  /**
   * With two or more open connections to `peer`, keep one: the oldest of those dialled by the lower
   * peer id, else the oldest. Each end closes only connections it dialled itself, so the two ends
   * never close both: the higher id closes its dial when the lower one's exists; a peer that dialled
   * twice closes its newer one. A duplicate is closed once it is `DUPLICATE_GRACE_MS` old and
   * carries no stream: closing it under a dial still completing, an identify or a batch of records
   * would fail them.
   */
  private dedupe(peer: string, now: number): void {
    const conns = this.init.libp2p
      .getConnections()
      .filter((c) => c.status === 'open' && c.remotePeer.toString() === peer);
    if (conns.length < 2) {
      return;
    }
    const lowerDialled = this.self < peer ? 'outbound' : 'inbound';
    const oldest = (list: Connection[]) =>
      list.reduce((a, b) => (b.timeline.open < a.timeline.open ? b : a), list[0] as Connection);
    const preferred = conns.filter((c) => c.direction === lowerDialled);
    const keep = oldest(preferred.length > 0 ? preferred : conns);
    for (const c of conns) {
      if (
        c !== keep &&
        c.direction === 'outbound' &&
        now - c.timeline.open >= DUPLICATE_GRACE_MS &&
        c.streams.length === 0
      ) {
        this.counts.duplicatesClosed++;
        c.close({ signal: AbortSignal.timeout(5_000) }).catch((err: unknown) => {
          c.abort(err instanceof Error ? err : new Error(String(err)));
        });
      }
    }
  }
}
