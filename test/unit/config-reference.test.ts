// Unit: docs/config-reference.md is what the schemas say now (regenerate: node scripts/config-reference.js), and
// lists every key an operator asked after.
import { t } from 'tap';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { configReference, schemaRows, slbSchema, balancerSchema } from '@fwlb/config';
import { REPO } from '@fwlb/lab';

t.test('the configuration reference is current', async (t) => {
  t.equal(
    readFileSync(join(REPO, 'docs/config-reference.md'), 'utf8'),
    configReference(),
    'docs/config-reference.md equals the generated text (node scripts/config-reference.js)',
  );
});

t.test('every key is in it, with each check kind its own keys', async (t) => {
  const keys = (s: object) => schemaRows(s).map((r) => r.key);
  const b = keys(balancerSchema);
  for (const k of [
    'sessionTable.eventBufferBytes',
    'health.timers.deadInterval',
    'health.check (kind tcp).port',
    'firewalls[].nextHop6',
    'firewalls[].natPools',
  ])
    t.ok(b.includes(k), k);
  t.notOk(b.includes('health.check (kind icmp).port'), 'an ICMP check has no port');
  const s = keys(slbSchema);
  for (const k of ['name', 'vips[].members[].address', 'vips[].check (kind http-content).regex', 'vips[].pools[].timers.response']) t.ok(s.includes(k), k);
  const rows = schemaRows(slbSchema);
  t.match(
    rows.find((r) => r.key === 'vips[].port'),
    { required: true, allowed: '1 to 65535' },
  );
  t.match(
    rows.find((r) => r.key === 'vips[].address'),
    { allowed: 'format IPv4 or IPv6' },
  );
});
