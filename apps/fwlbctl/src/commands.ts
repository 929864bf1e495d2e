// fwlbctl's commands: arguments to one or two API requests, and answers to tables; pure apart from `request`.
import { readFileSync } from 'node:fs';
import { hostPort, splitHostPort } from '@fwlb/flowhash';
import { parse as parseYaml } from 'yaml';
import { Answer, CtlError, EXIT, request, Target } from './client';

export interface Output {
  /** What --json prints. */
  json: unknown;
  /** What a human reads. */
  text: string;
}

export const USAGE = `usage: fwlbctl [--api URL|unix:PATH] [--ca PEM] [--token-file F] [--json] COMMAND
       fwlbctl slb COMMAND                the SLB's API: --api, else $FWLB_SLB_API, else http://127.0.0.1:8481
  help, --help, -h [COMMAND]              this text, or a command's lines of it
  --version                               fwlbctl's version
  completion bash                         a bash completion script (source it, or put it in /etc/bash_completion.d)
  status                                  the node: role, alarms, firewalls, epoch
  health [--timeout MS]                   exit 0 ok, 1 degraded (alarms printed), 2 no answer: for keepalived's track_script and Nagios
  firewalls                               list the firewalls
  firewall disable|enable ID              take a firewall out of new sessions, or back
  sessions [--addr A] [--port P] [--firewall ID] [--limit N]
  sessions count
  node                                    the node's BGP announcements and sessions
  node drain [--wait S]                   make the node less preferred (maintenance); --wait: until it takes no new connection
  node undrain                            announce the node as before
  reload                                  re-read the node's config file (refused as a whole, naming the field, or taken without a restart)
  vips                                    list the VIPs (SLB)
  vip show ID                             one VIP, its members and counters
  vip create FILE                         a VIP from a JSON or YAML file (- for stdin)
  vip edit ID FILE                        replace a VIP with the file's
  vip delete ID                           delete a VIP
  members VIP                             list a VIP's members
  member add VIP ADDR:PORT [--weight W] [--pool P]   (--pool: the pool of an L7 VIP)
  member remove|drain|enable VIP ADDR:PORT
  member weight VIP ADDR:PORT W
  metrics                                 the fwlb_ lines of /metrics
exit (Nagios): 0 OK; 1 WARNING, refused by the node (its error code is printed) or degraded; 2 CRITICAL, the node does not answer; 3 UNKNOWN, usage`;

const COMMANDS = [
  'help',
  'completion',
  'status',
  'health',
  'firewalls',
  'firewall',
  'sessions',
  'node',
  'reload',
  'vips',
  'vip',
  'members',
  'member',
  'metrics',
  'slb',
];
const SUBCOMMANDS: Record<string, string[]> = {
  firewall: ['disable', 'enable'],
  sessions: ['count'],
  node: ['drain', 'undrain'],
  vip: ['show', 'create', 'edit', 'delete'],
  member: ['add', 'remove', 'drain', 'enable', 'weight'],
  completion: ['bash'],
};

/** The bash completion script: commands, their subcommands, and file names where a command takes a file. */
export function bashCompletion(): string {
  const subs = Object.entries(SUBCOMMANDS)
    .map(([c, s]) => `    ${c}) words="${s.join(' ')}" ;;`)
    .join('\n');
  return `# bash completion for fwlbctl
_fwlbctl() {
  local cur=\${COMP_WORDS[COMP_CWORD]} i=1 cmd words
  while [ $i -lt $COMP_CWORD ]; do
    case \${COMP_WORDS[i]} in
      --api|--token-file|--ca|--timeout) i=$((i + 2)); continue ;;
      --json) i=$((i + 1)); continue ;;
      slb) i=$((i + 1)); continue ;;
    esac
    cmd=\${COMP_WORDS[i]}; break
  done
  if [ -z "$cmd" ]; then
    COMPREPLY=($(compgen -W "${COMMANDS.join(' ')} --api --token-file --ca --json --version" -- "$cur")); return
  fi
  case "$cmd" in
${subs}
    *) words="" ;;
  esac
  if [ "$cmd" = vip ] && [ $COMP_CWORD -gt $((i + 1)) ]; then COMPREPLY=($(compgen -f -- "$cur")); return; fi
  COMPREPLY=($(compgen -W "$words" -- "$cur"))
}
complete -F _fwlbctl fwlbctl
`;
}

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

/** Columns padded to their widest cell. */
export function table(head: string[], rows: (string | number | boolean | null)[][]): string {
  const cells = [head, ...rows.map((r) => r.map((c) => (c === null || c === undefined ? '-' : String(c))))];
  const w = head.map((_, i) => Math.max(...cells.map((r) => r[i].length)));
  return cells
    .map((r) =>
      r
        .map((c, i) => c.padEnd(w[i]))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

function ok(a: Answer, what: string): any {
  if (a.status >= 200 && a.status < 300) return a.body;
  const code = a.body?.code ?? `HTTP_${a.status}`;
  throw new CtlError(code, `${what}: ${code}: ${a.body?.message ?? a.body}`, EXIT.warning);
}

function usage(msg: string): never {
  throw new CtlError('FWLBCTL_USAGE', `${msg}\n${USAGE}`, EXIT.unknown);
}

const opt = (args: string[], name: string) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
};

/** A command: its target agent, its subcommand, the words after it, and every word (for options). */
type Command = (t: Target, sub: string | undefined, rest: string[], args: string[]) => Promise<Output>;

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
  if ((sub !== 'disable' && sub !== 'enable') || !rest[0]) usage('firewall disable|enable ID');
  const f = ok(await request(t, 'PUT', `/firewalls/${encodeURIComponent(rest[0])}/admin`, { enabled: sub === 'enable' }), `firewall ${sub} ${rest[0]}`);
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

const vipsCmd: Command = async (t) => {
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

const vipCmd: Command = async (t, sub, rest) => {
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

const membersCmd: Command = async (t, sub) => {
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

const memberCmd: Command = async (t, sub, rest) => {
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
