// Benchmark: what a bucket table change costs the reconciler when it pins many sessions. A node's reconciler runs
// against the kernel of a namespace of its own with a session cache of N sessions; one firewall of three is disabled,
// so its buckets' sessions (a third) become pins; then it is enabled again and they go. Each pass reports where its
// time went, with the pins written over nfnetlink and, as the baseline of the same run, through nft transactions.
// Why: the pins are written by difference, and a change should cost what it moves.
import { spawnSync } from 'node:child_process';
import { validateBalancerConfig } from '@fwlb/config';
import { bucketOf, buildJoinedTable } from '@fwlb/flowhash';
import { NetlinkElements, nftCli } from '@fwlb/nft';
import { Reconciler, SessionCache } from '@fwlb/balancer';
import { deleteNs, run, uniquePrefix } from '@fwlb/lab';

const N = Number(process.env.BENCH_SESSIONS ?? 1_000_000);

async function inside(writer: string): Promise<void> {
  const config = validateBalancerConfig({
    role: 'outside',
    sideInterface: 'cli0',
    firewalls: [1, 2, 3].map((k) => ({ id: `fw${k}`, nextHop: `172.16.${k}.2`, interface: `fw${k}` })),
    hash: { seed: 7, buckets: 251 },
    sessionTable: { url: 'redis://127.0.0.1:1' },
  });
  const ids = config.firewalls.map((f) => f.id);
  const home = buildJoinedTable(ids, 251).owner;
  const cache = new SessionCache(7, 251);
  const now = Date.now();
  let onFw2 = 0;
  for (let j = 0; j < N; j++) {
    const k = {
      outerAddr: `10.${64 + (j >> 16)}.${(j >> 8) & 255}.${j & 255}`,
      outerPort: 1024 + (j % 50000),
      innerAddr: '203.0.113.1',
      innerPort: 80,
      proto: 6,
    };
    const fw = home[bucketOf(k, 7, 251)]!;
    if (fw === 'fw2') onFw2++;
    cache.put({ ...k, firewall: fw, node: 'sib', firstSeen: now, expires: now + 600000 });
  }
  const nft = nftCli();
  const runner = writer === 'nft' ? nft : { ...nft, elements: new NetlinkElements() };
  const r = new Reconciler(config, runner, { rules: async () => [], routes: async () => [], apply: async () => [] });
  r.usePins(cache);
  const times: number[] = [];
  const pass = async (what: string) => {
    const t0 = performance.now();
    const res = await r.reconcile();
    times.push(performance.now() - t0);
    console.log(`${what.padEnd(44)} ${times.at(-1)!.toFixed(0).padStart(6)} ms  pins ${String(r.pinCount()).padStart(7)}  ${JSON.stringify(res.ms)}`);
  };
  console.log(`\npins written ${writer === 'nft' ? 'through nft transactions' : 'over nfnetlink'}; ${N} sessions cached, ${onFw2} on fw2's buckets`);
  await pass('first pass (no pin)');
  await pass('again, nothing changed');
  r.membership.setAdmin('fw2', false);
  await pass('fw2 disabled: its sessions pinned');
  await pass('again, nothing changed');
  r.membership.setAdmin('fw2', true);
  await pass('fw2 enabled: the pins go');
  console.log(JSON.stringify({ change: times[2], unchanged: times[3], back: times[4] }));
}

function main(): void {
  if (process.argv[2] === '--inside') {
    inside(process.argv[3]).then(
      // A pipe's writes are asynchronous: exit once the last line is out.
      () => process.stdout.write('', () => process.exit(0)),
      (e) => {
        console.error(e);
        process.exit(1);
      },
    );
    return;
  }
  const result: Record<string, { change: number; unchanged: number; back: number }> = {};
  for (const writer of ['nft', 'netlink']) {
    const ns = uniquePrefix('bpc');
    run(['ip', 'netns', 'add', ns]);
    try {
      const r = spawnSync('ip', ['netns', 'exec', ns, process.execPath, '--max-old-space-size=4096', __filename, '--inside', writer], {
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'inherit'],
      });
      const lines = r.stdout.trim().split('\n');
      console.log(lines.slice(0, -1).join('\n'));
      if (r.status !== 0) process.exitCode = 1;
      else result[writer] = JSON.parse(lines.at(-1)!);
    } finally {
      deleteNs(ns);
    }
  }
  const [a, b] = [result.nft, result.netlink];
  if (a && b)
    console.log(
      `\nnfnetlink against nft, same run: the change ${(a.change / b.change).toFixed(1)}x faster, its undoing ${(a.back / b.back).toFixed(1)}x, a pass with nothing to write ${(a.unchanged / b.unchanged).toFixed(1)}x`,
    );
}

main();
