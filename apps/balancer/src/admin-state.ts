// The firewalls' admin state across restarts (the node's stateFile): loaded and validated at start, written
// atomically after each accepted change; shell layer of apps/balancer.
import { compileBodyValidator, ConfigError } from '@fwlb/config';
import { readStateFile, writeFileAtomic } from '@fwlb/service';

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
  const doc = readStateFile(path);
  if (doc === undefined) return { admin: {}, unknown: [] };
  let state: { admin: Record<string, boolean> };
  try {
    state = check(doc);
  } catch (e) {
    throw e instanceof ConfigError ? new ConfigError(e.problems, path) : e;
  }
  const known = new Set(ids);
  const admin: Record<string, boolean> = {};
  const unknown: string[] = [];
  for (const [id, enabled] of Object.entries(state.admin)) known.has(id) ? (admin[id] = enabled) : unknown.push(id);
  return { admin, unknown };
}

export function saveAdminState(path: string, admin: Record<string, boolean>): void {
  writeFileAtomic(path, JSON.stringify({ version: 1, admin }, null, 2));
}
