// fwlbctl's SLB commands: VIPs and their members, from the SLB's API (`fwlbctl slb ...`, or the inside node's).
import { readFileSync } from 'node:fs';
import { hostPort, splitHostPort } from '@fwlb/flowhash';
import { parse as parseYaml } from 'yaml';
import { Answer, CtlError, EXIT, request } from './client';
import { Command, ok, opt, table, usage } from './command';

/** A VIP document from a JSON or YAML file (`-`: standard input). */
function vipFile(path: string | undefined): unknown {
  if (!path) usage('vip create FILE | vip edit ID FILE');
  let text: string;
  try {
    text = readFileSync(path === '-' ? 0 : path, 'utf8');
  } catch (e) {
    throw new CtlError('FWLBCTL_FILE', `cannot read ${path}: ${(e as Error).message}`, EXIT.unknown);
  }
  try {
    return /^\s*[{[]/.test(text) ? JSON.parse(text) : parseYaml(text);
  } catch (e) {
    throw new CtlError('FWLBCTL_FILE', `${path} is neither JSON nor YAML: ${(e as Error).message}`, EXIT.unknown);
  }
}

export const vipsCmd: Command = async (t) => {
  const vs = ok(await request(t, 'GET', '/vips'), 'vips');
  return {
    json: vs,
    text: table(
      ['vip', 'address', 'port', 'proto', 'sched', 'members up', 'new sessions'],
      vs.map((v: any) => [
        v.id,
        v.address,
        v.port,
        v.protocol,
        v.scheduler,
        `${v.members.filter((m: any) => m.health.up).length}/${v.members.length}`,
        v.counters.newSessions,
      ]),
    ),
  };
};

export const vipCmd: Command = async (t, sub, rest) => {
  const id = rest[0];
  if (sub === 'create') {
    const v = ok(await request(t, 'POST', '/vips', vipFile(id)), 'vip create');
    return { json: v, text: `${v.id}: ${hostPort(v.address, v.port)}/${v.protocol}, ${v.members.length} members (created)` };
  }
  if (!id || !['show', 'edit', 'delete'].includes(sub ?? '')) usage('vip show|edit|delete ID ...');
  const path = `/vips/${encodeURIComponent(id)}`;
  if (sub === 'delete') {
    ok(await request(t, 'DELETE', path), `vip delete ${id}`);
    return { json: { deleted: id }, text: `${id} deleted` };
  }
  const v = ok(await request(t, sub === 'edit' ? 'PUT' : 'GET', path, sub === 'edit' ? vipFile(rest[1]) : undefined), `vip ${sub} ${id}`);
  const head = `${v.id}: ${hostPort(v.address, v.port)}/${v.protocol} ${v.mode ?? 'l4'} ${v.scheduler}, ${v.counters?.newSessions ?? 0} new sessions${sub === 'edit' ? ' (replaced)' : ''}`;
  return {
    json: v,
    text: `${head}\n${table(
      ['member', 'weight', 'state', 'up', 'slots'],
      v.members.map((m: any) => [hostPort(m.address, m.port), m.weight, m.state, m.health?.up ?? null, m.slots ?? null]),
    )}`,
  };
};

export const membersCmd: Command = async (t, sub) => {
  if (!sub) usage('members VIP');
  const ms = ok(await request(t, 'GET', `/vips/${encodeURIComponent(sub)}/members`), `members ${sub}`);
  return {
    json: ms,
    text: table(
      ['member', 'weight', 'state', 'up', 'slots', 'new sessions', 'reason'],
      ms.map((m: any) => [hostPort(m.address, m.port), m.weight, m.state, m.health.up, m.slots, m.counters.newSessions, m.health.reason]),
    ),
  };
};

export const memberCmd: Command = async (t, sub, rest) => {
  const [vip, member] = rest;
  if (!vip || !member || !/^([\d.]+|\[[0-9A-Fa-f:.]+\]):\d+$/.test(member)) usage('member add|remove|drain|enable|weight VIP ADDR:PORT ([IPv6]:PORT)');
  const path = `/vips/${encodeURIComponent(vip)}/members`;
  const [address, port] = splitHostPort(member);
  const key = encodeURIComponent(member);
  let a: Answer;
  if (sub === 'add') {
    const w = opt(rest, '--weight');
    const pool = opt(rest, '--pool');
    a = await request(t, 'POST', path, { address, port, ...(w ? { weight: Number(w) } : {}), ...(pool ? { pool } : {}) });
  } else if (sub === 'remove') a = await request(t, 'DELETE', `${path}/${key}`);
  else if (sub === 'drain' || sub === 'enable') a = await request(t, 'PATCH', `${path}/${key}`, { state: sub === 'drain' ? 'drain' : 'enabled' });
  else if (sub === 'weight' && rest[2]) a = await request(t, 'PATCH', `${path}/${key}`, { weight: Number(rest[2]) });
  else usage('member add|remove|drain|enable|weight VIP ADDR:PORT');
  const m = ok(a, `member ${sub} ${vip} ${member}`);
  return {
    json: m ?? { removed: member },
    text: m ? `${hostPort(m.address, m.port)}: weight ${m.weight}, ${m.state}, ${m.slots} slots` : `${member} removed from ${vip}`,
  };
};
