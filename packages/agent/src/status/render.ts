/**
 * The status and measure pages' HTML, rendered on the server only: the status page's small static
 * script refreshes by fetching the server-rendered body (`/status/body`). Every value is escaped; the
 * pages load nothing external.
 */
import type { StatusData } from './data.ts';
import type { MeasureResult } from './measure.ts';

/** HTML-escapes any value. */
export function escapeHtml(v: unknown): string {
  return String(v)
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;')
    .replace(/'/g, '&#39;');
}

const shortId = (id: string): string => (id.length > 16 ? `${id.slice(0, 4)}…${id.slice(-8)}` : id);
const shortKey = (key: string): string =>
  /^sha(256|512):/.test(key) ? `${key.slice(0, key.indexOf(':') + 13)}…` : key;

function fmtBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i += 1;
  }
  return `${v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}

const fmtMs = (ms: number): string =>
  ms < 1000 ? `${ms.toFixed(ms < 10 ? 1 : 0)} ms` : `${(ms / 1000).toFixed(2)} s`;

/** Renders the body of the status page (everything inside `<main>`) from `/status` data. */
export function renderStatusBody(s: StatusData, nowMs: number): string {
  const esc = escapeHtml;
  const ago = (iso: string): string => {
    const secs = Math.max(0, Math.round((nowMs - Date.parse(iso)) / 1000));
    if (secs < 60) return `${secs} s ago`;
    if (secs < 3600) return `${Math.floor(secs / 60)} min ago`;
    return `${Math.floor(secs / 3600)} h ${Math.floor((secs % 3600) / 60)} min ago`;
  };
  const time = (iso: string): string =>
    `<time datetime="${esc(iso)}" title="${esc(iso)}">${esc(ago(iso))}</time>`;
  const peer = (id: string): string => `<span class="peer" title="${esc(id)}">${esc(shortId(id))}</span>`;
  const key = (k: string | undefined): string =>
    k === undefined ? '<span class="dim">—</span>' : `<code title="${esc(k)}">${esc(shortKey(k))}</code>`;
  const table = (id: string, headers: string[], rows: string[], empty: string): string =>
    rows.length === 0
      ? `<p class="empty" id="${id}-empty">${esc(empty)}</p>`
      : `<table id="${id}-table"><thead><tr>${headers.map((h) => `<th>${esc(h)}</th>`).join('')}</tr></thead><tbody>${rows.join('')}</tbody></table>`;
  const section = (id: string, title: string, body: string): string =>
    `<section id="${id}"><h2>${esc(title)}</h2>${body}</section>`;

  const m = s.mirror;
  const answered = m.counts.local + m.counts.peer + m.counts.miss;
  const ratio = m.hitRatio === null ? '—' : `${(m.hitRatio * 100).toFixed(0)}%`;
  const cards = [
    ['Peers', String(s.peers.length), s.ready ? 'DHT ready' : 'no peers yet: not ready'],
    [
      'Advertised',
      String(s.tracker.keys.digests.length + s.tracker.keys.tags.length),
      `${s.tracker.keys.digests.length} digests, ${s.tracker.keys.tags.length} tags`,
    ],
    [
      'Hit ratio',
      ratio,
      `${m.counts.local} local, ${m.counts.peer} from peers, ${m.counts.miss} misses of ${answered}`,
    ],
    [
      'Last mirror',
      m.lastSuccess ? ago(m.lastSuccess.at) : 'never',
      m.lastSuccess
        ? `${fmtBytes(m.lastSuccess.bytes)} in ${fmtMs(m.lastSuccess.durationMs)}${m.lastSuccess.peer ? ` from ${shortId(m.lastSuccess.peer)}` : ''}`
        : 'no request served from a peer yet',
    ],
    ['Served to peers', fmtBytes(m.served.bytes), `${m.served.requests} requests`],
  ];
  const summary = `<div class="cards" id="summary">${cards
    .map(
      ([label, value, note]) =>
        `<div class="card"><div class="label">${esc(label)}</div><div class="value">${esc(value)}</div><div class="note">${esc(note)}</div></div>`,
    )
    .join('')}</div>`;

  const node = section(
    'node',
    'This node',
    `<dl><dt>Peer ID</dt><dd><code id="peer-id">${esc(s.peerId)}</code></dd>` +
      `<dt>Addresses</dt><dd>${s.addresses.map((a) => `<code>${esc(a)}</code>`).join('<br>') || '<span class="dim">none</span>'}</dd>` +
      `<dt>containerd</dt><dd>${s.containerd.connected ? '<span class="ok">connected</span>' : '<span class="bad">not connected</span>'} <code>${esc(s.containerd.socket)}</code></dd>` +
      (s.tracker.lastReconcile
        ? `<dt>Last reconcile</dt><dd>${time(s.tracker.lastReconcile.at)}: +${esc(s.tracker.lastReconcile.advertised)} / −${esc(s.tracker.lastReconcile.withdrawn)} keys in ${esc(fmtMs(s.tracker.lastReconcile.durationMs))}${s.tracker.lastReconcile.error ? ` <span class="bad">${esc(s.tracker.lastReconcile.error)}</span>` : ''}</dd>`
        : '') +
      '</dl>',
  );

  const peers = section(
    'peers',
    `Connected peers (${s.peers.length})`,
    table(
      'peers',
      ['Peer ID', 'Addresses'],
      s.peers.map(
        (p) =>
          `<tr><td><code>${esc(p.id)}</code></td><td>${p.addresses.map((a) => `<code>${esc(a)}</code>`).join('<br>')}</td></tr>`,
      ),
      'No peers connected.',
    ),
  );

  const images = section(
    'images',
    `Images (${s.tracker.images.length})`,
    table(
      'images',
      ['Image', 'Digest', 'Digests held', 'Advertised', ''],
      s.tracker.images.map((img) => {
        const state = !img.present
          ? '<span class="bad">content missing</span>'
          : img.allowed
            ? '<span class="ok">yes</span>'
            : '<span class="dim">no: filtered by policy</span>';
        const first = img.names[0];
        const action =
          first === undefined
            ? ''
            : `<a href="/debug/measure?image=${esc(encodeURIComponent(first))}">measure</a>`;
        return `<tr><td>${img.names.map((n) => `<span class="image">${esc(n)}</span>`).join('<br>') || '<span class="dim">(unnamed)</span>'}</td><td>${key(img.digest)}</td><td>${esc(img.digests)}</td><td>${state}</td><td>${action}</td></tr>`;
      }),
      'No images in containerd.',
    ) +
      `<details id="keys"><summary>Advertised keys: ${s.tracker.keys.digests.length} digests, ${s.tracker.keys.tags.length} tags</summary>` +
      `<ul class="keys">${[...s.tracker.keys.tags, ...s.tracker.keys.digests].map((k) => `<li><code>${esc(k)}</code></li>`).join('')}</ul></details>`,
  );

  const sourceOf = (r: StatusData['recentRequests'][number]): string => {
    const aborted = r.aborted ? ' <span class="bad">(aborted)</span>' : '';
    if (r.outcome === 'peer')
      return `<span class="src-peer">peer ${r.peer ? peer(r.peer) : ''}</span>${aborted}`;
    if (r.outcome === 'local') return `<span class="src-local">local</span>${aborted}`;
    if (r.outcome === 'miss')
      return `<span class="src-miss">${r.mirrored ? 'not held' : 'miss → upstream'}</span>${aborted}`;
    if (r.outcome === 'filtered') return `<span class="src-miss">filtered → upstream</span>${aborted}`;
    return `<span class="bad">invalid</span>${aborted}`;
  };
  const requests = section(
    'requests',
    'Recent requests',
    table(
      'requests',
      ['When', 'Asked by', 'Request', 'Key', 'Source', 'Status', 'Bytes', 'Duration'],
      [...s.recentRequests]
        .reverse()
        .map(
          (r) =>
            `<tr class="outcome-${esc(r.outcome)}"><td>${time(r.at)}</td><td>${r.by === 'measure' ? '/debug/measure' : r.mirrored ? 'a peer' : 'containerd'}</td>` +
            `<td>${esc(r.method)} ${esc(r.kind ?? '?')} <span class="image">${esc(r.registry ? `${r.registry}/` : '')}${esc(r.repository ?? '')}</span></td>` +
            `<td>${key(r.key)}</td><td class="source">${sourceOf(r)}</td><td>${esc(r.status)}</td>` +
            `<td class="num">${esc(fmtBytes(r.bytes))}</td><td class="num">${esc(fmtMs(r.durationMs))}</td></tr>`,
        ),
      'No requests yet.',
    ),
  );

  const p = s.policy;
  const list = (items: string[], none: string): string =>
    items.length === 0
      ? `<span class="dim">${esc(none)}</span>`
      : items.map((i) => `<code>${esc(i)}</code>`).join(' ');
  const policy = section(
    'policy',
    'Tag policy',
    `<dl><dt>Resolve tags</dt><dd>${p.resolveTags ? 'yes: tags are answered from the cluster' : 'no: tags go to the upstream, digests come from peers'}</dd>` +
      `<dt>Registry filters</dt><dd>${list(p.registryFilters, 'none')}</dd>` +
      `<dt>Mirrored registries</dt><dd>${list(p.mirroredRegistries, 'all')}</dd>` +
      (p.rules
        ? Object.entries(p.rules)
            .map(([k, v]) => {
              let shown: string;
              if (Array.isArray(v) && v.length === 0) shown = '<span class="dim">none</span>';
              else if (
                Array.isArray(v) &&
                v.every((r) => typeof r === 'object' && r !== null && 'pattern' in r && 'mode' in r)
              )
                shown = v
                  .map(
                    (r: { pattern: unknown; mode: unknown }) =>
                      `<code>${esc(r.pattern)}</code> → ${esc(r.mode)}`,
                  )
                  .join('<br>');
              else if (typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean')
                shown = esc(v);
              else shown = `<pre>${esc(JSON.stringify(v, null, 2))}</pre>`;
              return `<dt>${esc(k)}</dt><dd>${shown}</dd>`;
            })
            .join('')
        : '') +
      '</dl>',
  );

  const pinner = section(
    'pinner',
    'Pinner',
    s.pinner
      ? table(
          'pinner',
          ['When', 'Image', 'Digest', 'Source'],
          s.pinner.recent.map(
            (r) =>
              `<tr><td>${time(new Date(r.resolvedAt).toISOString())}</td><td><span class="image">${esc(`${r.registry}/${r.repository}:${r.tag}`)}</span></td><td>${key(r.digest)}</td><td>${esc(r.source)}</td></tr>`,
          ),
          'No resolutions yet.',
        )
      : '<p class="empty" id="pinner-empty">pinner not enabled</p>',
  );

  const transfers = section(
    'transfers',
    'First pulls in flight',
    s.transfers
      ? table(
          'transfers',
          ['Since', 'Blob', 'Image', 'Fetched by', 'Followers', 'Progress'],
          s.transfers.map(
            (x) =>
              `<tr><td>${time(new Date(x.startedAt).toISOString())}</td><td>${key(x.digest)}</td>` +
              `<td><span class="image">${esc(`${x.registry}/${x.repository}`)}</span></td>` +
              `<td>${x.source === 'upstream' ? 'this node (upstream)' : x.source === 'electing' ? '<span class="dim">electing</span>' : `peer ${key(x.source)}`}${x.takeovers > 0 ? ` <span class="dim">(${esc(x.takeovers)} takeover)</span>` : ''}</td>` +
              `<td>${x.followers.length === 0 ? '<span class="dim">none</span>' : x.followers.map((f) => `<code>${esc(f)}</code>`).join(' ')}</td>` +
              `<td class="num">${esc(fmtBytes(x.written))}${x.size === undefined ? '' : ` / ${esc(fmtBytes(x.size))}`} ${esc(x.state)}</td></tr>`,
          ),
          'No first pull in flight.',
        )
      : '<p class="empty" id="transfers-empty">first-pull sharing off</p>',
  );

  const measure = section(
    'measure',
    'Measure',
    '<form action="/debug/measure" method="get"><label>Image <input name="image" size="60" placeholder="registry/repository:tag" required></label> <button type="submit">Time a lookup and a pull</button></form>',
  );

  return summary + node + peers + images + requests + transfers + policy + pinner + measure;
}

/** Shared look of the status and measure pages (inline: the pages load nothing external). */
export const PAGE_STYLE = `
:root { color-scheme: light dark; --fg: #1d2330; --dim: #6b7280; --line: #d9dde5; --card: #f5f7fa; --ok: #177245; --bad: #b42318; --peer: #1d4ed8; }
@media (prefers-color-scheme: dark) { :root { --fg: #e5e7eb; --dim: #9ca3af; --line: #374151; --card: #1f2937; --ok: #4ade80; --bad: #f87171; --peer: #93c5fd; } }
body { font: 14px/1.45 system-ui, sans-serif; color: var(--fg); margin: 0 auto; max-width: 1200px; padding: 16px 24px; }
header { display: flex; align-items: baseline; gap: 16px; flex-wrap: wrap; border-bottom: 1px solid var(--line); }
h1 { font-size: 20px; margin: 8px 0; } h2 { font-size: 16px; margin: 24px 0 8px; }
code { font: 12px/1.4 ui-monospace, monospace; word-break: break-all; }
table { border-collapse: collapse; width: 100%; } th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { font-weight: 600; color: var(--dim); } td.num { text-align: right; white-space: nowrap; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 4px 16px; margin: 0; } dt { color: var(--dim); } dd { margin: 0; }
.cards { display: flex; gap: 12px; flex-wrap: wrap; margin-top: 16px; }
.card { background: var(--card); border-radius: 8px; padding: 10px 14px; min-width: 150px; flex: 1; }
.card .label { color: var(--dim); font-size: 12px; } .card .value { font-size: 24px; font-weight: 600; } .card .note { color: var(--dim); font-size: 12px; }
.ok { color: var(--ok); } .bad { color: var(--bad); } .dim, .empty { color: var(--dim); }
.src-peer, .peer { color: var(--peer); font-weight: 600; } .src-local { color: var(--ok); } .src-miss { color: var(--dim); }
.stale { color: var(--bad); } pre { margin: 0; font-size: 12px; } ul.keys { columns: 2; font-size: 12px; }
`;

/**
 * The status page's script: swaps in the body the server renders at `/status/body`, keeping open
 * `<details>` open. Static text; renderStatusPage appends the refresh interval.
 */
export const STATUS_SCRIPT = `
const main = document.getElementById('main');
const note = document.getElementById('refreshed');
async function refresh() {
  try {
    const res = await fetch('/status/body', { cache: 'no-store' });
    if (!res.ok) throw new Error('HTTP ' + res.status);
    const html = await res.text();
    const open = Array.from(main.querySelectorAll('details[open]'), (d) => d.id);
    main.innerHTML = html;
    for (const id of open) { const d = document.getElementById(id); if (d) d.open = true; }
    note.textContent = 'updated ' + new Date().toLocaleTimeString();
    note.className = 'dim';
  } catch (err) {
    note.textContent = 'refresh failed (' + err.message + '): showing older data';
    note.className = 'stale';
  }
}
`;

/** Options of renderStatusPage. */
export interface StatusPageOptions {
  /** The CSP nonce the inline script carries. */
  nonce: string;
  /** How often the page refreshes from /status. */
  refreshMs: number;
  /** Clock for the first render. Default Date.now(). */
  nowMs?: number;
}

/** The whole status page: the first view rendered here, then refreshed by the inline script. */
export function renderStatusPage(data: StatusData, opts: StatusPageOptions): string {
  const script = `${STATUS_SCRIPT}setInterval(refresh, ${Math.max(500, Math.round(opts.refreshMs))});\n`;
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><link rel="icon" href="data:,">
<title>Ferry · ${escapeHtml(data.peerId.slice(-8))}</title><style>${PAGE_STYLE}</style></head>
<body><header><h1>Ferry node</h1><span class="dim">peer <code>${escapeHtml(data.peerId)}</code></span>
<span id="refreshed" class="dim">refreshes every ${escapeHtml(Math.round(opts.refreshMs / 1000))} s</span>
<a href="/metrics">metrics</a> <a href="/status">status JSON</a></header>
<main id="main">${renderStatusBody(data, opts.nowMs ?? Date.now())}</main>
<script nonce="${escapeHtml(opts.nonce)}">${script}</script></body></html>`;
}

/** The measure page: a form, and the result or the error of a measurement. */
export function renderMeasurePage(
  image: string,
  outcome: { result?: MeasureResult; error?: string },
): string {
  const e = escapeHtml;
  const r = outcome.result;
  let body = '';
  if (outcome.error) body += `<p class="bad" id="measure-error">${e(outcome.error)}</p>`;
  if (r) {
    const rows = r.rows.map((row) => {
      const lk = row.lookup;
      const lookup = lk.found
        ? `found <span class="peer" title="${e(lk.peer ?? '')}">${e(shortId(lk.peer ?? ''))}</span> in ${e(fmtMs(lk.ms))}`
        : `<span class="dim">none${lk.error ? `: ${e(lk.error)}` : ''} (${e(fmtMs(lk.ms))})</span>`;
      const p = row.pull;
      const source = !p
        ? `<span class="dim">skipped: ${e(row.skipped ?? '')}</span>`
        : p.source === 'peer'
          ? `<span class="src-peer">peer <span class="peer" title="${e(p.peer ?? '')}">${e(shortId(p.peer ?? ''))}</span></span>`
          : p.source === 'local'
            ? '<span class="src-local">local</span>'
            : `<span class="src-miss">${e(p.source === 'miss' ? 'miss → upstream' : p.source)}</span>`;
      return (
        `<tr class="measure-row" data-key="${e(row.key)}"><td>${e(row.role)}</td><td><code title="${e(row.key)}">${e(row.key)}</code></td>` +
        `<td>${lookup}</td><td class="source">${source}</td><td>${p ? e(p.status) : ''}</td>` +
        `<td class="num">${p ? e(fmtBytes(p.bytes)) : ''}</td><td class="num">${p ? e(fmtMs(p.ms)) : ''}</td>` +
        `<td>${p?.error ? `<span class="bad">${e(p.error)}</span>` : ''}</td></tr>`
      );
    });
    body +=
      `<p id="measure-summary">${e(r.rows.length)} keys in ${e(fmtMs(r.totalMs))}: ${e(fmtBytes(r.totals.bytes))} pulled, ` +
      `${e(fmtBytes(r.totals.fromPeers))} from peers, ${e(fmtBytes(r.totals.local))} local, ${e(r.totals.misses)} misses.` +
      `${r.stopped ? ` <span class="bad">Stopped early: ${e(r.stopped)}.</span>` : ''}</p>` +
      '<table id="measure-table"><thead><tr><th>Role</th><th>Key</th><th>DHT lookup</th><th>Source</th><th>Status</th><th>Bytes</th><th>Pull</th><th></th></tr></thead>' +
      `<tbody>${rows.join('')}</tbody></table>` +
      '<p class="dim">The pull goes through this node\'s own mirror and discards the bytes; a miss is what containerd would fetch from the upstream.</p>';
  }
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><link rel="icon" href="data:,">
<title>Ferry · measure ${e(image)}</title><style>${PAGE_STYLE}</style></head>
<body><header><h1>Measure</h1><a href="/">status</a></header><main>
<form action="/debug/measure" method="get"><label>Image <input name="image" size="70" value="${e(image)}" placeholder="registry/repository:tag" required></label> <button type="submit">Measure</button></form>
<h2>${e(image || 'No image given')}</h2>${body}</main></body></html>`;
}
