// Integration: the same scenario with asymmetric hashing and no ingress learning fails, in IPv4 and IPv6; proves the
// clean run can fail.
import { t } from 'tap';
import { runScenario, formatReport } from '@fwlb/lab';
import { startLab } from '../helpers/lab';

t.test('broken baseline: each node hashes (source, destination) and nothing is learned', async (t) => {
  const lab = await startLab(t, { broken: true, ipv6: true });
  const r = await runScenario(lab);
  t.comment(formatReport(r));
  t.ok(r.failed.total > 0, `connections failed: ${r.failed.total}`);
  t.ok(r.totals.drops > 0, `firewalls dropped asymmetric packets: ${r.totals.drops}`);
  t.ok(r.byFamily.ipv4!.short > 100, `most short TCP connections cross two firewalls: ${r.byFamily.ipv4!.short} failed`);
  t.ok(r.byFamily.ipv6!.short > 100, `IPv6 alike: ${r.byFamily.ipv6!.short} failed`);
});
