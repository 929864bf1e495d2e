// `fwlb-slb doctor`: detects the kernel features the SLB data plane needs and says what is missing; shell layer of libs/slb.
import { existsSync } from 'node:fs';
import { nftCli } from '@fwlb/nft';
import { probeHelperRunnable } from '@fwlb/health';
import { Check, ipForwardCheck, sysctlOnCheck } from '@fwlb/service';
import { HaproxyEngine } from './haproxy';

/**
 * What the SLB table uses, in a table of its own, checked with `nft -c` and never committed: the typeof pool map
 * keyed address . port . jhash/numgen, a `flow` VIP's map keyed by the jhash of the flow, the dispatch verdict map,
 * counter sets updated from packet and ct keys, the guard's lookup of member endpoints, one-arm VIPs' source NAT. A
 * constant (nothing from input is put in); the JSON that fwlb renders is what the integration tests send for real.
 */
export const DOCTOR_RULESET = `table ip fwlb_slb_doctor {
  map be_tcp {
    typeof ip daddr . tcp dport . numgen inc mod 2 : ip daddr . tcp dport
  }
  map vips {
    type ipv4_addr . inet_proto . inet_service : verdict
  }
  map f_a {
    typeof numgen inc mod 2 : ip daddr . tcp dport
  }
  set member_eps {
    type ipv4_addr . inet_proto . inet_service
  }
  set snat_node {
    type ipv4_addr . inet_proto . inet_service
  }
  map snat_to {
    type ipv4_addr . inet_proto . inet_service : ipv4_addr
  }
  set vip_new {
    type ipv4_addr . inet_proto . inet_service
    size 65535
    flags dynamic
    counter
  }
  set member_pkt {
    type ipv4_addr . inet_proto . inet_service . ipv4_addr . inet_service
    size 65535
    flags dynamic
    counter
  }
  chain v_a {
    tcp dport 80 update @vip_new { ip daddr . meta l4proto . tcp dport } dnat ip to ip daddr . tcp dport . jhash ip saddr mod 61 seed 0x1 map @be_tcp comment "fwlb:x"
  }
  chain v_b {
    tcp dport 81 dnat ip to ip daddr . tcp dport . numgen inc mod 2 map @be_tcp
  }
  chain v_c {
    tcp dport 82 dnat ip to jhash ip saddr . tcp sport . ip daddr . tcp dport . meta l4proto mod 61 seed 0x1 map @f_a
  }
  chain onearm {
    type nat hook postrouting priority 100; policy accept;
    meta l4proto tcp ct original ip daddr . meta l4proto . ct original proto-dst @snat_node masquerade
    meta l4proto tcp snat ip to ct original ip daddr . meta l4proto . ct original proto-dst map @snat_to
  }
  chain guard {
    type filter hook prerouting priority -150; policy accept;
    meta l4proto tcp ct state new tcp flags & (syn | ack) != syn ip saddr . meta l4proto . th sport @member_eps counter drop
  }
  chain prerouting_dispatch {
    type nat hook prerouting priority -100; policy accept;
    ip daddr . meta l4proto . th dport vmap @vips
  }
  chain forward_count {
    type filter hook forward priority 0; policy accept;
    meta l4proto tcp ct state new update @member_pkt { ct original ip daddr . meta l4proto . ct original proto-dst . ct reply ip saddr . ct reply proto-src }
  }
}
add element ip fwlb_slb_doctor vips { 192.0.2.1 . tcp . 80 : jump v_a }
add element ip fwlb_slb_doctor be_tcp { 192.0.2.1 . 80 . 0 : 192.0.2.10 . 8080 }
`;

/** The same for the `ip6` table of IPv6 VIPs: every address field and the NAT family in IPv6. */
export const DOCTOR_RULESET6 = DOCTOR_RULESET.replace(/\bip (daddr|saddr|to|fwlb_slb_doctor)\b/g, 'ip6 $1')
  .replace(/ipv4_addr/g, 'ipv6_addr')
  .replace(/192\.0\.2\.(\d+)/g, '2001:db8::$1');

