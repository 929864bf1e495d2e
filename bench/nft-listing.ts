// Benchmark: what reading an nft table costs when one of its maps is large (the pins of many sessions), for the
// listings a controller can make: the whole table, one chain, one named counter, another map, another table, and
// adding one element. Why: nft fetches set elements for listings that need them and for some that do not, so a
// large map can slow every read of its table. In a namespace of its own, deleted at the end.
import { deleteNs, inNs, run, uniquePrefix } from '@fwlb/lab';

const SIZES = (process.env.BENCH_PIN_SIZES ?? '50000,100000,200000,335000').split(',').map(Number);

/** The table: a large pins map, a small map a rule reads, a named counter, a chain. */
function tableText(n: number): string {
  const lines = [
    'table inet big {',
    '  map pins {',
    '    type ipv4_addr . inet_service . ipv4_addr . inet_service . inet_proto : mark',
    '    size 2000000',
    '  }',
    '  map small {',
    '    type mark : mark',
    '    elements = { 1 : 2 }',
    '  }',
    '  counter k1 {',
    '  }',
    '  chain c {',
    '    type filter hook prerouting priority 0;',
    '    meta mark set meta mark map @small counter name k1',
    '  }',
    '}',
    'table inet other {',
    '  map m {',
    '    type mark : mark',
    '    elements = { 1 : 2 }',
    '  }',
    '}',
  ];
  // Private addresses (10.64.0.0/10), 50,000 elements per statement.
  for (let i = 0; i < n; i += 50000) {
    const els: string[] = [];
    for (let j = i; j < Math.min(n, i + 50000); j++)
      els.push(`10.${64 + (j >> 16)}.${(j >> 8) & 255}.${j & 255} . ${1024 + (j % 50000)} . 203.0.113.1 . 80 . 6 : ${1 + (j % 3)}`);
    lines.push(`add element inet big pins { ${els.join(', ')} }`);
  }
  return lines.join('\n') + '\n';
}

function timed(ns: string, args: string[], input?: string): number {
  const t0 = performance.now();
  inNs(ns, ['nft', ...args], input);
  return performance.now() - t0;
}

function main(): void {
  const p = uniquePrefix('bnl');
  console.log('pins    load ms  list table  list chain  list counter  list map (other)  list table (other)  add 1 element');
  for (const n of SIZES) {
    const ns = `${p}-${n}`;
    run(['ip', 'netns', 'add', ns]);
    try {
      const load = timed(ns, ['-f', '-'], tableText(n));
      const cells = [
        timed(ns, ['-j', 'list', 'table', 'inet', 'big']),
        timed(ns, ['-j', 'list', 'chain', 'inet', 'big', 'c']),
        timed(ns, ['-j', 'list', 'counter', 'inet', 'big', 'k1']),
        timed(ns, ['-j', 'list', 'map', 'inet', 'big', 'small']),
        timed(ns, ['-j', 'list', 'table', 'inet', 'other']),
        timed(ns, ['add', 'element', 'inet', 'big', 'pins', '{ 10.127.0.1 . 1 . 203.0.113.1 . 80 . 6 : 5 }']),
      ];
      console.log(
        [String(n).padEnd(7), load.toFixed(0).padStart(7), ...cells.map((c, i) => `${c.toFixed(0)} ms`.padStart([10, 10, 12, 16, 18, 13][i]))].join('  '),
      );
    } finally {
      deleteNs(ns);
    }
  }
}

main();
