/**
 * The status page in a real browser (Debian's headless Chromium, driven by playwright-core), on a
 * two-node rig: A pulls an image from the upstream, the upstream stops, B measures the image through its
 * mirror (/debug/measure) and pulls it from A. B's status page then shows what a person would look for:
 * A as a connected peer, the image, and requests served from A. Screenshots go to test/artifacts/.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { type BrowserContext, chromium, type Locator, type Page } from 'playwright-core';
import {
  type BuiltImage,
  buildImage,
  type Cluster,
  type ClusterNode,
  pushImage,
  startCluster,
  waitFor,
} from '../rig/index.ts';
import { digestsOf, registryRequest, waitFindable } from './helpers.ts';

const CHROMIUM = '/usr/bin/chromium';
const artifacts = fileURLToPath(new URL('../artifacts/', import.meta.url));

let cluster: Cluster;
let app: BuiltImage;
let a: ClusterNode;
let b: ClusterNode;
let aPeerId: string;
let browser: BrowserContext;
let profile: string;
const pageErrors: string[] = [];

/** The text of an element, as the page holds it. */
async function text(locator: Locator): Promise<string> {
  return (await locator.textContent()) ?? '';
}

async function openPage(url: string): Promise<Page> {
  const page = await browser.newPage();
  page.on('pageerror', (err) => pageErrors.push(`${url}: ${err.message}`));
  page.on('console', (msg) => {
    if (msg.type() === 'error') pageErrors.push(`${url}: ${msg.text()}`);
  });
  const res = await page.goto(url);
  assert.equal(res?.status(), 200, url);
  return page;
}

before(async () => {
  assert.ok(
    existsSync(CHROMIUM),
    `${CHROMIUM} missing: run scripts/bootstrap.sh (installs Debian's chromium)`,
  );
  mkdirSync(artifacts, { recursive: true });
  cluster = await startCluster({ nodes: 2 });
  [a, b] = cluster.nodes as [ClusterNode, ClusterNode];
  app = await buildImage({ layers: [2 << 20, 300_000], mediaTypes: 'oci' });
  await pushImage(cluster.upstream.url, 'demo/app', 'v1', app);
  await Promise.all(cluster.nodes.map((n) => n.agent!.waitReady()));
  aPeerId = String((await a.agent!.status()).peerId);

  await a.pull(cluster.ref('demo/app:v1'));
  await waitFindable(b, cluster, 'demo/app', digestsOf(app));
  await waitFor(
    async () =>
      (await registryRequest(b, cluster, '/v2/demo/app/manifests/v1', { method: 'HEAD' })).status === 200,
    { timeoutMs: 60_000, intervalMs: 100, what: 'the tag findable from B' },
  );
  await cluster.upstream.stop();

  profile = mkdtempSync(join(tmpdir(), 'ferry-chromium-'));
  browser = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1280, height: 900 },
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
});

after(async () => {
  await browser?.close();
  if (profile) rmSync(profile, { recursive: true, force: true });
  await cluster?.dispose();
});

test('/debug/measure on B times the lookup and the pull of every digest, each served by A', async () => {
  const ref = cluster.ref('demo/app:v1');
  const page = await openPage(`${b.agent!.statusUrl}/debug/measure?image=${encodeURIComponent(ref)}`);
  const rows = page.locator('tr.measure-row');
  const keys = await rows.evaluateAll((trs) => trs.map((tr) => tr.getAttribute('data-key')));
  assert.deepEqual(keys, [`${cluster.upstream.host}/demo/app:v1`, ...digestsOf(app)]);
  for (let i = 0; i < keys.length; i += 1) {
    const row = rows.nth(i);
    assert.match(await text(row.locator('td.source')), /^peer /, `row ${keys[i]}`);
    assert.equal(await row.locator('td.source .peer').getAttribute('title'), aPeerId, `row ${keys[i]}`);
    assert.match(await text(row), /found .* in [\d.]+ m?s/, `row ${keys[i]}: a DHT lookup time`);
  }
  const layerRow = await text(rows.nth(keys.indexOf(app.layers[0]!.digest)));
  assert.match(layerRow, /2\.0 MiB/);
  await page.screenshot({ path: join(artifacts, 'measure-page.png'), fullPage: true });
  await page.close();

  // The same as JSON; and a bad reference is a 400 that says what is wrong.
  const json = (await (
    await fetch(`${b.agent!.statusUrl}/debug/measure?image=${encodeURIComponent(ref)}`, {
      headers: { accept: 'application/json' },
    })
  ).json()) as {
    totalMs: number;
    rows: {
      key: string;
      lookup: { ms: number };
      pull?: { source: string; peer?: string; bytes: number; ms: number };
    }[];
  };
  assert.deepEqual(
    json.rows.map((r) => [r.key, r.pull?.source, r.pull?.peer]),
    keys.map((k) => [k, 'peer', aPeerId]),
  );
  const bad = await fetch(`${b.agent!.statusUrl}/debug/measure?image=${encodeURIComponent('Not A Ref!')}`);
  assert.equal(bad.status, 400);
  assert.match(await bad.text(), /invalid image reference/);
  // Measuring stored nothing: B still does not hold the image.
  assert.equal(await b.containerd.client.info(app.layers[0]!.digest), undefined);
});

test("after B pulls from A, B's status page shows the peer, the image and the hit, and refreshes itself", async () => {
  await b.pull(cluster.ref('demo/app:v1'));
  const page = await openPage(`${b.agent!.statusUrl}/`);

  // The page refreshes from /status in the browser (its script runs under the CSP): wait for the image.
  await page.locator('#images', { hasText: cluster.ref('demo/app:v1') }).waitFor({ timeout: 30_000 });
  await page.locator('#refreshed', { hasText: /^updated / }).waitFor({ timeout: 30_000 });

  assert.ok((await text(page.locator('#peers'))).includes(aPeerId), 'A is a connected peer');
  assert.ok((await text(page.locator('#node'))).includes(String((await b.agent!.status()).peerId)));
  const imageRow = page.locator('#images-table tbody tr', { hasText: cluster.ref('demo/app:v1') });
  assert.equal(await imageRow.count(), 1);
  assert.match(await text(imageRow), /yes/);

  // The hit: a request of B's containerd answered from A.
  const hits = page.locator('#requests-table tbody tr', {
    has: page.locator(`td.source .peer[title="${aPeerId}"]`),
  });
  assert.ok((await hits.count()) >= 1, 'a request served from A');
  const hit = await text(hits.first());
  assert.match(hit, /containerd/);
  assert.match(hit, /demo\/app/);
  assert.match(await text(page.locator('#summary')), /Hit ratio\s*\d+%/);
  assert.doesNotMatch(await text(page.locator('#summary')), /Last mirror\s*never/);
  assert.match(await text(page.locator('#pinner')), /pinner not enabled/);
  assert.match(await text(page.locator('#policy')), /Resolve tags\s*yes/);

  await page.screenshot({ path: join(artifacts, 'status-page.png'), fullPage: true });
  await page.close();
  assert.deepEqual(pageErrors, [], 'no script errors or CSP violations in the pages');
});
