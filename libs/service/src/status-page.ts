// The read-only status page each agent serves at /ui: one HTML file, no build step, refreshing itself every second
// from the agent's own JSON routes (/health, /status, /firewalls/history or /vips, and /node when the node announces
// over BGP); shell layer shared by the node processes.
import type { FastifyInstance } from 'fastify';

const PAGE = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>fwlb</title>
<style>
body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}h1{font-size:1.3em}h2{font-size:1.1em;margin-top:1.5em}
table{border-collapse:collapse}td,th{padding:.25em .8em;border-bottom:1px solid #ddd;text-align:left;vertical-align:middle}
.up{color:#070}.down{color:#b00;font-weight:bold}.alarm{background:#fee;border:1px solid #b00;padding:.5em;margin:.5em 0}
.num{text-align:right;font-variant-numeric:tabular-nums}.legend{color:#666;font-size:.9em}
svg.chart{background:#f7f7f7;border:1px solid #e4e4e4}
#updated{color:#888;font-size:.9em}
</style></head><body>
<h1 id="title">fwlb</h1><div id="health"></div><div id="alarms"></div>
<div id="routing"></div><div id="agreement"></div><div id="firewalls"></div><div id="history"></div><div id="vips"></div><p id="updated"></p>
<script>
const esc = (s) => String(s ?? '-').replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]);
const state = (up) => up ? '<span class="up">up</span>' : '<span class="down">down</span>';
// \`attrs(i)\`: attributes of row i (id, class, data-*), for the tests and for anyone who reads the page with a script.
const table = (head, rows, attrs = () => '') => '<table><tr>' + head.map((h) => '<th>' + esc(h) + '</th>').join('') + '</tr>' + rows.map((r, i) => '<tr' + attrs(i) + '>' + r.map((c) => '<td>' + c + '</td>').join('') + '</tr>').join('') + '</table>';
const attr = (o) => Object.entries(o).map(([k, v]) => ' ' + k + '="' + esc(v) + '"').join('');
const time = (ms) => new Date(ms).toLocaleTimeString();
const si = (v, unit) => { const k = ['', 'k', 'M', 'G']; let i = 0; while (v >= 1000 && i < 3) { v /= 1000; i++; } return (v < 10 && i ? v.toFixed(1) : Math.round(v)) + ' ' + k[i] + unit; };
async function get(path) { const r = await fetch(path); return r.ok ? r.json() : null; }
// Per second between consecutive samples of a cumulative counter (a counter that went back, a restart, counts 0).
function rates(samples, id, key) {
  const out = [];
  for (let i = 1; i < samples.length; i++) {
    const a = samples[i - 1].firewalls[id], b = samples[i].firewalls[id], dt = (samples[i].at - samples[i - 1].at) / 1000;
    if (a && b && dt > 0) out.push(Math.max(0, b[key] - a[key]) / dt);
  }
  return out;
}
// A small chart of the last minutes on a time axis (now at the right edge): sent bytes/s (blue) and new flows/s
// (orange), each on the scale of its peak over every firewall, so the rows compare.
function chart(id, samples, windowMs, peak, c) {
  const w = 220, h = 34, end = samples.length ? samples[samples.length - 1].at : 0;
  const xs = samples.slice(1).map((s) => (w - (end - s.at) / windowMs * w).toFixed(1));
  const line = (vs, max, color) => vs.length < 1 ? '' : '<polyline fill="none" stroke-width="1.5" stroke="' + color + '" points="' + vs.map((v, i) => xs[i] + ',' + (h - 2 - v / Math.max(max, 1e-9) * (h - 4)).toFixed(1)).join(' ') + '"/>';
  return '<svg class="chart"' + attr({ id: 'chart-' + id, 'data-bps': c.last.bps, 'data-fps': c.last.fps, width: w, height: h }) + '><title>scale: ' + esc(si(peak.bps, 'B/s')) + ', ' + esc(peak.fps.toFixed(1)) + ' new flows/s</title>' + line(c.bps, peak.bps, '#2563eb') + line(c.fps, peak.fps, '#ea580c') + line(c.open, peak.sessions, '#16a34a') + '</svg>';
}
// A firewall's series, once: bytes/s and new flows/s between samples, its sessions at each (a gauge; none without a
// session table), and the last of the rates.
function series(samples, id) {
  const open = samples.slice(1).map((s) => s.firewalls[id] && s.firewalls[id].sessions);
  const c = { bps: rates(samples, id, 'sentBytes'), fps: rates(samples, id, 'newFlows'), open: open.every((v) => typeof v === 'number') ? open : [] };
  const last = (vs) => vs.length ? vs[vs.length - 1] : null;
  return { ...c, last: { bps: last(c.bps), fps: last(c.fps) } };
}
function firewalls(status, hist) {
  const samples = hist ? hist.samples : [], windowMs = hist ? hist.sampleMs * hist.sampleCount : 1;
  const all = status.firewalls.map((f) => series(samples, f.id));
  const peak = { bps: Math.max(0, ...all.flatMap((c) => c.bps)), fps: Math.max(0, ...all.flatMap((c) => c.fps)), sessions: Math.max(0, ...all.flatMap((c) => c.open)) };
  const withSessions = status.firewalls.some((f) => f.sessions !== null && f.sessions !== undefined);
  const rows = status.firewalls.map((f, i) => {
    const c = all[i];
    return [esc(f.id), state(f.healthy), state(f.live), esc(f.enabled), esc(f.buckets), esc(f.health && f.health.latencyMs !== undefined ? f.health.latencyMs.toFixed(2) : '-'),
      '<span class="num">' + (c.last.bps === null ? '-' : esc(si(c.last.bps, 'B/s'))) + '</span>', '<span class="num">' + (c.last.fps === null ? '-' : esc(c.last.fps.toFixed(1))) + '</span>',
      ...(withSessions ? ['<span class="num">' + esc(f.sessions) + '</span>'] : []), chart(f.id, samples, windowMs, peak, c), esc(f.health && f.health.reason)];
  });
  document.getElementById('firewalls').innerHTML = '<h2>Firewalls</h2>' + table(['firewall', 'health', 'live', 'enabled', 'buckets', 'latency ms', 'sent', 'new flows/s', ...(withSessions ? ['sessions'] : []), 'last ' + Math.round(windowMs / 60000) + ' minutes', 'reason'], rows, (i) => attr({ id: 'fw-' + status.firewalls[i].id })) +
    '<p class="legend">sent: what this node forwarded to the firewall on established flows; new flows: the flows it hashed to it; both from the kernel\\'s counters, sampled every ' + (hist ? hist.sampleMs / 1000 : '-') + ' s. Chart: <span style="color:#2563eb">sent</span> up to ' + esc(si(peak.bps, 'B/s')) + ' and <span style="color:#ea580c">new flows</span> up to ' + esc(peak.fps.toFixed(1)) + '/s' + (withSessions ? ', <span style="color:#16a34a">sessions</span> (every node\\'s, from the session table) up to ' + esc(peak.sessions) : '') + ', the same scale for every firewall.</p>';
}
function history(hist) {
  const events = hist.events.slice().reverse().slice(0, 30);
  document.getElementById('history').innerHTML = '<h2>History</h2>' + (events.length ? table(['time', 'firewall', 'what', 'now', 'why'], events.map((e) => [esc(time(e.at)), esc(e.firewall), esc(e.what), state(e.up), esc(e.reason)]), (i) => attr({ class: 'event', 'data-firewall': events[i].firewall, 'data-at': events[i].at })) : '<p class="legend">no change since this node started</p>');
}
function agreement(status) {
  const a = status.agreement, views = status.views;
  if (!a && !views) { document.getElementById('agreement').innerHTML = ''; return; }
  const ids = status.firewalls.map((f) => f.id);
  document.getElementById('agreement').innerHTML = '<h2>Agreement</h2>' + (a ? 'epoch <b id="epoch">' + esc(a.epoch) + '</b>: live ' + esc(a.live.join(', ') || 'none') + '; down ' + esc(a.down.join(', ') || 'none') + (a.joinAt ? '; joins at ' + esc(time(a.joinAt)) : '') : 'no epoch applied') +
    (views ? table(['node sees', ...ids], Object.entries(views).map(([node, v]) => [esc(node), ...ids.map((id) => id in v ? state(v[id]) : '-')])) : '<p class="legend">the other nodes\\' views are not readable (Redis)</p>');
}
function vips(list) {
  document.getElementById('vips').innerHTML = '<h2>VIPs</h2>' + list.map((v) => '<h3>' + esc(v.id) + ' ' + esc(v.address) + ':' + esc(v.port) + '/' + esc(v.protocol) + ' (' + esc(v.scheduler) + ', ' + esc(v.counters.newSessions) + ' new sessions)</h3>' +
    table(['member', 'health', 'since', 'state', 'weight', 'slots', 'new sessions', 'packets', 'bytes', 'reason'], v.members.map((m) => [esc(m.address + ':' + m.port), state(m.health.up), esc(m.health.since ? time(m.health.since) : '-'), esc(m.state), esc(m.weight), esc(m.slots),
      '<span class="num">' + esc(m.counters.newSessions) + '</span>', '<span class="num">' + esc(m.counters.packets ?? '-') + '</span>', '<span class="num">' + esc(m.counters.bytes === undefined ? '-' : si(m.counters.bytes, 'B')) + '</span>', esc(m.health.reason)]),
      (i) => attr({ class: 'member', 'data-vip': v.id, 'data-member': v.members[i].address + ':' + v.members[i].port }))).join('');
}
async function refresh() {
  const [health, status, hist, list, node] = await Promise.all([get('health'), get('status'), get('firewalls/history'), get('vips'), get('node')]);
  document.getElementById('title').textContent = 'fwlb ' + (health && health.role ? health.role + ' node' : 'SLB');
  document.getElementById('health').innerHTML = health ? 'health: <b>' + esc(health.status) + '</b>' : 'no answer';
  document.getElementById('alarms').innerHTML = (health && health.alarms || []).map((a) => '<div class="alarm">' + esc(a) + '</div>').join('');
  if (node) document.getElementById('routing').innerHTML = '<h2>Routing</h2>announced <b id="bgp-state" class="' + (node.state === 'fit' ? 'up' : 'down') + '">' + esc(node.state) + '</b>' + (node.unfit ? ' (' + esc(node.unfit) + ')' : '') + ', BIRD ' + (node.daemon.running ? 'running' : '<span class="down">not answering</span>') + ', configuration ' + esc(node.daemon.config) +
    table(['peer', 'address', 'BGP', 'BFD', 'info'], node.peers.map((p) => [esc(p.name), esc(p.address), state(p.established), p.bfd === null ? '-' : state(p.bfd === 'Up'), esc(p.info)]));
  if (status && status.firewalls) { agreement(status); firewalls(status, hist); }
  if (hist) history(hist);
  if (list) vips(list);
  document.getElementById('updated').textContent = 'updated ' + new Date().toLocaleTimeString();
}
refresh(); setInterval(() => refresh().catch(() => undefined), 1000);
</script></body></html>`;

/** GET /ui: the status page (read-only; it uses the same unauthenticated GET routes as anyone). */
export function statusPage(app: FastifyInstance): void {
  app.get('/ui', { config: { undocumented: true } }, async (_req, reply) => reply.type('text/html; charset=utf-8').send(PAGE));
}
