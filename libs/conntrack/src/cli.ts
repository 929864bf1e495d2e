#!/usr/bin/env node
// fwlb-conntrack: `dump` prints the table, `watch [--ms N] [--rcvbuf B] [--stall MS]` prints events as JSON lines and
// ends with the loss metrics; for operators, and for the integration tests, which run it inside a namespace.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ConntrackEvents, dumpConntrack } from './conntrack';

const arg = (n: string, d: number) => {
  const i = process.argv.indexOf(n);
  return i > 0 ? Number(process.argv[i + 1]) : d;
};

async function main(): Promise<void> {
  const cmd = process.argv[2];
  if (cmd === '--version') {
    console.log(`fwlb-conntrack ${JSON.parse(readFileSync(join(__dirname, '..', 'package.json'), 'utf8')).version}`);
    return;
  }
  if (cmd === 'dump') {
    for (const e of await dumpConntrack()) console.log(JSON.stringify(e));
    return;
  }
  if (cmd !== 'watch') {
    console.error('usage: fwlb-conntrack dump | watch [--ms N] [--rcvbuf BYTES] [--stall MS] | --version');
    process.exit(2);
  }
  let resyncs = 0;
  const ev = ConntrackEvents.open({
    recvBufferSize: arg('--rcvbuf', 8 << 20),
    // --stall: the reader blocks once, as a slow consumer would, so that the kernel's queue overflows.
    stallMs: arg('--stall', 0),
    onEvents: (batch) => {
      for (const e of batch) console.log(JSON.stringify({ kind: e.kind, ...e.entry }));
    },
    // What a consumer must do on loss: re-sync from a dump.
    onLoss: () => {
      resyncs++;
      void dumpConntrack().then((all) => console.log(JSON.stringify({ kind: 'resync', entries: all.length })));
    },
  });
  await ev.ready;
  console.log(JSON.stringify({ kind: 'ready' }));
  setTimeout(
    () => {
      console.log(JSON.stringify({ kind: 'metrics', events: ev.events, overruns: ev.overruns, resyncs }));
      ev.close();
    },
    arg('--ms', 2000),
  );
}

main().catch((e) => {
  console.error(`fwlb-conntrack: ${e instanceof Error ? e.message : e}`);
  process.exit(1);
});
