// Unit: the SLB config and VIP bodies: defaults, and bad input refused with the field named.
import { t } from 'tap';
import { ConfigError, validateSlbConfig, validateVip } from '@fwlb/config';

const vip = () => ({
  id: 'web',
  address: '203.0.113.100',
  port: 80,
  protocol: 'tcp',
  members: [
    { address: '10.20.0.11', port: 8080 },
    { address: '10.20.0.12', port: 8080, weight: 3, state: 'drain' },
  ],
});
const good = () => ({ interface: 'up0', vips: [vip()] as any[] });

t.test('defaults are filled in and the result is frozen', async (t) => {
  const c = validateSlbConfig(good());
  t.equal(c.table, 'fwlb_slb');
  t.equal(c.vips[0].scheduler, 'rr');
  t.same(c.vips[0].check, { kind: 'tcp' });
  t.equal(c.vips[0].timers.rise, 2);
  t.same(
    c.vips[0].members.map((m) => [m.weight, m.state]),
    [
      [1, 'enabled'],
      [3, 'drain'],
    ],
  );
  t.ok(Object.isFrozen(c.vips[0].members[0]));
});

const bad: [string, (c: any) => void, RegExp][] = [
  ['unknown key', (c) => (c.vips[0].pool = 'x'), /\/vips\/0\/pool: unknown key/],
  ['member port 0', (c) => (c.vips[0].members[1].port = 0), /\/vips\/0\/members\/1\/port: must be >= 1/],
  ['unknown scheduler', (c) => (c.vips[0].scheduler = 'lc'), /\/vips\/0\/scheduler: must be equal to one of the allowed values/],
  ['overlapping VIPs', (c) => c.vips.push({ ...vip(), id: 'web2' }), /\/vips\/1: overlaps VIP "web" on 203.0.113.100:80\/tcp/],
  ['duplicate VIP id', (c) => c.vips.push({ ...vip(), port: 443 }), /\/vips\/1\/id: duplicate VIP id "web"/],
  ['duplicate member', (c) => c.vips[0].members.push({ address: '10.20.0.11', port: 8080 }), /\/vips\/0\/members\/2: duplicate member 10.20.0.11:8080/],
  ['member on the VIP address', (c) => (c.vips[0].members[0].address = '203.0.113.100'), /\/vips\/0\/members\/0\/address: must differ from the VIP address/],
  [
    'response not below interval',
    (c) => (c.vips[0].timers = { interval: 100, response: 100, retries: 2 }),
    /\/vips\/0\/timers\/response: response \(100 ms\) must be smaller than interval/,
  ],
  ['check of an unknown kind', (c) => (c.vips[0].check = { kind: 'smtp' }), /\/vips\/0\/check/],
  ['weight 0', (c) => (c.vips[0].members[0].weight = 0), /\/vips\/0\/members\/0\/weight: must be >= 1/],
  ['interface too long for the address label', (c) => (c.interface = 'averylongname'), /\/interface/],
  // Timer floors: below them a config spends the node's CPU on checking (see TIMER_FLOORS).
  ['an interval under 50 ms', (c) => (c.vips[0].timers = { interval: 1e-9, response: 1e-10, retries: 2 }), /\/vips\/0\/timers\/interval: must be >= 50/],
  ['a response under 10 ms', (c) => (c.vips[0].timers = { interval: 100, response: 5, retries: 2 }), /\/vips\/0\/timers\/response: must be >= 10/],
  [
    'a dead interval under 50 ms',
    (c) => (c.vips[0].timers = { interval: 100, response: 50, retries: 2, deadInterval: 1 }),
    /\/vips\/0\/timers\/deadInterval: must be >= 50/,
  ],
  [
    "a pool's interval under 50 ms",
    (c) =>
      Object.assign(c.vips[0], {
        mode: 'http',
        pools: [{ name: 'a', timers: { interval: 1, response: 0.5, retries: 2 } }],
        defaultPool: 'a',
        members: c.vips[0].members.map((m: any) => ({ ...m, pool: 'a' })),
      }),
    /\/vips\/0\/pools\/0\/timers\/interval: must be >= 50/,
  ],
];

