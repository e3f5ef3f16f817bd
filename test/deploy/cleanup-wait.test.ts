/**
 * The chart's post-delete waiter (deploy/hooks/cleanup-wait.ts) against a fake Kubernetes API on
 * 127.0.0.1: it returns once the cleanup DaemonSet is Ready on every scheduled node, keeps polling
 * through errors, and gives up at its deadline.
 */
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, it } from 'node:test';
import {
  type DaemonSetState,
  daemonSetDone,
  main,
  parseSeconds,
  waitForDaemonSet,
} from '../../deploy/hooks/cleanup-wait.ts';

async function fakeApi(
  answers: (n: number) => { status: number; body: unknown },
): Promise<{ url: string; server: Server; seen: { url: string; auth?: string }[] }> {
  const seen: { url: string; auth?: string }[] = [];
  const server = createServer((req, res) => {
    seen.push({
      url: req.url ?? '',
      ...(req.headers.authorization ? { auth: req.headers.authorization } : {}),
    });
    const a = answers(seen.length);
    res.writeHead(a.status, { 'content-type': 'application/json' }).end(JSON.stringify(a.body));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, server, seen };
}

const ds = (ready: number, desired: number, gen = 1, observed: number | undefined = 1): DaemonSetState => ({
  metadata: { generation: gen },
  status: {
    observedGeneration: observed,
    desiredNumberScheduled: desired,
    numberReady: ready,
    updatedNumberScheduled: ready,
  },
});

describe('cleanup-wait', () => {
  it('decides done only on a current status with every scheduled pod ready', () => {
    assert.equal(daemonSetDone(ds(3, 3)), true);
    assert.equal(daemonSetDone(ds(2, 3)), false);
    assert.equal(daemonSetDone(ds(3, 3, 2, 1)), false, 'status of an older generation');
    assert.equal(daemonSetDone({ metadata: { generation: 1 }, status: {} }), false, 'not yet observed');
    assert.equal(daemonSetDone(ds(0, 0)), true, 'no node to clean');
  });

  it('polls until every node is ready, through API errors, with the token', async (t) => {
    const api = await fakeApi((n) =>
      n === 1
        ? { status: 503, body: {} }
        : n < 4
          ? { status: 200, body: ds(n - 1, 3) }
          : { status: 200, body: ds(3, 3) },
    );
    t.after(() => api.server.close());
    const lines: string[] = [];
    const ok = await waitForDaemonSet({
      apiServer: api.url,
      namespace: 'ferry',
      daemonSet: 'ferry-cleanup',
      token: 'tok',
      timeoutMs: 30_000,
      intervalMs: 5,
      log: (l) => lines.push(l),
    });
    assert.equal(ok, true);
    assert.equal(api.seen.length, 4);
    assert.deepEqual(
      new Set(api.seen.map((s) => s.url)),
      new Set(['/apis/apps/v1/namespaces/ferry/daemonsets/ferry-cleanup']),
    );
    assert.ok(api.seen.every((s) => s.auth === 'Bearer tok'));
    assert.match(lines[0]!, /API answered 503/);
    assert.match(lines.at(-1)!, /3\/3 nodes cleaned up/);
  });

  it('gives up at its deadline (exit code 1)', async (t) => {
    const api = await fakeApi(() => ({ status: 200, body: ds(1, 2) }));
    t.after(() => api.server.close());
    const code = await main(
      [
        '--namespace=ferry',
        '--daemonset=ferry-cleanup',
        '--timeout=50ms',
        '--interval=10ms',
        `--api-server=${api.url}`,
      ],
      {},
    );
    assert.equal(code, 1);
    assert.ok(api.seen.length >= 1);
  });

  it('refuses bad usage with exit code 2', async () => {
    assert.equal(await main(['--namespace=ferry'], {}), 2);
    assert.equal(
      await main(['--namespace=ferry', '--daemonset=x'], {}),
      2,
      'outside a pod without --api-server',
    );
    assert.throws(() => parseSeconds('soon'), /duration/);
    assert.equal(parseSeconds('5m'), 300_000);
  });
});
