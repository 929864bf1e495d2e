// fwlbctl's commands: arguments to one or two API requests, and answers to tables; pure apart from `request`.
import { hostPort, splitHostPort } from '@fwlb/flowhash';
import { Answer, CtlError, request, Target } from './client';

export interface Output {
  /** What --json prints. */
  json: unknown;
  /** What a human reads. */
  text: string;
}

export const USAGE = `usage: fwlbctl [--api URL|unix:PATH] [--token-file F] [--json] COMMAND
  help, --help, -h                        this text
  --version                               fwlbctl's version
  status                                  the node: role, alarms, firewalls, epoch
  health [--timeout MS]                   exit 0 ok, 3 degraded (alarms printed), 4 no answer: for keepalived's track_script
  firewalls                               list the firewalls
  firewall disable|enable ID              take a firewall out of new sessions, or back
  sessions [--addr A] [--port P] [--firewall ID] [--limit N]
  sessions count
  vips                                    list the VIPs (SLB)
  members VIP                             list a VIP's members
  member add VIP ADDR:PORT [--weight W] [--pool P]   (--pool: the pool of an L7 VIP)
  member remove|drain|enable VIP ADDR:PORT
  member weight VIP ADDR:PORT W
  metrics                                 the fwlb_ lines of /metrics
exit: 0 done, 1 refused by the node (its error code is printed), 2 usage, 3 degraded (health), 4 node unreachable`;

/** Columns padded to their widest cell. */
export function table(head: string[], rows: (string | number | boolean | null)[][]): string {
  const cells = [head, ...rows.map((r) => r.map((c) => (c === null || c === undefined ? '-' : String(c))))];
  const w = head.map((_, i) => Math.max(...cells.map((r) => r[i].length)));
  return cells.map((r) => r.map((c, i) => c.padEnd(w[i])).join('  ').trimEnd()).join('\n');
}

function ok(a: Answer, what: string): any {
  if (a.status >= 200 && a.status < 300) return a.body;
  const code = a.body?.code ?? `HTTP_${a.status}`;
  throw new CtlError(code, `${what}: ${code}: ${a.body?.message ?? a.body}`, 1);
}

function usage(msg: string): never {
  throw new CtlError('FWLBCTL_USAGE', `${msg}\n${USAGE}`, 2);
}

const opt = (args: string[], name: string) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
};

export async function run(t: Target, args: string[]): Promise<Output> {
  const [cmd, sub, ...rest] = args;
  switch (cmd) {
    case 'help':
    case '--help':
    case '-h':
      return { json: { usage: USAGE }, text: USAGE };
    case 'status': {
      const [s, h] = await Promise.all([request(t, 'GET', '/status'), request(t, 'GET', '/health')]);
      const st = ok(s, 'status');
      const he = ok(h, 'health');
      const fw = st.firewalls ?? [];
      return {
        json: { ...st, health: he },
        text: `${st.name ?? st.role} (${st.role ?? 'slb'}): ${he.status}${he.alarms?.length ? `\nALARMS:\n  ${he.alarms.join('\n  ')}` : ''}\nepoch ${st.agreement?.epoch ?? '-'}, pins ${st.pins ?? '-'}\n${fw.length ? table(['firewall', 'enabled', 'healthy', 'live', 'buckets'], fw.map((f: any) => [f.id, f.enabled, f.healthy, f.live, f.buckets])) : ''}`,
      };
    }
    case 'health': {
      // keepalived runs this every check interval: a short timeout, so a stuck controller fails the check too.
      const ms = Number(opt(args, '--timeout') ?? 1000);
      if (!Number.isInteger(ms) || ms < 1 || ms > 60000) usage('health [--timeout MS] (1..60000)');
      const h = ok(await request(t, 'GET', '/health', undefined, ms), 'health');
      if (h.status !== 'ok') throw new CtlError('FWLBCTL_DEGRADED', `${h.status}: ${(h.alarms ?? []).join('; ') || h.lastError || 'no reason given'}`, 3);
      return { json: h, text: `${h.role ?? 'slb'}: ok` };
    }
    case 'firewalls': {
      const fw = ok(await request(t, 'GET', '/firewalls'), 'firewalls');
      return { json: fw, text: table(['firewall', 'enabled', 'healthy', 'link', 'live', 'want', 'buckets', 'group', 'moved to', 'reason'], fw.map((f: any) => [f.id, f.enabled, f.healthy, f.link, f.live, f.wantLive, f.buckets, f.syncGroup ?? '', Object.entries(f.bucketsMovedTo ?? {}).sort().map(([k, v]) => `${k}:${v}`).join(' '), f.health?.reason ?? ''])) };
    }
    case 'firewall': {
      if ((sub !== 'disable' && sub !== 'enable') || !rest[0]) usage('firewall disable|enable ID');
      const f = ok(await request(t, 'PUT', `/firewalls/${encodeURIComponent(rest[0])}/admin`, { enabled: sub === 'enable' }), `firewall ${sub} ${rest[0]}`);
      return { json: f, text: `${f.id}: enabled ${f.enabled}, live ${f.live}, ${f.buckets} buckets` };
    }
    case 'sessions': {
      if (sub === 'count') {
        const c = ok(await request(t, 'GET', '/sessions/count'), 'sessions count');
        return { json: c, text: `redis ${c.redis ?? `unreachable (${c.redisError})`}, grace ${c.grace ?? '-'}, kernel ${c.kernel}` };
      }
      const all = sub ? [sub, ...rest] : rest;
      const q = new URLSearchParams();
      for (const k of ['addr', 'port', 'firewall', 'limit']) {
        const v = opt(all, `--${k}`);
        if (v !== undefined) q.set(k, v);
      }
      const ss = ok(await request(t, 'GET', `/sessions?${q}`), 'sessions');
      return { json: ss, text: table(['outer', 'inner', 'proto', 'firewall', 'node', 'expires'], ss.map((s: any) => [hostPort(s.outerAddr, s.outerPort), hostPort(s.innerAddr, s.innerPort), s.proto === 6 ? 'tcp' : s.proto === 17 ? 'udp' : s.proto, s.firewall, s.node, new Date(s.expires).toISOString()])) };
    }
    case 'vips': {
      const vs = ok(await request(t, 'GET', '/vips'), 'vips');
      return { json: vs, text: table(['vip', 'address', 'port', 'proto', 'sched', 'members up', 'new sessions'], vs.map((v: any) => [v.id, v.address, v.port, v.protocol, v.scheduler, `${v.members.filter((m: any) => m.health.up).length}/${v.members.length}`, v.counters.newSessions])) };
    }
    case 'members': {
      if (!sub) usage('members VIP');
      const ms = ok(await request(t, 'GET', `/vips/${encodeURIComponent(sub)}/members`), `members ${sub}`);
      return { json: ms, text: table(['member', 'weight', 'state', 'up', 'slots', 'new sessions', 'reason'], ms.map((m: any) => [hostPort(m.address, m.port), m.weight, m.state, m.health.up, m.slots, m.counters.newSessions, m.health.reason])) };
    }
    case 'member': {
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
      return { json: m ?? { removed: member }, text: m ? `${hostPort(m.address, m.port)}: weight ${m.weight}, ${m.state}, ${m.slots} slots` : `${member} removed from ${vip}` };
    }
    case 'metrics': {
      const text = ok(await request(t, 'GET', '/metrics'), 'metrics') as string;
      const lines = String(text).split('\n').filter((l) => l.startsWith('fwlb_'));
      return { json: lines, text: lines.join('\n') };
    }
    default:
      return usage(cmd ? `unknown command "${cmd}"` : 'no command');
  }
}
