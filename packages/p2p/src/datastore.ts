// The in-memory datastore libp2p and kad-dht keep their state in (peer store, provider records).
// libp2p's default `MemoryDatastore` answers every prefix query by scanning all entries, and kad-dht
// runs one per lookup (`/dht/provider/<key>`): with thousands of records per node each lookup cost
// grew with the whole store. This one keeps the keys in a B+ tree as well, so a prefix query
// visits only the matching range.
import { BaseDatastore } from 'datastore-core';
import type { KeyQuery, Pair, Query } from 'interface-datastore';
import { Key } from 'interface-datastore/key';
import { NotFoundError } from 'interface-store';
import sortedBtree from 'sorted-btree';

// CommonJS package: Node's default import is `module.exports`, the class is its `default`
const BTree = sortedBtree.default;

interface SignalOptions {
  signal?: AbortSignal;
}

/** A Map-backed datastore with ordered keys: prefix queries cost O(log n + matches). */
export class SortedMemoryDatastore extends BaseDatastore {
  private readonly data = new Map<string, Uint8Array>();
  private readonly sorted = new BTree<string, undefined>();

  override put(key: Key, value: Uint8Array, options?: SignalOptions): Key {
    options?.signal?.throwIfAborted();
    const k = key.toString();
    this.data.set(k, value);
    this.sorted.set(k, undefined);
    return key;
  }

  override get(key: Key, options?: SignalOptions): Uint8Array {
    options?.signal?.throwIfAborted();
    const value = this.data.get(key.toString());
    if (value === undefined) {
      throw new NotFoundError();
    }
    return value;
  }

  override has(key: Key, options?: SignalOptions): boolean {
    options?.signal?.throwIfAborted();
    return this.data.has(key.toString());
  }

  override delete(key: Key, options?: SignalOptions): void {
    options?.signal?.throwIfAborted();
    const k = key.toString();
    this.data.delete(k);
    this.sorted.delete(k);
  }

  /** Keys starting with `prefix` (all keys without one), copied so writes during iteration are safe. */
  private matching(prefix: string | undefined): string[] {
    if (prefix === undefined || prefix === '') {
      return [...this.data.keys()];
    }
    const out: string[] = [];
    for (const k of this.sorted.keys(prefix)) {
      if (!k.startsWith(prefix)) {
        break;
      }
      out.push(k);
    }
    return out;
  }

  override *_all(q: Query, options?: SignalOptions): Generator<Pair> {
    for (const k of this.matching(q.prefix)) {
      options?.signal?.throwIfAborted();
      const value = this.data.get(k);
      if (value !== undefined) {
        yield { key: new Key(k), value };
      }
    }
  }

  override *_allKeys(q: KeyQuery, options?: SignalOptions): Generator<Key> {
    for (const k of this.matching(q.prefix)) {
      options?.signal?.throwIfAborted();
      if (this.data.has(k)) {
        yield new Key(k);
      }
    }
  }
}
