// Test helper: NAT-ing firewalls (a lab built with natFirewalls) carry server-initiated connections SNATed to their
// own pools and a service they publish (DNAT), through every node of a side, while every node loses its state; with
// the lab's ipv6 option, IPv6 beside IPv4.
import type { Test } from 'tap';
import { hostPort } from '@fwlb/flowhash';
import { drive, DriveReport, ECHO_PORT, Lab, nodeNs, spawnInNs, NAT_FULL, NAT_FULL6, NAT_PUBLISHED, NAT_PUBLISHED6 } from '@fwlb/lab';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export const natTitle = (published: 'dnat' | 'full', forgetConnSets: boolean) =>
  `NAT-ing firewalls: server-initiated connections SNATed per firewall, a service published by ${published === 'full' ? 'DNAT and SNAT' : 'DNAT only'}, ` +
  `conntrack${forgetConnSets ? ' and the conn sets' : ''} flushed on every node mid-stream: 0 broken, ` +
  (forgetConnSets ? 'packets lost and connections failed only of those open at the loss' : '0 failed, 0 drops');

/**
 * Clients open connections to the firewalls' published addresses, servers to the clients (each leaves SNATed to
 * its firewall's pool): short ones throughout, long-lived streams across the moment every balancer node's conntrack
 * is flushed (and with `forgetConnSets` the conn sets too, as a reboot would: then the inside nodes find a
 * DNAT-only session's firewall in the pins alone).
 */
