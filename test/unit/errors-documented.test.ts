// Unit: every API error code in the registry is documented in the API reference (fastify's rule).
import { t } from 'tap';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Errors } from '@fwlb/balancer';
import { SlbErrors } from '@fwlb/slb';
import { REPO } from '@fwlb/lab';

t.test('each error code appears in docs/api.md with its status', async (t) => {
  const api = readFileSync(join(REPO, 'docs', 'api.md'), 'utf8');
  for (const e of [...Object.values(Errors), ...Object.values(SlbErrors)]) t.match(api, new RegExp(`\`${e.code}\` ${e.statusCode}`), e.code);
});
