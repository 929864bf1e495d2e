// `fwlb-slb doctor`: detects the kernel features the SLB data plane needs and says what is missing; shell layer of apps/slb.
import { existsSync } from 'node:fs';
import { nftCli } from '@fwlb/nft';
import { probeHelperRunnable } from '@fwlb/health';
import { Check, ipForwardCheck } from '@fwlb/service';
import { applySlbCommands, backendMapsModel, slbCommands } from './kernel';
import { backendMapsText, renderVip, SLB_FAMILY } from './render';

/** A sample VIP of each scheduler rendered as the real table would be, checked with `nft -c` and never committed. */
export async function slbDoctor(iface?: string): Promise<Check[]> {
  const checks: Check[] = [];
  const member = { address: '192.0.2.10', port: 8080, weight: 2, state: 'enabled' as const };
  const other = { ...member, address: '192.0.2.11', weight: 1 };
  const timers = { interval: 1000, response: 500, retries: 3, timeout: 3000, deadInterval: 1000, rise: 1, jitter: 0 };
  const vip = (id: string, scheduler: 'sh' | 'rr') => ({ id, address: '192.0.2.1', port: scheduler === 'sh' ? 80 : 81, protocol: 'tcp' as const, scheduler, check: { kind: 'tcp' as const }, timers, panicThreshold: 0, members: [member, other] });
  const want = [vip('a', 'sh'), vip('b', 'rr')].map((v) => renderVip(v, () => true, 1));
  const nft = nftCli();
  const table = 'fwlb_slb_doctor';
  try {
    // The pool maps can only be declared for real (text, typeof), in a table of their own with no hook: no packet sees it.
    await nft.applyText(backendMapsText(table));
    await nft.check(slbCommands({ table, want, have: applySlbCommands(null, backendMapsModel(table)) }));
    checks.push({ name: 'nft DNAT maps', ok: true, required: true, detail: 'verdict map dispatch, typeof pool maps keyed address . port . jhash/numgen, counter sets updated from ct keys accepted' });
  } catch (e) {
    checks.push({ name: 'nft DNAT maps', ok: false, required: true, detail: `the kernel or nft refused the SLB ruleset: ${(e as Error).message}` });
  } finally {
    await nft.apply([{ delete: { table: { family: SLB_FAMILY, name: table } } }]).catch(() => undefined);
  }
  checks.push(ipForwardCheck());
  const py = probeHelperRunnable();
  checks.push({ name: 'probe helper (python3)', ok: py.ok, required: true, detail: py.detail });
  if (iface) {
    const ok = existsSync(`/sys/class/net/${iface}`);
    checks.push({ name: `interface ${iface}`, ok, required: true, detail: ok ? 'present' : 'does not exist: VIP addresses cannot be added' });
  }
  return checks;
}