export async function natFirewalls(t: Test, lab: Lab, o: { published: 'dnat' | 'full'; forgetConnSets: boolean }): Promise<void> {
  const fwCount = lab.t.opts.firewalls;
  const ks = Array.from({ length: fwCount }, (_, i) => i + 1);
  const ipv6 = !!lab.t.opts.ipv6;
  const published = ks.map((k) => `${(o.published === 'full' ? NAT_FULL : NAT_PUBLISHED)(k)}:${ECHO_PORT}`);
  const published6 = ks.map((k) => hostPort((o.published === 'full' ? NAT_FULL6 : NAT_PUBLISHED6)(k), ECHO_PORT));
  const clients = lab.t.hosts.filter((h) => h.role === 'client');
  const servers = lab.t.hosts.filter((h) => h.role === 'server');
  const toClients = clients.map((c) => `${c.addr}:${ECHO_PORT}`);
  const toClients6 = clients.map((c) => hostPort(c.addr6 ?? '', ECHO_PORT));
  lab.resetFirewallCounters();
  const long = { durationMs: 9000, intervalMs: 100, timeoutMs: 3000 };
  // Short connections are paced over about 8 s (one every intervalMs), so that some are open at the loss, 4 s in,
  // however fast the machine runs them.
  // DNAT only: every published address leads to the same VIP, so a client that took one source port to two of them
  // would hold two connections with one tuple behind the firewalls, which no node and no server can tell apart
  // (see docs/limits.md). Each client talks to one published address then, as a client of a real service does.
  const targetsOf = (i: number, pub: string[]) => (o.published === 'dnat' ? [pub[i % pub.length]] : pub);
  // With the lab's ipv6 option, the same over IPv6 at the same time (the firewalls translate IPv6 to their own pools too).
  const sixRuns = (): Promise<DriveReport>[] => [
    ...clients.map((c, i) =>
      drive(lab, c.name, {
        long: { targets: targetsOf(i, published6), count: 10, ...long },
        short: { targets: targetsOf(i, published6), count: 100, concurrency: 4, intervalMs: 80, timeoutMs: 5000, spans: true },
      }),
    ),
    ...servers.map((s) =>
      drive(lab, s.name, {
        long: { targets: toClients6, count: 6, ...long },
        short: { targets: toClients6, count: 60, concurrency: 4, intervalMs: 130, timeoutMs: 5000, spans: true },
      }),
    ),
  ];
  const runs: Promise<DriveReport>[] = [
    ...clients.map((c, i) =>
      drive(lab, c.name, {
        long: { targets: targetsOf(i, published), count: 30, ...long },
        short: { targets: targetsOf(i, published), count: 300, concurrency: 6, intervalMs: 26, timeoutMs: 5000, spans: true },
      }),
    ),
    ...servers.map((s) =>
      drive(lab, s.name, {
        long: { targets: toClients, count: 20, ...long },
        short: { targets: toClients, count: 200, concurrency: 6, intervalMs: 40, timeoutMs: 5000, spans: true },
      }),
    ),
    ...(ipv6 ? sixRuns() : []),
  ];
  await sleep(4000);
  // Every node at once, its conn sets first (while conntrack still holds the marks) and then conntrack: the moment
  // of the loss is as short as the lab can make it, so "open at the loss" names few connections.
  const inNode = (n: string, args: string[], input?: string) =>
    new Promise<void>((res) => {
      const p = spawnInNs(lab.ns(nodeNs(n)), args, { stdio: [input ? 'pipe' : 'ignore', 'ignore', 'ignore'] });
      if (input) p.stdin!.end(input);
      p.on('exit', () => res());
    });
  const sets = ks.flatMap((k) => (ipv6 ? ['', '_v6'] : ['']).map((sfx) => `flush set inet fwlb conn${k - 1}${sfx}\n`)).join('');
  const flushStart = Date.now();
  await Promise.all(
    lab.balancerNames().map(async (n) => {
      if (o.forgetConnSets) await inNode(n, ['nft', '-f', '-'], sets);
      await inNode(n, ['conntrack', '-F']);
    }),
  );
  const flushEnd = Date.now();
  const reports = await Promise.all(runs);
  const streams = reports.flatMap((r) => r.long.streams);
  // With the conn sets forgotten, a node knows a DNAT-only session's firewall from the session table alone, which
  // has a connection once it was answered and written (a flush period later). One open at the moment of the loss
  // whose server answers first after it is hashed, and its firewall may not be the one that translated it: such a
  // connection can lose packets or fail (see docs/limits.md). Anything else must not.
  const spans = reports.flatMap((r) => r.short.spans ?? []);
  const inFlight = new Set(o.forgetConnSets ? spans.filter(([, at, ms]) => at < flushEnd && at + ms > flushStart).map(([port]) => port) : []);
  // What the connection behind each port was (a stream, a short connection and when it ran against the loss, or none
  // of the drivers'): the first thing to know when an assert below fails.
  const streamPorts = new Set(streams.map((x) => x.port));
  const whose = (ports: number[]) =>
    JSON.stringify(
      ports.slice(0, 12).map((p) => {
        const sp = spans.filter(([q]) => q === p).map(([, at, ms]) => `short ${at - flushStart}..${at + ms - flushStart} ms`);
        return `${p}: ${[...(streamPorts.has(p) ? ['stream'] : []), ...sp].join(', ') || 'no driver connection'}`;
      }),
    ) + ` (the loss at 0..${flushEnd - flushStart} ms)`;
  const failedPorts = reports.flatMap((r) => r.short.failedPorts);
  const shortTried = reports.reduce((a, r) => a + r.short.ok + r.short.failed, 0);
  const errors = JSON.stringify(reports.map((r) => ({ ...r.short.errors, ...r.long.errors })));
  t.equal(
    streams.length,
    clients.length * 30 + servers.length * 20 + (ipv6 ? clients.length * 10 + servers.length * 6 : 0),
    `every stream ran${ipv6 ? ' (IPv4 and IPv6)' : ''}`,
  );
  t.equal(
    shortTried,
    clients.length * 300 + servers.length * 200 + (ipv6 ? clients.length * 100 + servers.length * 60 : 0),
    'every short connection was tried',
  );
  const failedOutside = failedPorts.filter((p) => !inFlight.has(p));
  t.same(
    failedOutside,
    [],
    `0 of ${shortTried} short connections failed${o.forgetConnSets ? ` but those open at the loss (${failedPorts.length} of ${inFlight.size})` : ''} (${errors})` +
      (failedOutside.length ? ` ${whose(failedOutside)}` : ''),
  );
  t.equal(streams.filter((s) => s.err).length, 0, `0 of ${streams.length} streams broke across the flush (${errors})`);
  const fw = lab.firewallCounters();
  const dropped = lab.firewallDropFlows();
  const portsOf = (flow: string) => [...flow.matchAll(/:(\d+)(?:>| \()/g)].map((m) => Number(m[1])).filter((p) => p !== ECHO_PORT);
  const unexplained = dropped.filter((f) => !portsOf(f).some((p) => inFlight.has(p)));
  // In a VRRP lab, where each side's addresses were meanwhile: a node that did not see a connection start and
  // gets its packets steers them from the pins and the hash alone.
  const vrrp = lab.vrrpEvents(flushStart - 4000, flushStart);
  if (o.forgetConnSets) {
    const unexplainedPorts = [...new Set(unexplained.map((f) => portsOf(f)[0]))];
    t.same(
      unexplained,
      [],
      `the firewalls dropped packets only of connections open at the loss: ${JSON.stringify(dropped.slice(0, 10))} ${whose(unexplainedPorts)}` +
        (unexplained.length ? ` ${lab.flowTraces(unexplainedPorts.slice(0, 6), ECHO_PORT)} keepalived (ms after the loss began): ${JSON.stringify(vrrp)}` : ''),
    );
    t.comment(
      `short connections open at the loss (${flushEnd - flushStart} ms on ${lab.balancerNames().length} nodes): ${inFlight.size}; of them failed: ${failedPorts.length}; ` +
        `firewall drops: ${JSON.stringify(fw.map((f) => f.drops))} in ${dropped.length} flows`,
    );
  } else
    t.same(
      fw.map((f) => f.drops),
      fw.map(() => 0),
      `0 firewall drops ${JSON.stringify(dropped.slice(0, 10))}`,
    );
  // Each published address is translated by its own firewall only: no other firewall holds a connection to it.
  const elsewhere = ks.flatMap((k) => [
    ...lab
      .kernelSessions(`fw${k}`)
      .filter((e) => e.dport === ECHO_PORT && e.dst.startsWith('10.96.') && e.dst !== published[k - 1].split(':')[0])
      .map((e) => `fw${k}: ${e.src}:${e.sport} -> ${e.dst}`),
    ...(ipv6
      ? lab
          .kernelSessions(`fw${k}`, 'ipv6')
          .filter((e) => e.dport === ECHO_PORT && e.dst.startsWith('2001:db8:96:') && e.dst !== (o.published === 'full' ? NAT_FULL6 : NAT_PUBLISHED6)(k))
          .map((e) => `fw${k}: [${e.src}]:${e.sport} -> ${e.dst}`)
      : []),
  ]);
  t.same(elsewhere, [], `each firewall holds connections to its own published address only${ipv6 ? ' (both families)' : ''}`);
  if (ipv6) {
    // The firewalls whose published address some client used (DNAT only: one address per client).
    const used = ks.filter((k) => clients.some((_, i) => targetsOf(i, published6).includes(published6[k - 1])));
    const v6 = used.map(
      (k) =>
        lab.kernelSessions(`fw${k}`, 'ipv6').filter((e) => e.dport === ECHO_PORT && e.dst === (o.published === 'full' ? NAT_FULL6 : NAT_PUBLISHED6)(k)).length,
    );
    t.ok(
      v6.every((n) => n > 0),
      `each firewall the clients used (${used.map((k) => `fw${k}`).join(', ')}) translated IPv6 connections to its published address: ${JSON.stringify(v6)}`,
    );
  }
  t.ok(
    fw.every((f) => f.newSessions > 0),
    `every firewall carried new connections: ${JSON.stringify(fw.map((f) => f.newSessions))}`,
  );
  t.comment(`streams' longest echo gap across the flush: ${Math.max(...streams.map((s) => s.maxGapMs))} ms`);
  if (vrrp.length) t.comment(`keepalived, ms after the loss began: ${vrrp.join('; ')}`);
}
