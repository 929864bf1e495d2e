// fwlbctl's usage text and its bash completion; pure layer of apps/fwlbctl.

export const USAGE = `usage: fwlbctl [--api URL|unix:PATH] [--ca PEM] [--token-file F] [--json] COMMAND
       fwlbctl slb COMMAND                the SLB's API: --api, else $FWLB_SLB_API, else http://127.0.0.1:8481
  help, --help, -h [COMMAND]              this text, or a command's lines of it
  --version                               fwlbctl's version
  completion bash                         a bash completion script (source it, or put it in /etc/bash_completion.d)
  status                                  the node: role, alarms, firewalls, epoch
  health [--timeout MS]                   exit 0 ok, 1 degraded (alarms printed), 2 no answer: for keepalived's track_script and Nagios
  firewalls                               list the firewalls
  firewall disable|enable ID [--local]    take a firewall out of new sessions, or back (--local: on this
                                          node alone, when the change cannot be shared through Redis)
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
