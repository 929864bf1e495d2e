// Test helper: NAT-ing firewalls (a lab built with natFirewalls) carry server-initiated connections SNATed to their
// own pools and a service they publish (DNAT), through every node of a side, while every node loses its state.
import type { Test } from 'tap';
import { spawnSync } from 'node:child_process';
import { drive, DriveReport, ECHO_PORT, inNs, Lab, nodeNs, NAT_FULL, NAT_PUBLISHED } from '@fwlb/lab';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export const natTitle = (published: 'dnat' | 'full', forgetConnSets: boolean) =>
  `NAT-ing firewalls: server-initiated connections SNATed per firewall, a service published by ${published === 'full' ? 'DNAT and SNAT' : 'DNAT only'}, ` +
  `conntrack${forgetConnSets ? ' and the conn sets' : ''} flushed on every node mid-stream: 0 failed, 0 broken, 0 drops`;

/**
 * Clients open connections to the firewalls' published addresses, servers to the clients (each leaves SNATed to
 * its firewall's pool): short ones throughout, long-lived streams across the moment every balancer node's conntrack
 * is flushed (and with `forgetConnSets` the conn sets too, as a reboot would: then the inside nodes find a
 * DNAT-only session's firewall in the pins alone).
 */
export async function natFirewalls(t: Test, lab: Lab, o: { published: 'dnat' | 'full'; forgetConnSets: boolean }): Promise<void> {
  const fwCount = lab.t.opts.firewalls;
  const ks = Array.from({ length: fwCount }, (_, i) => i + 1);
  const published = ks.map((k) => `${(o.published === 'full' ? NAT_FULL : NAT_PUBLISHED)(k)}:${ECHO_PORT}`);
  const clients = lab.t.hosts.filter((h) => h.role === 'client');
  const servers = lab.t.hosts.filter((h) => h.role === 'server');
  const toClients = clients.map((c) => `${c.addr}:${ECHO_PORT}`);
  lab.resetFirewallCounters();
  const long = { durationMs: 9000, intervalMs: 100, timeoutMs: 3000 };
  // DNAT only: every published address leads to the same VIP, so a client that took one source port to two of them
  // would hold two connections with one tuple behind the firewalls, which no node and no server can tell apart
  // (see docs/limits.md). Each client talks to one published address then, as a client of a real service does.
  const targetsOf = (i: number) => (o.published === 'dnat' ? [published[i % published.length]] : published);
  const runs: Promise<DriveReport>[] = [
    ...clients.map((c, i) => drive(lab, c.name, { long: { targets: targetsOf(i), count: 30, ...long }, short: { targets: targetsOf(i), count: 300, concurrency: 6, timeoutMs: 5000 } })),
    ...servers.map((s) => drive(lab, s.name, { long: { targets: toClients, count: 20, ...long }, short: { targets: toClients, count: 200, concurrency: 6, timeoutMs: 5000 } })),
  ];
  await sleep(4000);
  for (const n of lab.balancerNames()) {
    inNs(lab.ns(nodeNs(n)), ['conntrack', '-F']);
    if (o.forgetConnSets) for (let k = 0; k < fwCount; k++) spawnSync('ip', ['netns', 'exec', lab.ns(nodeNs(n)), 'nft', 'flush', 'set', 'inet', 'fwlb', `conn${k}`], { stdio: 'ignore' });
  }
  const reports = await Promise.all(runs);
  const streams = reports.flatMap((r) => r.long.streams);
  const shortTried = reports.reduce((a, r) => a + r.short.ok + r.short.failed, 0);
  const errors = JSON.stringify(reports.map((r) => ({ ...r.short.errors, ...r.long.errors })));
  t.equal(streams.length, clients.length * 30 + servers.length * 20, 'every stream ran');
  t.equal(shortTried, clients.length * 300 + servers.length * 200, 'every short connection was tried');
  t.equal(reports.reduce((a, r) => a + r.short.failed, 0), 0, `0 of ${shortTried} short connections failed (${errors})`);
  t.equal(streams.filter((s) => s.err).length, 0, `0 of ${streams.length} streams broke across the flush (${errors})`);
  const fw = lab.firewallCounters();
  t.same(fw.map((f) => f.drops), fw.map(() => 0), `0 firewall drops ${JSON.stringify(lab.firewallDropFlows().slice(0, 10))}`);
  // Each published address is translated by its own firewall only: no other firewall holds a connection to it.
  const elsewhere = ks.flatMap((k) =>
    lab.kernelSessions(`fw${k}`).filter((e) => e.dport === ECHO_PORT && e.dst.startsWith('10.96.') && e.dst !== published[k - 1].split(':')[0]).map((e) => `fw${k}: ${e.src}:${e.sport} -> ${e.dst}`),
  );
  t.same(elsewhere, [], 'each firewall holds connections to its own published address only');
  t.ok(fw.every((f) => f.newSessions > 0), `every firewall carried new connections: ${JSON.stringify(fw.map((f) => f.newSessions))}`);
  t.comment(`streams' longest echo gap across the flush: ${Math.max(...streams.map((s) => s.maxGapMs))} ms`);
}
