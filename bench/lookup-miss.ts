// Benchmark: does a change of an nft table make a packet's map lookup miss? A ping flood on loopback in a namespace
// of its own (CPU 0) runs through a lookup while `nft` changes the table in a loop (CPU 1); a packet whose lookup
// missed is counted by the rule after it. Each case is one way to change a table: the ways fwlb avoids, and the ways
// it uses. Figures only: a miss is rare, so each case runs for BENCH_MISS_SECONDS (20) and reports misses per change.
import { spawn, spawnSync } from 'node:child_process';
import { uniquePrefix } from '@fwlb/lab';

const SECONDS = Number(process.env.BENCH_MISS_SECONDS ?? 20);
const KEYS = 251;
const marks = (value: number) => Array.from({ length: KEYS }, (_, i) => `${i} : ${value}`).join(', ');

/** The lookup under test, then the rule that counts a packet whose lookup missed (its mark is not a firewall's). */
const OBJREF_RULE = (map: string) => `counter name meta l4proto map ${map} counter name seen accept`;
const MARK_RULE = (map: string) => `meta mark set numgen inc mod ${KEYS} meta mark set meta mark map @${map} counter name seen`;

interface Case {
  name: string;
  /** What fwlb does now, or what it no longer does. */
  fwlb: boolean;
  setup: string;
  /** The transactions of one round; each is one `nft -f`. */
  round: string[];
}

const table = (body: string) => `table inet lm {\n counter miss {}\n counter seen {}\n counter a {}\n${body}\n}\n`;
const objrefChain = (map: string) => `flush chain inet lm steer\nadd rule inet lm steer ${OBJREF_RULE(map)}\nadd rule inet lm steer counter name miss\n`;
const markChain = (map: string) =>
  `flush chain inet lm steer\nadd rule inet lm steer ${MARK_RULE(map)}\nadd rule inet lm steer meta mark < 65536 counter name miss\n`;
const hooks = ' chain out { type route hook output priority -150; policy accept; jump steer; }\n';

const CASES: Case[] = [
  {
    name: 'chain rewritten, its rule with a map of its own',
    fwlb: false,
    setup: table(` chain steer {}\n${hooks}`),
    round: [objrefChain('{ icmp : "a", ipv6-icmp : "a" }')],
  },
  {
    name: 'chain rewritten, its rule with a named map',
    fwlb: true,
    setup: table(` map c { type inet_proto : counter; elements = { icmp : "a", ipv6-icmp : "a" } }\n chain steer {}\n${hooks}`),
    round: [objrefChain('@c')],
  },
  {
    name: 'map deleted in the change that stops using it',
    fwlb: false,
    setup: table(` map m { type mark : mark; elements = { ${marks(65536)} } }\n chain steer {}\n${hooks}`),
    round: [`add map inet lm next { type mark : mark; elements = { ${marks(65537)} } }\n${markChain('next')}`, `${markChain('m')}delete map inet lm next\n`],
  },
  {
    name: 'map deleted by a later change',
    fwlb: true,
    setup: table(` map m { type mark : mark; elements = { ${marks(65536)} } }\n chain steer {}\n${hooks}`),
    round: [`add map inet lm next { type mark : mark; elements = { ${marks(65537)} } }\n${markChain('next')}`, markChain('m'), 'delete map inet lm next\n'],
  },
  {
    name: 'every element of a named map deleted and added with a new value, one transaction',
    fwlb: true,
    setup: table(
      ` map m { type mark : mark; elements = { ${marks(65536)} } }\n chain steer { ${MARK_RULE('m')}; meta mark < 65536 counter name miss; }\n${hooks}`,
    ),
    round: [65537, 65536].map(
      (v) => `delete element inet lm m { ${Array.from({ length: KEYS }, (_, i) => i).join(', ')} }\nadd element inet lm m { ${marks(v)} }\n`,
    ),
  },
];

function inNs(ns: string, args: string[], input?: string): string {
  const r = spawnSync('ip', ['netns', 'exec', ns, ...args], { input, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

const counter = (ns: string, name: string) => {
  const j = JSON.parse(inNs(ns, ['nft', '-j', 'list', 'counter', 'inet', 'lm', name]));
  return Number(j.nftables.find((x: any) => x.counter)?.counter.packets ?? 0);
};

async function runCase(c: Case): Promise<{ changes: number; misses: number; lookups: number }> {
  const ns = uniquePrefix('lm');
  spawnSync('ip', ['netns', 'add', ns]);
  try {
    inNs(ns, ['ip', 'link', 'set', 'lo', 'up']);
    inNs(ns, ['nft', '-f', '-'], c.setup);
    const ping = spawn('ip', ['netns', 'exec', ns, 'taskset', '-c', '0', 'ping', '-f', '-q', '127.0.0.1'], { stdio: 'ignore' });
    const end = Date.now() + SECONDS * 1000;
    let changes = 0;
    while (Date.now() < end) {
      for (const tx of c.round) {
        const r = spawnSync('taskset', ['-c', '1', 'ip', 'netns', 'exec', ns, 'nft', '-f', '-'], { input: tx, encoding: 'utf8' });
        if (r.status !== 0) throw new Error(`${c.name}: ${r.stderr}`);
      }
      changes++;
    }
    ping.kill();
    await new Promise((ok) => ping.once('exit', ok));
    return { changes, misses: counter(ns, 'miss'), lookups: counter(ns, 'seen') };
  } finally {
    spawnSync('ip', ['netns', 'del', ns]);
  }
}

async function main(): Promise<void> {
  console.log(`lookup misses while nft changes the table (ping flood on CPU 0, nft on CPU 1, ${SECONDS} s a case)`);
  for (const c of CASES) {
    const r = await runCase(c);
    const per100 = (100 * r.misses) / Math.max(1, r.changes);
    console.log(
      `${c.fwlb ? 'fwlb   ' : 'avoided'} ${c.name}: ${r.misses} misses in ${r.changes} changes (${per100.toFixed(1)} per 100), ${r.lookups} lookups that hit`,
    );
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
