// Unit: a firewall's history (the status page's source): its state changes with their reasons, the traffic samples,
// and the bounds on both.
import { t } from 'tap';
import { FirewallHistory, HISTORY_EVENTS, HISTORY_SAMPLES, ObservedFirewall } from '@fwlb/balancer';

const fw = (id: string, o: Partial<ObservedFirewall> = {}): ObservedFirewall => ({
  id,
  enabled: true,
  healthy: true,
  link: true,
  live: true,
  health: null,
  sent: { packets: 10, bytes: 1000 },
  newFlows: { packets: 2, bytes: 120 },
  ...o,
});

t.test('the first look only learns the state: a restart is not every firewall coming up', async (t) => {
  const h = new FirewallHistory();
  h.observe(1000, [fw('fw1', { live: false, healthy: false })]);
  t.same(h.view().events, []);
});

t.test('each change is an event with its reason; the same state again is none', async (t) => {
  const h = new FirewallHistory();
  h.observe(1000, [fw('fw1'), fw('fw2')]);
  // The link is cut: the probes say why, and the kernel stops giving it new sessions in the same pass.
  h.observe(2000, [fw('fw1', { link: false, healthy: false, live: false, health: { reason: 'own link fw1 is down' } }), fw('fw2')]);
  h.observe(2500, [fw('fw1', { link: false, healthy: false, live: false, health: { reason: 'own link fw1 is down' } }), fw('fw2')]);
  t.same(
    h.view().events.map((e) => [e.at, e.firewall, e.what, e.up, e.reason]),
    [
      [2000, 'fw1', 'link', false, 'its link is down'],
      [2000, 'fw1', 'health', false, 'own link fw1 is down'],
      [2000, 'fw1', 'live', false, 'its link is down'],
    ],
  );
  // The operator disables fw2: the admin change, then the kernel's.
  h.observe(3000, [fw('fw1', { link: false, healthy: false, live: false }), fw('fw2', { enabled: false, live: false })]);
  t.same(
    h
      .view()
      .events.slice(3)
      .map((e) => [e.firewall, e.what, e.up, e.reason]),
    [
      ['fw2', 'admin', false, 'disabled by the operator'],
      ['fw2', 'live', false, 'disabled by the operator'],
    ],
  );
  // A firewall whose probes fail (link up) is out because of the checks, and says which.
  h.observe(4000, [fw('fw1', { live: false, healthy: false, health: { reason: 'timeout after 1000 ms' } }), fw('fw2', { enabled: false, live: false })]);
  h.observe(5000, [fw('fw1'), fw('fw2', { enabled: false, live: false })]);
  t.same(
    h
      .view()
      .events.slice(5)
      .map((e) => [e.at, e.what, e.up, e.reason]),
    [
      [4000, 'link', true, 'its link is up'],
      [5000, 'health', true, 'checks pass'],
      [5000, 'live', true, 'takes new sessions'],
    ],
  );
  // Up everywhere yet not live: the other nodes do not agree (or panic).
  h.observe(6000, [fw('fw1', { live: false }), fw('fw2', { enabled: false, live: false })]);
  t.match(h.view().events.at(-1), { what: 'live', up: false, reason: /not seen up by every node/ });
});

t.test('samples: the counters as listed, one per listing, bounded', async (t) => {
  const h = new FirewallHistory();
  h.sample(1000, [fw('fw1'), fw('fw2', { sent: null, newFlows: null, sessions: 7, live: false })]);
  h.sample(1000, [fw('fw1', { sent: { packets: 99, bytes: 9900 } })]);
  h.sample(900, [fw('fw1')]);
  t.same(h.view().samples, [
    {
      at: 1000,
      firewalls: {
        fw1: { sentPackets: 10, sentBytes: 1000, newFlows: 2, sessions: null, live: true },
        fw2: { sentPackets: 0, sentBytes: 0, newFlows: 0, sessions: 7, live: false },
      },
    },
  ]);
  for (let i = 1; i <= HISTORY_SAMPLES + 5; i++) h.sample(1000 + i * 5000, [fw('fw1', { sent: { packets: i, bytes: i * 100 } })]);
  const s = h.view().samples;
  t.equal(s.length, HISTORY_SAMPLES, 'only the last minutes are kept');
  t.equal(s.at(-1)!.firewalls.fw1.sentBytes, (HISTORY_SAMPLES + 5) * 100, 'the newest last');
  t.equal(s[0].at, 1000 + 6 * 5000, 'the oldest dropped first');
});

t.test('events are bounded, the newest kept', async (t) => {
  const h = new FirewallHistory();
  h.observe(0, [fw('fw1')]);
  for (let i = 1; i <= HISTORY_EVENTS + 10; i++) h.observe(i, [fw('fw1', { enabled: i % 2 === 0 })]);
  const e = h.view().events;
  t.equal(e.length, HISTORY_EVENTS);
  t.equal(e.at(-1)!.at, HISTORY_EVENTS + 10);
});
