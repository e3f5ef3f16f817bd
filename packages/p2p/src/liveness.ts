// Ferry's connection liveness, in place of libp2p's connection monitor and yamux's keep-alive.
// - The connection monitor opened a new `/ipfs/ping` stream on every connection every 10 s from
//   both ends (stream set-up, protocol negotiation and a peer-store write at each end, each time),
//   and yamux pinged every connection every 30 s from both ends as well: in a full mesh that was
//   most of a node's idle CPU. Here a connection is pinged with one yamux PING frame (no stream),
//   from one end only, and only when nothing arrived on it for a while.
// - The end with the lower peer id pings once it heard nothing for `quietMs`; the other end only
//   when it heard nothing for 1.5 × `quietMs` (the first end's pings keep it from it). Any frame
//   received counts as a sign of life. A ping unanswered within `timeoutMs` means the peer is
//   gone (a host that vanished closes nothing): every connection to it is aborted and
//   `onUnresponsive` names it. A peer that stopped or crashed closes its connections itself and
//   is found by the membership's redial (membership.ts) at once.
// - One connection per pair: when two peers dial each other at the same time, both keep two
//   connections (twice the idle cost). The one dialled by the lower peer id stays, whatever the
//   timing; the dialler of the other closes it once it is idle (no stream) and 2 s old.
import type { Connection } from '@libp2p/interface';
import type { Libp2p } from 'libp2p';
import { connectionMuxer, type MuxerInternals } from './kad-internals.ts';
import { errorText } from './options.ts';
import type { P2PLogger } from './types.ts';

/** Least age of a duplicate connection before it is closed. */
const DUPLICATE_GRACE_MS = 2_000;

export interface LivenessInit {
  libp2p: Libp2p;
  log: P2PLogger;
  /** Silence after which the lower-id end pings a connection. */
  quietMs: number;
  /** Deadline of a ping's answer. */
  timeoutMs: number;
  /** A peer did not answer a ping in time: its connections were aborted. */
  onUnresponsive: (peer: string, reason: string) => void;
  stopSignal: AbortSignal;
}

interface Watched {
  /** The remote peer id, as a string (computed once). */
  peer: string;
  muxer: MuxerInternals;
  lastHeard: number;
  pinging: boolean;
}

export class Liveness {
  private readonly init: LivenessInit;
  private readonly self: string;
  private readonly watched = new WeakMap<Connection, Watched>();
  /** Pings sent and duplicate connections closed since start (for the stats). */
  readonly counts = { pings: 0, duplicatesClosed: 0, unresponsive: 0 };
  private warned = false;

  constructor(init: LivenessInit) {
    this.init = init;
    this.self = init.libp2p.peerId.toString();
  }

  /** Call on every new connection: watch what arrives on it. */
  onConnectionOpen(conn: Connection): void {
    this.watch(conn, Date.now());
  }

  /** Ping the connections that were quiet too long (every housekeeping tick). */
  tick(now: number): void {
    if (this.init.stopSignal.aborted) {
      return;
    }
    const seen = new Set<string>();
    for (const conn of this.init.libp2p.getConnections()) {
      if (conn.status !== 'open') {
        continue;
      }
      const w = this.watched.get(conn) ?? this.watch(conn, now);
      if (w === undefined) {
        continue;
      }
      const peer = w.peer;
      if (seen.has(peer)) {
        this.dedupe(peer, now);
      }
      seen.add(peer);
      if (w.pinging) {
        continue;
      }
      const quiet = this.self < peer ? this.init.quietMs : this.init.quietMs * 1.5;
      if (now - w.lastHeard >= quiet) {
        this.ping(conn, w);
      }
    }
  }

  private watch(conn: Connection, now: number): Watched | undefined {
    const muxer = connectionMuxer(conn);
    if (muxer === undefined) {
      if (!this.warned) {
        this.warned = true;
        this.init.log.error({}, 'liveness: connection has no yamux muxer with ping (libp2p changed?)');
      }
      return undefined;
    }
    const w: Watched = { peer: conn.remotePeer.toString(), muxer, lastHeard: now, pinging: false };
    const onData = muxer.onData.bind(muxer);
    muxer.onData = (buf) => {
      w.lastHeard = Date.now();
      onData(buf);
    };
    this.watched.set(conn, w);
    return w;
  }

  private ping(conn: Connection, w: Watched): void {
    w.pinging = true;
    this.counts.pings++;
    const signal = AbortSignal.any([AbortSignal.timeout(this.init.timeoutMs), this.init.stopSignal]);
    w.muxer
      .ping({ signal })
      .then(
        () => {
          w.lastHeard = Date.now();
        },
        (err: unknown) => {
          if (this.init.stopSignal.aborted || conn.status !== 'open') {
            return;
          }
          const peer = w.peer;
          // a frame may have come in meanwhile: only silence for the whole deadline counts
          if (Date.now() - w.lastHeard < this.init.timeoutMs) {
            return;
          }
          this.counts.unresponsive++;
          const reason = `no answer to a ping within ${this.init.timeoutMs} ms`;
          this.init.log.info({ peer, err: errorText(err) }, 'peer unresponsive: connections aborted');
          for (const c of this.init.libp2p.getConnections(conn.remotePeer)) {
            c.abort(new Error(reason));
          }
          this.init.onUnresponsive(peer, reason);
        },
      )
      .finally(() => {
        w.pinging = false;
      });
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
