// Benchmark (not CI): clients that reuse their source ports within seconds, through two nodes per side behind ECMP,
// while fw2 leaves and rejoins new sessions by the API every 2.5 s, then the same with the routes also moving flows
// between the nodes every 3 s. Prints failed connections and firewall drops for each; the exact figures vary from
// run to run, so BENCH_ROUNDS runs each (default 1).
import { churn, ChurnOptions, withRedisLab } from '@fwlb/lab';

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 1);
const base: ChurnOptions = { ports: 100, count: 2000, intervalMs: 15, firewall: 'fw2', toggleMs: 2500 };
const cases: [string, ChurnOptions][] = [
  ['fw2 toggled', base],
  ['fw2 toggled, routes moved', { ...base, moves: [['ob1', 'ib1'], [], ['ob2', 'ib2'], ['ob1', 'ib2'], [], ['ob2', 'ib1']], moveMs: 3000 }],
];

async function main(): Promise<void> {
  await withRedisLab('bp', { nodesPerSide: 2 }, async (lab) => {
    for (let round = 1; round <= ROUNDS; round++) {
      for (const [name, o] of cases) {
        const r = await churn(lab, o);
        console.log(
          `round ${round}, ${name}: ${r.failed} of ${r.ok + r.failed} connections failed ${JSON.stringify(r.errors)}, firewall drops ${r.drops.join(' / ')} (${r.toggles} toggles, ${r.moves} moves)`,
        );
      }
    }
  });
}

main().catch((e) => {
  console.error(e);
  process.exitCode = 1;
});
