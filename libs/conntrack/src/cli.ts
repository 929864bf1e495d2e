#!/usr/bin/env node
// fwlb-conntrack: `dump` prints the table, `get` the entry of each tuple read from stdin (JSON lines),
// `watch [--ms N] [--rcvbuf B] [--stall MS]` prints events as JSON lines and ends with the loss metrics; for
// operators, and for the integration tests, which run it inside a namespace.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { isIP } from 'node:net';
import { ConntrackEvents, dumpConntrack, getConntracks } from './conntrack';
import type { CtTuple } from './codec';

const port = (v: unknown) => v === undefined || (Number.isInteger(v) && (v as number) >= 0 && (v as number) <= 65535);

/** A tuple line from stdin: {"src","dst","proto","sport"?,"dport"?}, addresses of one family; anything else is refused. */
function tupleOf(line: string, n: number): CtTuple {
  let v: Record<string, unknown>;
  try {
    v = JSON.parse(line) as Record<string, unknown>;
  } catch {
    throw new Error(`line ${n}: not JSON`);
  }
  const known = ['src', 'dst', 'proto', 'sport', 'dport'];
  const extra = v && typeof v === 'object' ? Object.keys(v).filter((k) => !known.includes(k)) : [];
  const ok =
    v &&
    typeof v === 'object' &&
    !extra.length &&
    typeof v.src === 'string' &&
    typeof v.dst === 'string' &&
    isIP(v.src) !== 0 &&
    isIP(v.src) === isIP(v.dst) &&
    Number.isInteger(v.proto) &&
    (v.proto as number) >= 0 &&
    (v.proto as number) <= 255 &&
    port(v.sport) &&
    port(v.dport);
  if (!ok)
    throw new Error(
      `line ${n}: expected {"src","dst","proto","sport"?,"dport"?} with addresses of one family${extra.length ? ` (unknown: ${extra.join(', ')})` : ''}`,
    );
  return v as unknown as CtTuple;
}

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
  if (cmd === 'get') {
    const tuples = readFileSync(0, 'utf8')
      .split('\n')
      .map((l, i) => [l.trim(), i + 1] as const)
      .filter(([l]) => l)
      .map(([l, n]) => tupleOf(l, n));
    for (const e of await getConntracks(tuples)) console.log(JSON.stringify(e));
    return;
  }
  if (cmd !== 'watch') {
    console.error('usage: fwlb-conntrack dump | get < tuples (JSON lines) | watch [--ms N] [--rcvbuf BYTES] [--stall MS] | --version');
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
