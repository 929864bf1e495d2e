// Unit: the balancer's rendered nft table as text, compared with golden dumps for representative configs. A changed
// rule, or a changed rule order, changes a line of a dump; review the dump's diff as text. Regenerate with
// FWLB_UPDATE_GOLDEN=1 after a deliberate change.
import { t } from 'tap';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { validateBalancerConfig } from '@fwlb/config';
import { tableText } from '@fwlb/nft';
import { bucketTable, renderTable, RenderInput } from '@fwlb/balancer';

const GOLDEN = join(__dirname, '..', '..', '..', 'test', 'fixtures', 'golden');
const fws = (n: number, extra: (k: number) => object = () => ({})) =>
  Array.from({ length: n }, (_, i) => ({ id: `fw${i + 1}`, nextHop: `172.17.${i + 1}.2`, interface: `fw${i + 1}`, ...extra(i + 1) }));
const base = { role: 'outside', sideInterface: 'cli0', hash: { seed: 42, buckets: 7 }, firewalls: fws(3) };
const session = { sessionTable: { url: 'redis://127.0.0.1:6379' } };

const cases: { name: string; config: object; input?: Partial<RenderInput>; nextLive?: string[] }[] = [
  { name: 'single-node', config: base },
  { name: 'inside-session-table', config: { ...base, role: 'inside', sideInterface: 'srv0', ...session } },
  {
    name: 'sync-groups',
    config: { ...base, firewalls: fws(4, (k) => ({ syncGroup: k <= 2 ? 'a' : 'b' })), ...session },
    input: { live: ['fw1', 'fw3', 'fw4'] },
  },
  { name: 'suspect-firewall', config: { ...base, ...session }, input: { live: ['fw1', 'fw3'], suspect: ['fw2'] } },
  { name: 'shared-segment', config: { ...base, firewalls: fws(2, (k) => ({ interface: 'tr0', mac: `02:fb:01:00:00:0${k}` })) } },
  { name: 'no-live-firewall', config: base, input: { live: [] } },
  { name: 'pending-switch', config: { ...base, ...session }, nextLive: ['fw1', 'fw3'] },
  {
    name: 'dual-stack',
    config: {
      ...base,
      firewalls: fws(3, (k) => ({
        nextHop6: k === 3 ? 'fe80::3' : `2001:db8:17:${k}::2`,
        ...(k === 1 ? { natPools: ['2001:db8:96:1:0::/64', '10.96.1.0/24'] } : {}),
      })),
      ...session,
    },
    input: {
      live: ['fw1', 'fw3'],
      suspect: ['fw2'],
      pins: [
        { outerAddr: '198.51.100.7', outerPort: 40000, innerAddr: '203.0.113.10', innerPort: 443, proto: 6, mark: 0x10002 },
        { outerAddr: '2001:db8:c::7', outerPort: 40000, innerAddr: '2001:db8:5::10', innerPort: 443, proto: 6, mark: 0x10000 },
      ],
    },
  },
  {
    name: 'nat-pools',
    config: { ...base, firewalls: fws(3, (k) => (k < 3 ? { natPools: k === 1 ? ['10.96.1.0/24', '192.0.2.7'] : ['10.96.2.0/24'] } : {})), ...session },
  },
];

for (const c of cases) {
  t.test(`golden dump: ${c.name}`, async (t) => {
    const config = validateBalancerConfig(c.config);
    const ids = config.firewalls.map((f) => f.id);
    const input: RenderInput = { config, live: ids, restorable: ids, ...c.input };
    // A pending admin change: fw2 leaves new sessions at a whole second, switched by the kernel's clock.
    const next = c.nextLive ? { at: 1_800_000_000_000, table: bucketTable({ ...input, live: c.nextLive }) } : undefined;
    const text = tableText(renderTable(input, bucketTable(input), next));
    const file = join(GOLDEN, `${c.name}.nft`);
    if (process.env.FWLB_UPDATE_GOLDEN) writeFileSync(file, text);
    t.equal(text, readFileSync(file, 'utf8'), `the rendered table equals ${file}`);
  });
}
