import { escapeHtml } from '../hub/wake-page.js';

const STYLE = `
body{font:14px system-ui,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}
header{background:#1d2330;color:#fff;padding:12px 20px;display:flex;justify-content:space-between;align-items:center}
header h1{font-size:18px;margin:0} header a{color:#9cc3ff}
main{padding:16px 20px;display:grid;grid-template-columns:repeat(auto-fit,minmax(420px,1fr));gap:16px}
section{background:#fff;border-radius:8px;padding:12px 16px;box-shadow:0 1px 2px #0002}
section.wide{grid-column:1/-1}
h2{font-size:15px;margin:0 0 8px}
table{border-collapse:collapse;width:100%} td,th{padding:4px 6px;text-align:left;border-bottom:1px solid #eee;font-variant-numeric:tabular-nums}
td.n,th.n{text-align:right}
.cards{display:flex;gap:12px;flex-wrap:wrap} .card{flex:1;min-width:150px;background:#f0f4ff;border-radius:6px;padding:8px 12px}
.card b{display:block;font-size:20px} .spot{color:#b35c00} .muted{color:#667}
form{max-width:340px;margin:80px auto;background:#fff;padding:24px;border-radius:8px;box-shadow:0 1px 3px #0003}
input{width:100%;padding:8px;margin:8px 0;box-sizing:border-box} button{padding:8px 16px}
.legend span{margin-right:12px} .err{color:#b00020}
`;

