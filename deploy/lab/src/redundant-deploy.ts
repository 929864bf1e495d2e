// The node and keepalived configs that docker-compose.redundant.yml mounts (deploy/configs/redundant/), derived from
// the lab's VRRP topology so that the two cannot drift apart (test/unit/compose.test.ts compares them); pure layer.
import { keepalivedNode, renderKeepalived } from './keepalived';
import { MGMT_NET, topology } from './topology';

/** Where Redis runs in the compose topology: a management network every node reaches on `mgmt0`. */
export const REDUNDANT_REDIS = `${MGMT_NET}.250`;
/** Each node container's API: a unix socket, which keepalived's check reads. */
export const CONTAINER_API = '/run/fwlb/api.sock';

export function composeTopology() {
  return topology({ prefix: 'x', runDir: '/run/fwlb', nodesPerSide: 2, mode: 'vrrp', sessionTable: `redis://${REDUNDANT_REDIS}:6379`, ipv6: true });
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
