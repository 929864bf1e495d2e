// Prints a desired table in nft's text syntax, one rule a line, for golden dumps a reviewer reads in a diff; pure layer of libs/nft.
import type { DesiredTable, NftJson } from './model';

/** An expression (the left or right side of a match, a value, a key) in nft text syntax. */
export function exprText(e: NftJson): string {
  if (e === null || typeof e !== 'object') return typeof e === 'string' && /[\s"]/.test(e) ? JSON.stringify(e) : String(e);
  if (Array.isArray(e)) return e.map(exprText).join(',');
  const o = e as Record<string, any>;
  if ('meta' in o) return `meta ${o.meta.key}`;
  if ('payload' in o) return `${o.payload.protocol} ${o.payload.field}`;
  if ('ct' in o) return `ct ${o.ct.dir ? `${o.ct.dir} ` : ''}${o.ct.key}`;
  if ('concat' in o) return (o.concat as NftJson[]).map(exprText).join(' . ');
  if ('set' in o) return `{ ${(Array.isArray(o.set) ? o.set : [o.set]).map(exprText).join(', ')} }`;
  if ('prefix' in o) return `${exprText(o.prefix.addr)}/${o.prefix.len}`;
  if ('fib' in o) return `fib ${(o.fib.flags ?? []).join(' . ')} ${o.fib.result}`;
  if ('jhash' in o) return `jhash ${exprText(o.jhash.expr)} mod ${o.jhash.mod} seed ${o.jhash.seed}`;
  if ('map' in o) return `${exprText(o.map.key)} map ${typeof o.map.data === 'string' ? o.map.data : mapText(o.map.data)}`;
  if ('&' in o) return `${exprText(o['&'][0])} & ${exprText(o['&'][1])}`;
  return JSON.stringify(o);
}

/** An anonymous map's elements: `{ key : value, ... }`. */
function mapText(data: { set: [NftJson, NftJson][] }): string {
  return `{ ${data.set.map(([k, v]) => `${exprText(k)} : ${JSON.stringify(v)}`).join(', ')} }`;
}

/** One statement of a rule in nft text syntax. */
export function statementText(s: NftJson): string {
  const o = s as Record<string, any>;
  if ('match' in o) {
    const op = o.match.op === '==' ? '' : o.match.op === 'in' ? 'in ' : `${o.match.op} `;
    return `${exprText(o.match.left)} ${op}${exprText(o.match.right)}`;
  }
  if ('mangle' in o) return `${exprText(o.mangle.key)} set ${exprText(o.mangle.value)}`;
  if ('set' in o) return `${o.set.op} ${o.set.set} { ${exprText(o.set.elem)} }`;
  if ('counter' in o) {
    if (o.counter === null) return 'counter';
    return typeof o.counter === 'string' ? `counter name ${JSON.stringify(o.counter)}` : `counter name ${exprText(o.counter)}`;
  }
  if ('jump' in o) return `jump ${o.jump.target}`;
  if ('ct timeout' in o) return `ct timeout set ${JSON.stringify(o['ct timeout'])}`;
  if ('goto' in o) return `goto ${o.goto.target}`;
  for (const v of ['accept', 'drop', 'return', 'continue']) if (v in o) return v;
  return JSON.stringify(o);
}

/**
 * The table as text: sets and maps (their elements left out: the bucket table is tested on its own), then each
 * chain with its rules in order. A changed rule, or a changed order, is a changed line.
 */
export function tableText(t: DesiredTable): string {
  const out = [`table ${t.family} ${t.name}`];
  for (const o of t.ctTimeouts ?? [])
    out.push(
      `  ct timeout ${o.name} { protocol ${o.protocol}; l3proto ${o.l3proto}; policy = { ${Object.entries(o.policy)
        .map(([k, v]) => `${k}: ${v}`)
        .join(', ')} } }`,
    );
  for (const c of t.counters ?? []) out.push(`  counter ${c}`);
  for (const s of t.sets ?? []) out.push(`  set ${s.name} { type ${[s.type].flat().join(' . ')}; timeout ${s.timeout}s; size ${s.size} }`);
  for (const m of t.maps) out.push(`  map ${m.name} { type ${[m.type].flat().join(' . ')} : ${m.map}; ${m.elements.length} elements }`);
  for (const c of t.chains) {
    out.push(`  chain ${c.name} {${c.hook ? ` type ${c.type} hook ${c.hook} priority ${c.prio}; policy ${c.policy};` : ''}`);
    for (const r of c.rules) out.push(`    ${r.map(statementText).join(' ')}`);
    out.push('  }');
  }
  return out.join('\n') + '\n';
}
