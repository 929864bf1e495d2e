// The firewalls' admin state across restarts (the node's stateFile): loaded and validated at start, written
// atomically after each accepted change; shell layer of apps/balancer.
import { existsSync, readFileSync } from 'node:fs';
import { compileBodyValidator, ConfigError } from '@fwlb/config';
import { writeFileAtomic } from '@fwlb/service';

const check = compileBodyValidator<{ version: 1; admin: Record<string, boolean> }>({
  type: 'object',
  additionalProperties: false,
  required: ['version', 'admin'],
  properties: {
    version: { const: 1 },
    admin: { type: 'object', maxProperties: 4096, propertyNames: { pattern: '^[A-Za-z0-9_-]{1,32}$' }, additionalProperties: { type: 'boolean' } },
  },
});

/**
 * The saved admin state, or {} when there is no file yet. A file that is not JSON or not valid is a ConfigError
 * naming the file (the node exits 2 before it touches the kernel). Firewalls no longer configured are returned in
 * `unknown`, for the log, and otherwise ignored.
 */
export function loadAdminState(path: string, ids: readonly string[]): { admin: Record<string, boolean>; unknown: string[] } {
  if (!existsSync(path)) return { admin: {}, unknown: [] };
  let doc: unknown;
  try {
    doc = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new ConfigError([{ field: '', message: `state file is not valid JSON (${(e as Error).message}); fix or remove it, the kernel was left as it is` }], path);
  }
  let state: { admin: Record<string, boolean> };
  try {
    state = check(doc);
  } catch (e) {
    throw e instanceof ConfigError ? new ConfigError(e.problems, path) : e;
  }
  const known = new Set(ids);
  const admin: Record<string, boolean> = {};
  const unknown: string[] = [];
  for (const [id, enabled] of Object.entries(state.admin)) (known.has(id) ? (admin[id] = enabled) : unknown.push(id));
  return { admin, unknown };
}

export function saveAdminState(path: string, admin: Record<string, boolean>): void {
  writeFileAtomic(path, JSON.stringify({ version: 1, admin }, null, 2));
}
