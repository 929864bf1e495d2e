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
  t.same(c.vips[0].members.map((m) => [m.weight, m.state]), [[1, 'enabled'], [3, 'drain']]);
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
  ['response not below interval', (c) => (c.vips[0].timers = { interval: 100, response: 100, retries: 2 }), /\/vips\/0\/timers\/response: response \(100 ms\) must be smaller than interval/],
  ['check of an unknown kind', (c) => (c.vips[0].check = { kind: 'smtp' }), /\/vips\/0\/check/],
  ['weight 0', (c) => (c.vips[0].members[0].weight = 0), /\/vips\/0\/members\/0\/weight: must be >= 1/],
  ['interface too long for the address label', (c) => (c.interface = 'averylongname'), /\/interface/],
];
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
