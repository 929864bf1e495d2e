// Reads a JSON config file and the API token for a node process; shell layer shared by the node processes.
import { readFileSync } from 'node:fs';
import { ConfigError } from '@fwlb/config';

/** Read and validate a JSON config file; unreadable or malformed files are ConfigErrors too. */
export function loadJsonConfig<T>(path: string, validate: (doc: unknown, source: string) => T): T {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new ConfigError([{ field: '', message: `cannot read ${path}: ${(e as Error).message}` }], path);
  }
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    throw new ConfigError([{ field: '', message: `not valid JSON: ${(e as Error).message}` }], path);
  }
  return validate(doc, path);
}

/** The bearer token: inline, from a file (first line), or FWLB_TOKEN. */
export function tokenOf(api: { token?: string; tokenFile?: string }): string | undefined {
  if (api.token) return api.token;
  if (api.tokenFile) return readFileSync(api.tokenFile, 'utf8').split('\n')[0].trim();
  return process.env.FWLB_TOKEN || undefined;
}
