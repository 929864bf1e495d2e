// fwlbctl's commands: arguments to one or two API requests, and answers to tables; pure apart from `request`.
import { hostPort } from '@fwlb/flowhash';
import { CtlError, EXIT, request, Target } from './client';
import { Command, ok, opt, Output, table, usage } from './command';
import { bashCompletion, USAGE } from './help';
import { memberCmd, membersCmd, vipCmd, vipsCmd } from './slb-commands';
export { Output, table } from './command';
export { bashCompletion, USAGE } from './help';

const helpCmd: Command = async (_t, sub) => {
  if (!sub) return { json: { usage: USAGE }, text: USAGE };
  const lines = USAGE.split('\n').filter((l) => l.trimStart().startsWith(`${sub} `) || l.trimStart() === sub);
  if (!lines.length) usage(`no command "${sub}"`);
  return { json: { usage: lines.join('\n') }, text: lines.join('\n') };
};

const completionCmd: Command = async (_t, sub) => {
  if (sub !== 'bash') usage('completion bash');
  return { json: { script: bashCompletion() }, text: bashCompletion() };
};

const statusCmd: Command = async (t) => {
  const [s, h] = await Promise.all([request(t, 'GET', '/status'), request(t, 'GET', '/health')]);
  const st = ok(s, 'status');
  const he = ok(h, 'health');
  const fw = st.firewalls ?? [];
  return {
    json: { ...st, health: he },
    text: `${st.name ?? st.role} (${st.role ?? 'slb'}): ${he.status}${he.alarms?.length ? `\nALARMS:\n  ${he.alarms.join('\n  ')}` : ''}\nepoch ${st.agreement?.epoch ?? '-'}, pins ${st.pins ?? '-'}\n${
      fw.length
        ? table(
            ['firewall', 'enabled', 'healthy', 'live', 'buckets'],
            fw.map((f: any) => [f.id, f.enabled, f.healthy, f.live, f.buckets]),
          )
        : ''
    }`,
  };
};

const healthCmd: Command = async (t, _sub, _rest, args) => {
  // keepalived runs this every check interval: a short timeout, so a stuck controller fails the check too.
  const ms = Number(opt(args, '--timeout') ?? 1000);
  if (!Number.isInteger(ms) || ms < 1 || ms > 60000) usage('health [--timeout MS] (1..60000)');
  const h = ok(await request(t, 'GET', '/health', undefined, ms), 'health');
  if (h.status !== 'ok')
    throw new CtlError('FWLBCTL_DEGRADED', `${h.status}: ${(h.alarms ?? []).join('; ') || h.lastError || 'no reason given'}`, EXIT.warning);
  return { json: h, text: `${h.role ?? 'slb'}: ok` };
};

const firewallsCmd: Command = async (t) => {
  const fw = ok(await request(t, 'GET', '/firewalls'), 'firewalls');
  return {
    json: fw,
    text: table(
      ['firewall', 'enabled', 'healthy', 'link', 'live', 'want', 'buckets', 'group', 'moved to', 'reason'],
      fw.map((f: any) => [
        f.id,
        f.enabled,
        f.healthy,
        f.link,
        f.live,
        f.wantLive,
        f.buckets,
        f.syncGroup ?? '',
        Object.entries(f.bucketsMovedTo ?? {})
          .sort()
          .map(([k, v]) => `${k}:${v}`)
          .join(' '),
        f.health?.reason ?? '',
      ]),
    ),
  };
};

const firewallCmd: Command = async (t, sub, rest) => {
  const local = rest.includes('--local');
  const id = rest.find((a) => a !== '--local');
  if ((sub !== 'disable' && sub !== 'enable') || !id) usage('firewall disable|enable ID [--local]');
  const f = ok(
    await request(t, 'PUT', `/firewalls/${encodeURIComponent(id)}/admin${local ? '?local=true' : ''}`, { enabled: sub === 'enable' }),
    `firewall ${sub} ${id}`,
  );
  return { json: f, text: `${f.id}: enabled ${f.enabled}, live ${f.live}, ${f.buckets} buckets` };
};

const nodeCmd: Command = async (t, sub, rest) => {
  return nodeCommand(t, sub, rest);
};

