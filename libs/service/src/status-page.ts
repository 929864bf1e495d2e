// The read-only status page each agent serves at /ui: one HTML file, no build step, refreshing itself every second
// from the agent's own JSON routes (/health, /firewalls or /vips, and /node when the node announces over BGP); shell
// layer shared by the node processes.
import type { FastifyInstance } from 'fastify';

const PAGE = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>fwlb</title>
<style>
body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}h1{font-size:1.3em}h2{font-size:1.1em;margin-top:1.5em}
table{border-collapse:collapse}td,th{padding:.25em .8em;border-bottom:1px solid #ddd;text-align:left}
.up{color:#070}.down{color:#b00;font-weight:bold}.alarm{background:#fee;border:1px solid #b00;padding:.5em;margin:.5em 0}
#updated{color:#888;font-size:.9em}
</style></head><body>
<h1 id="title">fwlb</h1><div id="health"></div><div id="alarms"></div>
<div id="routing"></div><div id="firewalls"></div><div id="vips"></div><p id="updated"></p>
<script>
const esc = (s) => String(s ?? '-').replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]);
const state = (up) => up ? '<span class="up">up</span>' : '<span class="down">down</span>';
const table = (head, rows) => '<table><tr>' + head.map((h) => '<th>' + esc(h) + '</th>').join('') + '</tr>' + rows.map((r) => '<tr>' + r.map((c) => '<td>' + c + '</td>').join('') + '</tr>').join('') + '</table>';
async function get(path) { const r = await fetch(path); return r.ok ? r.json() : null; }
async function refresh() {
  const [health, fws, vips, node] = await Promise.all([get('health'), get('firewalls'), get('vips'), get('node')]);
  document.getElementById('title').textContent = 'fwlb ' + (health && health.role ? health.role + ' node' : 'SLB');
  document.getElementById('health').innerHTML = health ? 'health: <b>' + esc(health.status) + '</b>' : 'no answer';
  document.getElementById('alarms').innerHTML = (health && health.alarms || []).map((a) => '<div class="alarm">' + esc(a) + '</div>').join('');
  if (node) document.getElementById('routing').innerHTML = '<h2>Routing</h2>announced <b id="bgp-state" class="' + (node.state === 'fit' ? 'up' : 'down') + '">' + esc(node.state) + '</b>' + (node.unfit ? ' (' + esc(node.unfit) + ')' : '') + ', BIRD ' + (node.daemon.running ? 'running' : '<span class="down">not answering</span>') + ', configuration ' + esc(node.daemon.config) +
    table(['peer', 'address', 'BGP', 'BFD', 'info'], node.peers.map((p) => [esc(p.name), esc(p.address), state(p.established), p.bfd === null ? '-' : state(p.bfd === 'Up'), esc(p.info)]));
  if (fws) document.getElementById('firewalls').innerHTML = '<h2>Firewalls</h2>' + table(['firewall', 'health', 'live', 'enabled', 'buckets', 'latency ms', 'reason'],
    fws.map((f) => [esc(f.id), state(f.healthy), state(f.live), esc(f.enabled), esc(f.buckets), esc(f.health && f.health.latencyMs !== undefined ? f.health.latencyMs.toFixed(2) : '-'), esc(f.health && f.health.reason)]));
  if (fws) document.querySelectorAll('#firewalls tr').forEach((tr, i) => { if (i > 0) tr.id = 'fw-' + fws[i - 1].id; });
  if (vips) document.getElementById('vips').innerHTML = '<h2>VIPs</h2>' + vips.map((v) => '<h3>' + esc(v.id) + ' ' + esc(v.address) + ':' + esc(v.port) + '/' + esc(v.protocol) + ' (' + esc(v.scheduler) + ', ' + esc(v.counters.newSessions) + ' new sessions)</h3>' +
    table(['member', 'health', 'state', 'weight', 'slots', 'new sessions', 'reason'], v.members.map((m) => [esc(m.address + ':' + m.port), state(m.health.up), esc(m.state), esc(m.weight), esc(m.slots), esc(m.counters.newSessions), esc(m.health.reason)]))).join('');
  document.getElementById('updated').textContent = 'updated ' + new Date().toLocaleTimeString();
}
refresh(); setInterval(() => refresh().catch(() => undefined), 1000);
</script></body></html>`;

/** GET /ui: the status page (read-only; it uses the same unauthenticated GET routes as anyone). */
export function statusPage(app: FastifyInstance): void {
  app.get('/ui', { config: { undocumented: true } }, async (_req, reply) => reply.type('text/html; charset=utf-8').send(PAGE));
}