// Addresses that cannot work, or would capture someone else's traffic: refused for the VIP and for a member.
const special: [string, string, RegExp][] = [
  ['unspecified', '0.0.0.0', /unspecified/],
  ['broadcast', '255.255.255.255', /broadcast/],
  ['loopback', '127.0.0.1', /loopback/],
  ['multicast', '224.0.0.251', /multicast/],
  ['link-local', '169.254.1.1', /link-local/],
  ['reserved', '240.0.0.1', /reserved/],
  ['IPv6 unspecified', '::', /unspecified/],
  ['IPv6 loopback', '::1', /loopback/],
  ['IPv6 link-local', 'fe80::1', /link-local/],
  ['IPv6 multicast', 'ff02::1', /multicast/],
  ['IPv4-mapped IPv6', '::ffff:10.0.0.1', /IPv4-mapped/],
];
for (const [what, addr, why] of special) {
  t.test(`refused: a ${what} VIP address and a ${what} member`, async (t) => {
    for (const [field, edit] of [
      ['/vips/0/address', (c: any) => (c.vips[0].address = addr)],
      ['/vips/0/members/1/address', (c: any) => (c.vips[0].members[1].address = addr)],
    ] as const) {
      const c = good();
      edit(c);
      const e = t.throws(() => validateSlbConfig(c)) as unknown;
      t.ok(e instanceof ConfigError, `${field}: a ConfigError`);
      t.match(
        (e as Error).message,
        new RegExp(`${field.replace(/\//g, '\\/')}: ${addr.replace(/\./g, '\\.')} is .*${why.source}`),
        `${field} named, with the reason`,
      );
    }
  });
}
t.test('ordinary private and documentation addresses stay accepted', async (t) => {
  for (const addr of ['10.0.0.1', '172.16.5.4', '192.168.1.1', '198.51.100.7', '203.0.113.7', '100.64.0.1']) {
    const c = good();
    c.vips[0].members[0].address = addr;
    t.doesNotThrow(() => validateSlbConfig(c), addr);
  }
});
for (const [name, edit, want] of bad) {
  t.test(`refused: ${name}`, async (t) => {
    const c = good();
    edit(c);
    const e = t.throws(() => validateSlbConfig(c)) as unknown;
    t.ok(e instanceof ConfigError, 'a ConfigError');
    t.match((e as Error).message, want);
  });
}

t.test('a VIP body is checked against the VIPs that stay', async (t) => {
  const others = [vip()] as any;
  t.match((t.throws(() => validateVip({ ...vip(), id: 'web2' }, others)) as Error).message, /\/port: overlaps VIP "web"/);
  t.match((t.throws(() => validateVip(vip(), others)) as Error).message, /\/id: VIP "web" exists/);
  const v = validateVip({ ...vip(), id: 'tls', port: 443 }, others);
  t.equal(v.port, 443, 'another port on the same address is fine');
  t.equal(validateVip({ ...vip(), protocol: 'udp', id: 'dns' }, others).protocol, 'udp', 'the same port over UDP is fine');
});

t.test('IPv6 VIPs: addresses in any text form, kept in RFC 5952 form; an L4 VIP keeps its family, an L7 VIP may mix', async (t) => {
  const v6 = {
    ...vip(),
    address: '2001:DB8:5:0:0:0:0:100',
    members: [
      { address: '2001:db8:20:0::11', port: 8080 },
      { address: '2001:db8:20::12', port: 8080 },
    ],
  };
  const c = validateSlbConfig({ interface: 'up0', vips: [v6] });
  t.equal(c.vips[0].address, '2001:db8:5::100');
  t.same(
    c.vips[0].members.map((m) => m.address),
    ['2001:db8:20::11', '2001:db8:20::12'],
  );
  const dup = { ...v6, members: [...v6.members, { address: '2001:0db8:0020::11', port: 8080 }] };
  t.match(
    (t.throws(() => validateSlbConfig({ interface: 'up0', vips: [dup] })) as Error).message,
    /\/vips\/0\/members\/2: duplicate member \[2001:db8:20::11\]:8080/,
    'the same member in another text form is a duplicate',
  );
  const mixed = {
    ...vip(),
    members: [
      { address: '10.20.0.11', port: 8080 },
      { address: '2001:db8:20::12', port: 8080 },
    ],
  };
  t.match(
    (t.throws(() => validateSlbConfig({ interface: 'up0', vips: [mixed] })) as Error).message,
    /\/vips\/0\/members\/1\/address: 2001:db8:20::12 is IPv6 but the VIP 203\.0\.113\.100 is IPv4/,
    'an IPv4 L4 VIP with an IPv6 member: refused, naming the field',
  );
  const l7 = { ...mixed, mode: 'http', pools: [{ name: 'a' }], defaultPool: 'a', members: mixed.members.map((m) => ({ ...m, pool: 'a' })) };
  t.doesNotThrow(() => validateSlbConfig({ interface: 'up0', vips: [l7] }), 'an L7 VIP may mix the families');
  t.match(
    (t.throws(() => validateSlbConfig({ interface: 'up0', vips: [{ ...vip(), address: '2001:db8::g' }] })) as Error).message,
    /\/vips\/0\/address: must be a valid IPv4 or IPv6 address/,
    'a malformed address names the field',
  );
  t.equal(validateVip({ ...v6, id: 'web6', address: '2001:db8:5:0::100' }, [vip()] as any).address, '2001:db8:5::100', 'a VIP body too');
  const twice = {
    interface: 'up0',
    vips: [
      { ...v6, id: 'web6', address: '2001:db8:5::100' },
      { ...v6, id: 'web6b' },
    ],
  };
  t.match(
    (t.throws(() => validateSlbConfig(twice)) as Error).message,
    /\/vips\/1: overlaps VIP "web6" on \[2001:db8:5::100\]:80\/tcp/,
    'one address in two text forms overlaps',
  );
  const others = [validateVip({ ...v6, id: 'web6' }, [])];
  t.match(
    (t.throws(() => validateVip({ ...v6, id: 'web6c', address: '2001:db8:5::0:100' }, others)) as Error).message,
    /\/port: overlaps VIP "web6"/,
    'and so does a VIP body',
  );
});
