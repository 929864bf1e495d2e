// Renders fwlb's keepalived template (deploy/keepalived/fwlb-node.conf) for a node; pure layer of deploy/lab.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { VrrpSide } from './topology';

export const KEEPALIVED_TEMPLATE = join(__dirname, '..', '..', 'keepalived', 'fwlb-node.conf');

/**
 * The timers the lab and docker-compose.redundant.yml run keepalived with (seconds). Two failed checks in a row, not
 * one: a single check that times out is a busy controller (the lab saw one in a few runs of the NAT state-loss test,
 * never two in a row), and moving the addresses for it costs what a move costs while fwlb still forwarded.
 */
export const VRRP_TIMERS = { advert: 0.2, checkInterval: 1, checkTimeout: 1, fall: 2, rise: 2, weight: 60 };

/** The check: 503 unless fwlb is ok; curl, because a Node.js start per check costs too much on small machines. */
export const healthCurl = (socket: string, timeoutS: number) =>
  `/usr/bin/curl -sf -o /dev/null -m ${timeoutS * 0.8} --unix-socket ${socket} http://fwlb/health?strict=true`;

/** Node i (0-based) of a VRRP group: priorities 250, 249, ... (a skew under 3 % of an advertisement interval). */
export function keepalivedNode(
  v: { side: VrrpSide; vrid: number; preempt?: boolean; advertInterface: string; trackInterfaces: string[]; addresses: string[]; addresses6?: string[] },
  node: string,
  i: number,
  socket: string,
  timers = VRRP_TIMERS,
): KeepalivedNode {
  return {
    node,
    side: v.side,
    healthCommand: healthCurl(socket, timers.checkTimeout),
    advertInterface: v.advertInterface,
    trackInterfaces: v.trackInterfaces,
    vrid: v.vrid,
    priority: 250 - i,
    preempt: v.preempt ?? true,
    addresses: v.addresses,
    addresses6: v.addresses6 ?? [],
    ...timers,
  };
}

export interface KeepalivedNode {
  node: string;
  side: VrrpSide;
  /** The command keepalived runs to check fwlb (see the template: curl on /health?strict=true, or fwlbctl health). */
  healthCommand: string;
  advertInterface: string;
  trackInterfaces: string[];
  vrid: number;
  priority: number;
  /** false: `nopreempt`, a node that returns with a higher priority stays backup (an SLB group). */
  preempt: boolean;
  /** Seconds between advertisements. */
  advert: number;
  /** Seconds between health checks (keepalived takes whole seconds, at least 1), and how long one may take. */
  checkInterval: number;
  checkTimeout: number;
  fall: number;
  rise: number;
  weight: number;
  /** `address/len dev ifname`. */
  addresses: string[];
  /** IPv6 ones, the same form: moved with the instance, not advertised (`virtual_ipaddress_excluded`). */
  addresses6: string[];
}

export function renderKeepalived(n: KeepalivedNode, template = readFileSync(KEEPALIVED_TEMPLATE, 'utf8')): string {
  const v: Record<string, string> = {
    NODE: n.node,
    SIDE: n.side,
    HEALTH_COMMAND: n.healthCommand,
    ADVERT_INTERFACE: n.advertInterface,
    TRACK_INTERFACES: n.trackInterfaces.map((i) => `    ${i}`).join('\n'),
    VRID: String(n.vrid),
    PRIORITY: String(n.priority),
    PREEMPT: n.preempt ? '' : '  nopreempt\n',
    ADVERT: String(n.advert),
    CHECK_INTERVAL: String(n.checkInterval),
    CHECK_TIMEOUT: String(n.checkTimeout),
    FALL: String(n.fall),
    RISE: String(n.rise),
    WEIGHT: String(n.weight),
    ADDRESSES: n.addresses.map((a) => `    ${a}`).join('\n'),
    EXCLUDED: n.addresses6.length ? `  virtual_ipaddress_excluded {\n${n.addresses6.map((a) => `    ${a}`).join('\n')}\n  }\n` : '',
  };
  for (const [k, x] of Object.entries(v))
    if (/["\n{}]/.test(x) && !['TRACK_INTERFACES', 'ADDRESSES', 'EXCLUDED', 'PREEMPT'].includes(k))
      throw new RangeError(`keepalived ${k}: ${JSON.stringify(x)} would break the config`);
  const out = template.replace(/\{\{([A-Z_]+)\}\}/g, (_, k: string) => {
    if (!(k in v)) throw new RangeError(`keepalived template: unknown field {{${k}}}`);
    return v[k];
  });
  return out;
}
