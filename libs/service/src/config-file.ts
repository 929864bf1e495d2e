// Reads a JSON config file and the API token for a node process; shell layer shared by the node processes.
import { chmodSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { ConfigError } from '@fwlb/config';
import { Check, formatChecks } from './checks';

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

/** The version in a package directory's package.json. */
export function packageVersion(dir: string): string {
  return JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')).version;
}

/**
 * `token create FILE [--force]`: a random token (32 bytes, base64url) in a new file of mode 0600; an existing file is
 * kept unless --force (a running node would stop accepting the clients that hold the old one).
 */
export function createTokenFile(path: string, force = false): string {
  if (existsSync(path) && !force) throw new ConfigError([{ field: '', message: `${path} exists: keep it, or give --force to replace the token` }], path);
  writeFileSync(path, `${randomBytes(32).toString('base64url')}\n`, { mode: 0o600, flag: force ? 'w' : 'wx' });
  chmodSync(path, 0o600);
  return `wrote a new API token to ${path} (mode 0600)`;
}

const tokenFileOf = (config: unknown) => (config as { api?: { tokenFile?: string } } | null)?.api?.tokenFile;

/** The shortest token a token file may hold (the config schema's for an inline `api.token`). */
const TOKEN_MIN = 16;

/**
 * A token file that cannot be read, or holds no usable token, is a config error: found by `check-config` and before
 * a node touches the kernel, not after its first reconcile.
 */
export function tokenFileProblem(path: string | undefined): { field: string; message: string } | null {
  if (!path) return null;
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? (e as Error).message;
    return {
      field: '/api/tokenFile',
      message: `cannot read the token file ${path} (${code}); create it with \`fwlb token create ${path}\` (a random token, mode 0600)`,
    };
  }
  const token = text.split('\n')[0].trim();
  if (token.length < TOKEN_MIN)
    return { field: '/api/tokenFile', message: `the token in ${path} is ${token.length ? `${token.length} characters, shorter than ${TOKEN_MIN}` : 'empty'}` };
  return null;
}

/**
 * A node's state file (what its API changed), or undefined while there is none. An empty, truncated or otherwise
 * unreadable one is a ConfigError naming the file: the node stops before it touches the kernel.
 */
export function readStateFile(path: string): unknown {
  if (!existsSync(path)) return undefined;
  try {
    return JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new ConfigError(
      [{ field: '', message: `state file is not valid JSON (${(e as Error).message}); fix or remove it, the kernel was left as it is` }],
      path,
    );
  }
}

/** The bearer token: inline, from a file (first line), or FWLB_TOKEN. */
export function tokenOf(api: { token?: string; tokenFile?: string }): string | undefined {
  if (api.token) return api.token;
  if (api.tokenFile) return readFileSync(api.tokenFile, 'utf8').split('\n')[0].trim();
  return process.env.FWLB_TOKEN || undefined;
}

/** The value after `name` on the command line. */
export function arg(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i > 0 ? process.argv[i + 1] : undefined;
}

/** Runs a command-line main: a bad config exits 2 with the field named, anything else exits 1 with the stack. */
/** Rejections nobody handled since start (see runMain). */
export let unhandled = 0;

export function runMain(prog: string, main: () => Promise<void>): void {
  // Fail static: a promise nobody awaited that rejects (a bug in a loop) is logged and counted, never the end of
  // the process that keeps the kernel's state in step.
  process.on('unhandledRejection', (e) => {
    unhandled++;
    console.error(`${prog}: ALARM unhandled rejection #${unhandled} (the process keeps running): ${e instanceof Error ? e.stack : e}`);
  });
  main().catch((e) => {
    if (e instanceof ConfigError) {
      console.error(`${prog}: ${e.message}`);
      process.exit(2);
    }
    console.error(`${prog}: ${e instanceof Error ? e.stack : e}`);
    process.exit(1);
  });
}

/**
 * On SIGTERM or SIGINT, run the cleanups in order and exit 0. The kernel is left as it is: a stopped
 * controller must not cause a blip.
 */
export function stopOnSignals(cleanups: (() => unknown)[]): void {
  const stop = async () => {
    for (const c of cleanups) await c();
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

export interface NodeCli<C> {
  prog: string;
  usage: string;
  loadConfig: (path: string) => C;
  run: (path: string) => Promise<void>;
  doctor: (config: C | null) => Promise<Check[]>;
  /** The program's package directory: `--version` prints its package.json's version. */
  packageDir: string;
  /** Commands of this program only: `<prog> NAME ...` runs `commands[NAME](config, args after --config FILE)`. */
  commands?: Record<string, (config: C, args: string[]) => Promise<void>>;
}

/** `<prog> run --config FILE | doctor [--config FILE] | check-config FILE`, the same for every node process. */
export function nodeCli<C>(c: NodeCli<C>): void {
  const usage = (): never => {
    console.error(`usage: ${c.usage}`);
    process.exit(2);
  };
  runMain(c.prog, async () => {
    const cmd = process.argv[2];
    // The token file is checked with the config: a node whose API could not authenticate anyone stops before it
    // touches the kernel, not after its first reconcile.
    const loadChecked = (path: string): C => {
      const config = c.loadConfig(path);
      const problem = tokenFileProblem(tokenFileOf(config));
      if (problem) throw new ConfigError([problem], path);
      return config;
    };
    if (cmd === '--version') {
      console.log(`${c.prog} ${packageVersion(c.packageDir)}`);
    } else if (cmd === 'token' && process.argv[3] === 'create') {
      console.log(createTokenFile(process.argv[4] ?? usage(), process.argv.includes('--force')));
    } else if (cmd === 'run') {
      const path = arg('--config') ?? usage();
      loadChecked(path);
      await c.run(path);
    } else if (cmd === 'doctor') {
      const path = arg('--config');
      const config = path ? c.loadConfig(path) : null;
      const checks = await c.doctor(config);
      if (tokenFileOf(config)) {
        const problem = tokenFileProblem(tokenFileOf(config));
        checks.push({ name: 'API token file', ok: !problem, required: true, detail: problem ? problem.message : `${tokenFileOf(config)} readable` });
      }
      console.log(formatChecks(checks));
      process.exit(checks.some((x) => x.required && !x.ok) ? 1 : 0);
    } else if (cmd === 'check-config') {
      loadChecked(process.argv[3] ?? usage());
      console.log('config ok');
    } else if (cmd && c.commands?.[cmd]) {
      const args = process.argv.slice(3);
      const i = args.indexOf('--config');
      if (i < 0 || !args[i + 1]) usage();
      await c.commands[cmd](c.loadConfig(args[i + 1]), [...args.slice(0, i), ...args.slice(i + 2)]);
    } else usage();
  });
}
