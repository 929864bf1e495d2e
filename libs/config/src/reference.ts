// The configuration reference, generated from the schemas the agents validate with (so it cannot drift from what
// they accept): every key, its type and what it allows; pure layer of libs/config.
import { balancerSchema } from './balancer-schema';
import { slbSchema } from './slb-schema';

export interface ReferenceRow {
  key: string;
  type: string;
  allowed: string;
  required: boolean;
}

type Schema = Record<string, any>;

const code = (x: unknown) => `\`${typeof x === 'string' ? x : JSON.stringify(x)}\``;

function typeOf(s: Schema): string {
  if (s.const !== undefined) return `${code(s.const)}`;
  if (s.enum) return s.enum.map(code).join(', ');
  if (s.type === 'array') return `array of ${s.items ? typeOf(s.items) : 'any'}`;
  if (s.oneOf) return 'object, one of the kinds below';
  return String(s.type ?? (s.properties ? 'object' : 'any'));
}

function allowed(s: Schema): string {
  const a: string[] = [];
  const t = s.type === 'array' && s.items ? s.items : s;
  if (t.format) a.push(`format ${t.format}`);
  if (t.pattern) a.push(`pattern ${code(t.pattern)}`);
  if (t.minimum !== undefined || t.maximum !== undefined) a.push(`${t.minimum ?? '…'} to ${t.maximum ?? '…'}`);
  if (t.exclusiveMinimum !== undefined) a.push(`over ${t.exclusiveMinimum}`);
  if (t.minLength !== undefined || t.maxLength !== undefined) a.push(`${t.minLength ?? 0} to ${t.maxLength ?? '…'} characters`);
  if (s.type === 'array') {
    if (s.minItems !== undefined || s.maxItems !== undefined) a.push(`${s.minItems ?? 0} to ${s.maxItems ?? '…'} items`);
    if (s.uniqueItems) a.push('no duplicates');
  }
  return a.join('; ');
}

/** Every key of `schema`, depth first; a `oneOf` of objects told apart by `kind` gives each kind's keys. */
export function schemaRows(schema: Schema, prefix = '', out: ReferenceRow[] = []): ReferenceRow[] {
  const objectOf = (s: Schema) => (s.type === 'array' ? s.items : s) ?? {};
  const props = (s: Schema, at: string, required: readonly string[] = s.required ?? []) => {
    for (const [k, v] of Object.entries((s.properties ?? {}) as Record<string, Schema>)) {
      const key = at ? `${at}.${k}` : k;
      out.push({ key, type: typeOf(v), allowed: allowed(v), required: required.includes(k) });
      const inner = objectOf(v);
      const sub = v.type === 'array' ? `${key}[]` : key;
      if (inner.oneOf) {
        for (const variant of inner.oneOf as Schema[]) {
          const kind = variant.properties?.kind?.const;
          props(
            { ...variant, properties: Object.fromEntries(Object.entries(variant.properties ?? {}).filter(([n]) => n !== 'kind')) },
            kind ? `${sub} (kind ${kind})` : sub,
            [...(inner.required ?? []), ...(variant.required ?? [])],
          );
        }
      } else if (inner.properties) props(inner, sub);
    }
  };
  props(schema, prefix);
  return out;
}

function table(rows: ReferenceRow[]): string {
  const cell = (s: string) => s.replace(/\|/g, '\\|');
  return [
    '| key | type | allowed |',
    '|---|---|---|',
    ...rows.map((r) => `| ${code(r.key)}${r.required ? ' (required)' : ''} | ${cell(r.type)} | ${cell(r.allowed)} |`),
  ].join('\n');
}

/** docs/config-reference.md: both agents' config files, key by key. */
export function configReference(): string {
  return [
    '# Configuration reference',
    '',
    'Generated from the schemas the agents validate with (`node scripts/config-reference.js`; `npm test` fails when',
    'this file is stale). What each key means, and its default, is in [configuration](configuration.md) (the balancer',
    'node) and [the SLB tier](slb.md). An unknown key is refused, naming it.',
    '',
    '## Balancer node (`fwlb run --config FILE`)',
    '',
    table(schemaRows(balancerSchema)),
    '',
    '## SLB tier (`fwlb-slb run --config FILE`)',
    '',
    table(schemaRows(slbSchema)),
    '',
  ].join('\n');
}
