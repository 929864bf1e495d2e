// Runs inside a namespace for bench/sessions.ts: has UDP flows created at a given rate on loopback (conntrack on)
// by a generator process of its own, follows conntrack with libs/conntrack and writes the sessions with the balancer's SessionSync and libs/session-table,
// and reports the sync rate and the lag from flow creation to written in Redis. Prints one JSON line.
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { ConntrackEvents, dumpConntrack } from '@fwlb/conntrack';
import { SessionSync } from '@fwlb/balancer';
import { connect, ready, SessionEnd, SessionRecord, SessionTable, DEFAULT_LAYOUT } from '@fwlb/session-table';

const [url, rateS, secondsS, portBaseS] = process.argv.slice(2);
const rate = Number(rateS);
const seconds = Number(secondsS);
const portBase = Number(portBaseS);

const pct = (xs: number[], p: number) => {
  if (!xs.length) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
};

async function main(): Promise<void> {
  // BENCH_AUTOPIPELINE=0: each command in a write of its own, as before fwlb turned ioredis' autopipelining on.
  const redis = await ready(connect({ url, node: 'bench' }, process.env.BENCH_AUTOPIPELINE === '0' ? { enableAutoPipelining: false } : {}));
  const table = new SessionTable(redis, 'bench', `bench${portBase}:`, DEFAULT_LAYOUT);
  const created = new Map<number, number>();
  const lags: number[] = [];
  let written = 0;
  const store = {
    put: async (recs: SessionRecord[], now?: number) => {
      const n = await table.put(recs, now);
      const done = performance.timeOrigin + performance.now();
      for (const r of recs) {
        const t0 = created.get(r.outerPort);
        if (t0 !== undefined) lags.push(done - t0);
      }
      written += n;
      return n;
    },
    delete: (ends: readonly SessionEnd[]) => table.delete(ends),
    grace: (ids: string[], until: number) => table.grace(ids, until),
  };
  const sync = new SessionSync({
    node: 'bench',
    role: 'outside',
    firewallOf: (m) => (m === 0x10001 ? 'fw1' : undefined),
    store,
    dump: dumpConntrack,
    flushMs: 50,
    resyncMs: 3600_000,
  });
  // The generated UDP flows are never answered; they are stamped as answered (SEEN_REPLY) so that the write path
  // is what is measured, as it would be for real answered sessions.
  const events = ConntrackEvents.open({
    kinds: ['new'],
    onEvents: (b) => sync.onEvents(b.map((e) => ({ ...e, entry: { ...e.entry, labels: [1], status: e.entry.status | 2 } }))),
    onLoss: () => undefined,
  });
  await events.ready;
  // The flows are made by a process of their own (bench/flow-generator.ts): in this one they would compete with
  // the sync for the event loop and inflate the lag.
  const t0 = performance.now();
  const gen = spawn(process.execPath, [join(__dirname, 'flow-generator.js'), String(rate), String(seconds), String(portBase)], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let genRate = 0;
  await new Promise<void>((resolve) => {
    createInterface({ input: gen.stdout! }).on('line', (l) => {
      const [a, b] = l.split(' ');
      if (a === 'done') {
        genRate = Number(b);
        return resolve();
      }
      created.set(Number(a), Number(b));
    });
    gen.once('exit', () => resolve());
  });
  const total = rate * seconds;
  // Let the last batches land.
  const end = Date.now() + 5000;
  while (written < created.size && Date.now() < end) await new Promise((r) => setTimeout(r, 50));
  const wallMs = performance.now() - t0;
  await sync.flush();
  console.log(
    JSON.stringify({
      rate,
      offered: total,
      genRate,
      events: events.events,
      overruns: events.overruns,
      written,
      writeRate: Math.round((written / wallMs) * 1000),
      p50: pct(lags, 50),
      p99: pct(lags, 99),
    }),
  );
  events.close();
  redis.disconnect();
  process.exit(0);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