const reloadCmd: Command = async (t) => {
  const r = ok(await request(t, 'POST', '/reload'), 'reload');
  const list = (ids: string[]) => (ids.length ? ids.join(', ') : 'none');
  return {
    json: r,
    text: r.changed
      ? `reloaded: firewalls added ${list(r.added)}, removed ${list(r.removed)}; ${r.nftCommands} nft commands, ${r.routingChanges} routing changes`
      : 'the config file is unchanged',
  };
};

const sessionsCmd: Command = async (t, sub, rest) => {
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
  return {
    json: ss,
    text: table(
      ['outer', 'inner', 'proto', 'firewall', 'node', 'expires'],
      ss.map((s: any) => [
        hostPort(s.outerAddr, s.outerPort),
        hostPort(s.innerAddr, s.innerPort),
        s.proto === 6 ? 'tcp' : s.proto === 17 ? 'udp' : s.proto,
        s.firewall,
        s.node,
        new Date(s.expires).toISOString(),
      ]),
    ),
  };
};

const metricsCmd: Command = async (t) => {
  const text = ok(await request(t, 'GET', '/metrics'), 'metrics') as string;
  const lines = String(text)
    .split('\n')
    .filter((l) => l.startsWith('fwlb_'));
  return { json: lines, text: lines.join('\n') };
};

/** Every command by name: `fwlbctl NAME SUB REST...`. */
const HANDLERS: Record<string, Command> = {
  help: helpCmd,
  '--help': helpCmd,
  '-h': helpCmd,
  completion: completionCmd,
  status: statusCmd,
  health: healthCmd,
  firewalls: firewallsCmd,
  firewall: firewallCmd,
  node: nodeCmd,
  reload: reloadCmd,
  sessions: sessionsCmd,
  vips: vipsCmd,
  vip: vipCmd,
  members: membersCmd,
  member: memberCmd,
  metrics: metricsCmd,
};

export async function run(t: Target, args: string[]): Promise<Output> {
  const [cmd, sub, ...rest] = args;
  const command = cmd && Object.hasOwn(HANDLERS, cmd) ? HANDLERS[cmd] : undefined;
  if (!command) return usage(cmd ? `unknown command "${cmd}"` : 'no command');
  return command(t, sub, rest, args);
}

const QUIET_MS = 2000;

function nodeText(n: any): string {
  const peers = table(
    ['peer', 'address', 'state', 'established', 'bfd', 'info'],
    n.peers.map((p: any) => [p.name, p.address, p.state, p.established, p.bfd, p.info]),
  );
  const why = n.unfit ? ` (unfit: ${n.unfit})` : '';
  return `announcements ${n.state}${n.drained ? ', drained' : ''}${why}; BIRD ${n.daemon.running ? 'running' : 'not answering'}, configuration ${n.daemon.config}\n${peers}`;
}

/** `node`, `node drain [--wait S]`, `node undrain`. */
async function nodeCommand(t: Target, sub: string | undefined, rest: string[]): Promise<Output> {
  if (!sub) {
    const n = ok(await request(t, 'GET', '/node'), 'node');
    return { json: n, text: nodeText(n) };
  }
  if (sub !== 'drain' && sub !== 'undrain') usage('node [drain [--wait S] | undrain]');
  const waitText = opt(rest, '--wait');
  const waitS = waitText === undefined ? 0 : Number(waitText);
  if (!(waitS >= 0 && waitS <= 3600)) usage('node drain --wait S: S is 0 to 3600 seconds');
  const n = ok(await request(t, 'PUT', '/node/drain', { drained: sub === 'drain' }), `node ${sub}`);
  if (sub === 'undrain' || !waitS) return { json: n, text: nodeText(n) };
  // The routers have left the node when its count of new connections stops moving for QUIET_MS.
  const start = Date.now();
  let last = { count: n.newConnections as number, at: Date.now() };
  while (Date.now() - start < waitS * 1000) {
    await new Promise((r) => setTimeout(r, 500));
    const now = ok(await request(t, 'GET', '/node'), 'node');
    if (now.newConnections !== last.count) last = { count: now.newConnections, at: Date.now() };
    else if (Date.now() - last.at >= QUIET_MS) {
      const took = last.at - start;
      return {
        json: { ...now, quietAfterMs: took },
        text: `drained: no new connection since ${took} ms after the drain (${QUIET_MS} ms quiet)\n${nodeText(now)}`,
      };
    }
  }
  throw new CtlError(
    'FWLBCTL_DRAIN_TIMEOUT',
    `node drain: still taking new connections after ${waitS} s (the routers may not prefer the other nodes)`,
    EXIT.warning,
  );
}