/** The doctor's check of the HAProxy binary (optional: without it, L7 and proxied TCP VIPs are refused); start reads its result. */
export const HAPROXY_CHECK = 'HAProxy (L7 VIPs)';

/** Whether this kernel and nft take the SLB's rulesets, IPv4 and IPv6 (required for IPv6 only when there are IPv6 VIPs). */
async function nftChecks(ipv6: boolean): Promise<Check[]> {
  const checks: Check[] = [];
  try {
    await nftCli().applyText(DOCTOR_RULESET, true);
    checks.push({
      name: 'nft DNAT maps',
      ok: true,
      required: true,
      detail: 'verdict map dispatch, typeof pool maps keyed address . port . jhash/numgen, counter sets updated from ct keys accepted',
    });
  } catch (e) {
    checks.push({ name: 'nft DNAT maps', ok: false, required: true, detail: `the kernel or nft refused the SLB ruleset: ${(e as Error).message}` });
  }
  try {
    await nftCli().applyText(DOCTOR_RULESET6, true);
    checks.push({ name: 'nft DNAT maps (IPv6)', ok: true, required: ipv6, detail: 'the same for the ip6 table of IPv6 VIPs accepted' });
  } catch (e) {
    checks.push({
      name: 'nft DNAT maps (IPv6)',
      ok: false,
      required: ipv6,
      detail: `the kernel or nft refused the ip6 SLB ruleset: IPv6 VIPs cannot be served: ${(e as Error).message}`,
    });
  }
  return checks;
}

/** Forwarding in both families, and liberal TCP windows for `flow` VIPs that move between nodes. */
function sysctlChecks(ipv6: boolean, flow: boolean): Check[] {
  const checks: Check[] = [];
  checks.push(ipForwardCheck());
  checks.push(
    sysctlOnCheck(
      'IPv6 forwarding',
      'net/ipv6/conf/all/forwarding',
      ipv6,
      'enabled',
      (v) =>
        `net.ipv6.conf.all.forwarding is ${v ?? 'missing (no IPv6 in this kernel?)'}: IPv6 VIPs would not reach their members (sysctl -w net.ipv6.conf.all.forwarding=1)`,
    ),
  );
  if (flow)
    checks.push(
      sysctlOnCheck(
        'conntrack TCP windows (flow VIPs)',
        'net/netfilter/nf_conntrack_tcp_be_liberal',
        false,
        'liberal: a node that takes connections back translates their packets',
        () =>
          'net.netfilter.nf_conntrack_tcp_be_liberal is not 1: a node of an SLB group that takes connections back (its links return) holds entries whose windows they have left, calls their packets invalid and its own stack resets them (sysctl -w net.netfilter.nf_conntrack_tcp_be_liberal=1)',
      ),
    );
  return checks;
}

/**
 * `ipv6`: the config has IPv6 VIPs, so their table and IPv6 forwarding are required (else only reported). `flow`: it
 * has `flow` VIPs, whose connections are meant to move between SLB nodes.
 */
export async function slbDoctor(iface?: string, haproxy = 'haproxy', ipv6 = false, flow = false): Promise<Check[]> {
  const python = probeHelperRunnable(); // runs while nft checks
  const checks: Check[] = [...(await nftChecks(ipv6)), ...sysctlChecks(ipv6, flow)];
  const py = await python;
  // Not required, as on a balancer node: without it the SLB starts degraded (an alarm; member health holds its last state).
  checks.push({
    name: 'probe helper (python3)',
    ok: py.ok,
    required: false,
    detail: py.ok ? py.detail : `${py.detail}: the SLB starts degraded, health checks cannot run`,
  });
  const hx = HaproxyEngine.available(haproxy);
  checks.push({
    name: HAPROXY_CHECK,
    ok: hx,
    required: false,
    detail: hx ? `${haproxy} runs` : `${haproxy} not found: VIPs with mode "http" or "tcp" are refused, L4 VIPs work (Debian package haproxy)`,
  });
  if (iface) {
    const ok = existsSync(`/sys/class/net/${iface}`);
    checks.push({ name: `interface ${iface}`, ok, required: true, detail: ok ? 'present' : 'does not exist: VIP addresses cannot be added' });
  }
  return checks;
}