/** The sign-in form: the scheduler's token, once; the answer sets a cookie. */
export function loginPage(error: string | null): string {
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>hubshift: sign in</title><style>${STYLE}</style></head><body>
<form method="post" action="/dashboard/login">
<h1>hubshift dashboard</h1>
<p class="muted">Sign in with the scheduler's token (the file given to <code>hubshift scheduler --token-file</code>).</p>
${error ? `<p class="err" role="alert">${escapeHtml(error)}</p>` : ''}
<label for="token">Token</label><input id="token" name="token" type="password" autocomplete="current-password" required autofocus>
<button type="submit">Sign in</button>
</form></body></html>`;
}

// The page draws itself from GET /v1/dashboard (sent with the cookie); every
// figure carries a data-testid so a browser test can read it back.
const SCRIPT = `
const usd = (v) => (v < 0 ? '-$' : '$') + Math.abs(v).toFixed(2);
const gib = (b) => (b / 2 ** 30).toFixed(2) + ' GiB';
const el = (tag, attrs = {}, ...kids) => { const e = document.createElement(tag); for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v); for (const k of kids) e.append(k); return e; };
function table(id, head, rows) {
  const t = el('table', { 'data-testid': id });
  t.append(el('tr', {}, ...head.map((h) => el('th', h.n ? { class: 'n' } : {}, h.t))));
  for (const r of rows) t.append(el('tr', {}, ...r.map((c) => el('td', c.n ? { class: 'n', 'data-testid': c.id ?? '' } : { 'data-testid': c.id ?? '' }, c.t))));
  return t;
}
function card(id, label, value) { return el('div', { class: 'card' }, label, el('b', { 'data-testid': id }, value)); }
function chart(points) {
  const W = 900, H = 220, P = 30;
  const svg = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
  svg.setAttribute('viewBox', '0 0 ' + W + ' ' + H); svg.setAttribute('width', '100%'); svg.setAttribute('data-testid', 'cost-chart');
  const max = Math.max(0.01, ...points.map((p) => Math.max(p.actualUsd, p.onDemandUsd, p.cullingUsd)));
  const x = (i) => P + (i / Math.max(1, points.length - 1)) * (W - 2 * P);
  const y = (v) => H - P - (v / max) * (H - 2 * P);
  const series = [['onDemandUsd', '#c0392b', 'always on, on-demand'], ['cullingUsd', '#8e44ad', 'idle culling'], ['actualUsd', '#1e7e34', 'hubshift']];
  for (const [k, color] of series) {
    const line = document.createElementNS('http://www.w3.org/2000/svg', 'polyline');
    line.setAttribute('points', points.map((p, i) => x(i) + ',' + y(p[k])).join(' '));
    line.setAttribute('fill', 'none'); line.setAttribute('stroke', color); line.setAttribute('stroke-width', '2'); line.setAttribute('data-series', k);
    svg.append(line);
  }
  const axis = document.createElementNS('http://www.w3.org/2000/svg', 'text');
  axis.setAttribute('x', 2); axis.setAttribute('y', 14); axis.textContent = usd(max); svg.append(axis);
  const legend = el('div', { class: 'legend' }, ...series.map(([, c, t]) => { const s = el('span', {}, t); s.style.color = c; return s; }));
  return [svg, legend];
}
async function draw() {
  const day = new URLSearchParams(location.search).get('day');
  const res = await fetch('/v1/dashboard' + (day ? '?day=' + encodeURIComponent(day) : ''), { credentials: 'same-origin' });
  if (res.status === 401) { location.href = '/dashboard'; return; }
  const v = await res.json();
  const L = v.ledger ?? { totals: { actualUsd: 0, onDemandUsd: 0, cullingUsd: 0, unallocatedUsd: 0, culled: 0 }, savingsByPolicy: {}, byUser: {}, byGroup: {} };
  const t = L.totals;
  document.getElementById('day').textContent = v.day;
  const sum = document.getElementById('summary');
  sum.replaceChildren(el('div', { class: 'cards' },
    card('cost-actual', 'hubshift cost', usd(t.actualUsd)),
    card('cost-on-demand', 'always on, on-demand', usd(t.onDemandUsd)),
    card('cost-culling', 'idle culling', usd(t.cullingUsd)),
    card('savings', 'saved vs on-demand', usd(t.onDemandUsd - t.actualUsd)),
    card('ratio', 'on-demand / hubshift', t.actualUsd > 0 ? (t.onDemandUsd / t.actualUsd).toFixed(2) + 'x' : '-'),
    card('culled', 'sessions culling would have killed', String(t.culled))));
  document.getElementById('chart').replaceChildren(...chart(v.timeline));
  const f = v.forecast;
  document.getElementById('forecast').replaceChildren(el('div', { class: 'cards' },
    card('forecast-actual', 'hubshift, month ' + f.month, usd(f.forecast.actualUsd)),
    card('forecast-on-demand', 'always on, on-demand', usd(f.forecast.onDemandUsd)),
    card('forecast-culling', 'idle culling', usd(f.forecast.cullingUsd)),
    card('mtd-actual', 'month to date', usd(f.monthToDate.actualUsd))));
  document.getElementById('nodes').replaceChildren(table('nodes-table',
    [{ t: 'node' }, { t: 'type' }, { t: 'market' }, { t: 'state' }, { t: '$/h', n: 1 }, { t: 'memory used', n: 1 }, { t: 'sessions', n: 1 }, { t: 'cost today', n: 1 }],
    v.nodes.map((n) => [{ t: n.name }, { t: n.instanceType }, { t: n.lifecycle }, { t: n.state }, { t: n.pricePerHour.toFixed(4), n: 1 }, { t: gib(n.usedBytes) + ' / ' + gib(n.memoryBytes), n: 1 }, { t: String(n.sessions), n: 1 }, { t: usd(n.costToday), n: 1, id: 'node-cost-' + n.name }])));
  document.getElementById('sessions').replaceChildren(table('sessions-table',
    [{ t: 'session' }, { t: 'user' }, { t: 'group' }, { t: 'where' }, { t: 'state' }, { t: 'memory', n: 1 }, { t: 'cpu', n: 1 }, { t: 'busy' }, { t: '$/h', n: 1 }],
    v.sessions.map((s) => [{ t: s.id }, { t: s.user }, { t: s.group }, { t: s.node ?? 'store' }, { t: s.state }, { t: gib(s.rssBytes), n: 1 }, { t: s.cpuCores.toFixed(2), n: 1 }, { t: s.busy ? 'yes' : 'no' }, { t: s.costPerHour.toFixed(4), n: 1, id: 'session-cost-' + s.id }])));
  const byValue = (o) => Object.entries(o).sort((a, b) => b[1] - a[1]);
  document.getElementById('policies').replaceChildren(table('policy-table', [{ t: 'policy' }, { t: 'saved', n: 1 }],
    byValue(L.savingsByPolicy).map(([p, s]) => [{ t: p }, { t: usd(s), n: 1, id: 'policy-' + p }])));
  const parties = (id, o) => table(id, [{ t: id.startsWith('user') ? 'user' : 'group' }, { t: 'cost', n: 1 }, { t: 'on-demand', n: 1 }, { t: 'culling', n: 1 }, { t: 'saved', n: 1 }],
    Object.entries(o).sort((a, b) => b[1].savedUsd - a[1].savedUsd).map(([k, s]) => [{ t: k }, { t: usd(s.actualUsd), n: 1 }, { t: usd(s.onDemandUsd), n: 1 }, { t: usd(s.cullingUsd), n: 1 }, { t: usd(s.savedUsd), n: 1, id: id.replace('-table', '') + '-saved-' + k }]));
  document.getElementById('users').replaceChildren(parties('user-table', L.byUser));
  document.getElementById('groups').replaceChildren(parties('group-table', L.byGroup));
  document.getElementById('actions').replaceChildren(table('actions-table', [{ t: 'time' }, { t: 'action' }, { t: 'outcome' }, { t: 'session' }, { t: 'from → to' }, { t: 'policy' }, { t: 'reason' }, { t: '$/h', n: 1 }],
    v.actions.map((a) => [{ t: a.at.slice(11, 19) }, { t: a.action }, { t: a.outcome }, { t: a.sessionId ?? '' }, { t: (a.source ?? '-') + ' → ' + (a.target ?? 'store') }, { t: a.policy }, { t: a.reason }, { t: a.costPerHour.toFixed(4), n: 1 }])));
  document.body.setAttribute('data-ready', 'true');
}
draw().catch((e) => { document.getElementById('summary').textContent = 'could not load: ' + e; });
setInterval(() => draw().catch(() => undefined), 60000);
`;

/** The dashboard: panels filled from the JSON API. */
export function dashboardPage(): string {
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>hubshift: FinOps</title><style>${STYLE}</style></head><body>
<header><h1>hubshift FinOps: <span id="day"></span> (UTC)</h1><span><a href="/metrics">metrics</a> · <a href="/dashboard/logout">sign out</a></span></header>
<main>
<section class="wide"><h2>Cost against the baselines, the whole day</h2><div id="summary">loading…</div></section>
<section class="wide"><h2>Cumulative cost over the day</h2><div id="chart"></div></section>
<section><h2>Forecast for the month</h2><div id="forecast"></div></section>
<section><h2>Savings by policy</h2><div id="policies"></div></section>
<section class="wide"><h2>Nodes</h2><div id="nodes"></div></section>
<section class="wide"><h2>Sessions</h2><div id="sessions"></div></section>
<section><h2>Savings by user</h2><div id="users"></div></section>
<section><h2>Savings by group</h2><div id="groups"></div></section>
<section class="wide"><h2>Actions and their reasons</h2><div id="actions"></div></section>
</main><script>${SCRIPT}</script></body></html>`;
}
