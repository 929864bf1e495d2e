// Benchmark: long-lived streams surviving a firewall that fails silently (drops everything, links up),
// with and without a sync group in fwlb, BENCH_ROUNDS (default 10) rounds each, interleaved (the nodes restart with
// the other config between runs). fw1 and fw2 run conntrackd FTFW (write-through) in every round; fw3 is alone.
// Reports, for fw2's streams: how many broke, and the outage the survivors lived through (their longest gap between
// two echoes, streams send every 20 ms) beside the detection time (failure -> fw2 out of both nodes' tables).
import { bucketOf, buildJoinedTable, canonicalKey, PROTO_TCP } from '@fwlb/flowhash';
import { drive, ECHO_PORT, spread, startBenchLab } from '@fwlb/lab';

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 10);
const ALL = ['fw1', 'fw2', 'fw3'];
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
type Mode = 'group' | 'none';

async function main(): Promise<void> {
  const lab = await startBenchLab('bs', { syncGroups: [['fw1', 'fw2']] });
  try {
    await lab.startSync();
    const cfg = lab.t.nodes.outside;
    const home = buildJoinedTable(ALL, cfg.hash.buckets!);
    const clients = lab.t.hosts.filter((h) => h.role === 'client');
    const target = `${lab.t.vip}:${ECHO_PORT}`;
    const allLive = () => lab.waitFirewalls((fw) => fw.every((f) => f.live), 20000, 'every firewall live');
    let current: Mode = 'group';
    const res: Record<Mode, { broken: number[]; streams: number[]; gapMs: number[]; detectMs: number[] }> = {
      group: { broken: [], streams: [], gapMs: [], detectMs: [] },
      none: { broken: [], streams: [], gapMs: [], detectMs: [] },
    };
    await allLive();
    for (let round = 0; round < ROUNDS; round++) {
      for (const mode of (round % 2 ? ['none', 'group'] : ['group', 'none']) as Mode[]) {
        if (mode !== current) {
          lab.writeNodeConfigs(mode === 'group');
          for (const role of ['outside', 'inside'] as const) {
            await lab.killNode(role);
            await lab.startNode(role);
          }
          await allLive();
          current = mode;
        }
        const longs = Promise.all(clients.map((c) => drive(lab, c.name, { long: { targets: [target], count: 45, durationMs: 9000, intervalMs: 20 } })));
        await sleep(1500);
        lab.failFirewall('fw2');
        const detect = await lab.waitFirewalls((fw) => fw.find((f) => f.id === 'fw2')!.live === false, 10000, 'fw2 down');
        await sleep(2000);
        lab.reviveFirewall('fw2');
        await allLive();
        const reports = await longs;
        const on2 = reports.flatMap((r, i) =>
          r.long.streams.filter(
            (s) =>
              home.owner[
                bucketOf(
                  canonicalKey('outside', { saddr: clients[i].addr!, sport: s.port, daddr: lab.t.vip, dport: ECHO_PORT, proto: PROTO_TCP }),
                  cfg.hash.seed,
                  cfg.hash.buckets!,
                )
              ] === 'fw2',
          ),
        );
        const survivors = on2.filter((s) => !s.err);
        const r = res[mode];
        r.broken.push(on2.length - survivors.length);
        r.streams.push(on2.length);
        r.gapMs.push(spread(survivors.map((s) => s.maxGapMs)).median);
        r.detectMs.push(detect);
        console.error(
          `round ${round + 1} ${mode}: ${on2.length - survivors.length} of fw2's ${on2.length} streams broke; survivors' outage median ${r.gapMs.at(-1)!.toFixed(0)} ms; detection ${detect} ms`,
        );
        await sleep(1000);
      }
    }
    const s = (m: Mode) => ({ broken: spread(res[m].broken), streams: spread(res[m].streams), gapMs: spread(res[m].gapMs), detectMs: spread(res[m].detectMs) });
    const report = { rounds: ROUNDS, group: s('group'), none: s('none'), raw: res };
    console.log(JSON.stringify(report, null, 2));
    const cell = (x: ReturnType<typeof spread>) => `${x.median.toFixed(0)} [${x.min.toFixed(0)}-${x.max.toFixed(0)}]`;
    console.log(`\nmedian [lowest-highest] of ${ROUNDS} rounds; fw2 fails silently for 2 s, 90 streams (every 20 ms)`);
    console.log("fwlb config        fw2 streams    broke          survivors' outage ms   detection ms");
    for (const m of ['group', 'none'] as Mode[]) {
      const x = report[m];
      console.log(
        `${(m === 'group' ? 'sync group fw1+fw2' : 'no sync group').padEnd(18)} ${cell(x.streams).padEnd(14)} ${cell(x.broken).padEnd(14)} ${cell(x.gapMs).padEnd(21)} ${cell(x.detectMs)}`,
      );
    }
  } finally {
    lab.teardown();
  }
}

void main();
