// The node, keepalived and BIRD configs that docker-compose.redundant.yml (VRRP) and docker-compose.bgp.yml (ECMP
// through BGP) mount (deploy/configs/redundant/, deploy/configs/bgp/), derived from the lab's topologies so that the
// two cannot drift apart (test/unit/compose.test.ts compares them); pure layer.
import { keepalivedNode, renderKeepalived } from './keepalived';
import { MGMT_NET, topology } from './topology';

/** Where Redis runs in the compose topology: a management network every node reaches on `mgmt0`. */
export const REDUNDANT_REDIS = `${MGMT_NET}.250`;
/** Each node container's API: a unix socket, which keepalived's check reads. */
export const CONTAINER_API = '/run/fwlb/api.sock';

export function composeTopology(routing?: 'bgp') {
  return topology({
    prefix: 'x',
    runDir: '/run/fwlb',
    nodesPerSide: 2,
    sessionTable: `redis://${REDUNDANT_REDIS}:6379`,
    ipv6: true,
    ...(routing ? { mode: 'ecmp' as const, routing } : { mode: 'vrrp' as const }),
  });
}

/** Where BIRD keeps its configuration and control socket in a container (Debian's bird2 package's places). */
export const CONTAINER_BIRD = { configFile: '/etc/bird/bird.conf', controlSocket: '/run/bird/bird.ctl' };

/** File name (in deploy/configs/bgp/) -> content: the nodes' configs (with their bgp sections) and the peers' BIRD. */
export function bgpDeployFiles(): Record<string, string> {
  const t = composeTopology('bgp');
  const out: Record<string, string> = {};
  for (const [name, cfg] of Object.entries(t.balancers)) {
    const node = { ...cfg, api: { listen: `unix:${CONTAINER_API}`, tokenFile: '/etc/fwlb/token' }, bgp: { ...cfg.bgp!, ...CONTAINER_BIRD } };
    out[`${name}.json`] = `${JSON.stringify(node, null, 2)}\n`;
  }
  for (const b of t.birds.filter((x) => !(x.name in t.balancers))) out[`bird-${b.name}.conf`] = b.config;
  return out;
}

/** File name (in deploy/configs/redundant/) -> content. */
export function redundantDeployFiles(): Record<string, string> {
  const t = composeTopology();
  const out: Record<string, string> = {};
  for (const [name, cfg] of Object.entries(t.balancers)) {
    out[`${name}.json`] = `${JSON.stringify({ ...cfg, api: { listen: `unix:${CONTAINER_API}`, tokenFile: '/etc/fwlb/token' } }, null, 2)}\n`;
  }
  for (const v of t.vrrp) v.nodes.forEach((node, i) => (out[`keepalived-${node}.conf`] = renderKeepalived(keepalivedNode(v, node, i, CONTAINER_API))));
  return out;
}

/** The lab with an SLB group (two SLB nodes under keepalived), as docker-compose.slb-group.yml describes it. */
export function slbGroupTopology() {
  return topology({ prefix: 'x', runDir: '/run/fwlb', slbNodes: 2 });
}

/**
 * File name (in deploy/configs/slb-group/) -> content: the balancer nodes' and the SLB nodes' configs, and the SLB
 * nodes' keepalived. Each container reads its token from /etc/fwlb/token; the SLB nodes serve their API on the unix
 * socket keepalived's check reads.
 */
export function slbGroupDeployFiles(): Record<string, string> {
  const t = slbGroupTopology();
  const json = (x: unknown) => `${JSON.stringify(x, null, 2)}\n`;
  const out: Record<string, string> = {};
  for (const [role, cfg] of Object.entries(t.balancers))
    out[`${role}.json`] = json({ ...cfg, api: { listen: '127.0.0.1:8480', tokenFile: '/etc/fwlb/token' } });
  for (const [name, cfg] of Object.entries(t.slbs))
    out[`${name}.json`] = json({ ...cfg, api: { listen: `unix:${CONTAINER_API}`, tokenFile: '/etc/fwlb/token' } });
  for (const v of t.vrrp) v.nodes.forEach((node, i) => (out[`keepalived-${node}.conf`] = renderKeepalived(keepalivedNode(v, node, i, CONTAINER_API))));
  return out;
}
