// Unit (a child process, no kernel): a stuck nft is killed after its time limit and reported, never waited on forever.
import { t } from 'tap';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { nftCli } from '@fwlb/nft';

t.test('a stuck nft is killed and the transaction reported as failed', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'fwlb-nft-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const stuck = join(dir, 'nft');
  writeFileSync(stuck, '#!/bin/sh\nexec sleep 60\n');
  chmodSync(stuck, 0o755);
  const t0 = Date.now();
  await t.rejects(nftCli(stuck, 300).apply([{ add: { table: { family: 'inet', name: 'x' } } }]), /did not finish within 300 ms and was killed/);
  t.ok(Date.now() - t0 < 5000, `gave up after ${Date.now() - t0} ms`);
});
