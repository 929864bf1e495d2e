// Test helper: a lab per test file, with a unique namespace prefix and teardown even when a test fails.
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Lab, uniquePrefix, LabOptions } from '@fwlb/lab';

export async function startLab(t: { teardown(fn: () => void): void }, opts: Partial<LabOptions> = {}): Promise<Lab> {
  const prefix = uniquePrefix('ft');
  const lab = new Lab({ prefix, runDir: join(tmpdir(), `fwlb-test-${prefix}`), ...opts });
  t.teardown(() => lab.teardown());
  lab.build();
  await lab.startServers();
  await lab.startNodes();
  return lab;
}
