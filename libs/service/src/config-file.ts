// Reads a JSON config file and the API token for a node process; shell layer shared by the node processes.
import { chmodSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { createSecureContext } from 'node:tls';
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

/** The API section of any node's config (balancer or SLB). */
export interface ApiSection {
  listen?: string;
  token?: string;
  tokenFile?: string;
  tls?: { certFile: string; keyFile: string };
}

const apiOf = (config: unknown) => (config as { api?: ApiSection } | null)?.api;
const tokenFileOf = (config: unknown) => apiOf(config)?.tokenFile;

/** Whether an API listen address stays on this host: a unix socket, 127.0.0.0/8 or ::1. */
export function isLoopbackListen(listen: string): boolean {
  if (listen.startsWith('unix:')) return true;
  const host = listen.slice(0, listen.lastIndexOf(':')).replace(/^\[|\]$/g, '');
  return host === '::1' || /^127\./.test(host);
}

/**
 * What keeps a node's API from starting as configured, before anything touches the kernel: the token file and the
 * TLS files must be readable (and the certificate and key must load), and a token must not cross the network in
 * clear (a TCP address other than loopback with a token, from the config or FWLB_TOKEN, needs `api.tls`).
 */
export function apiProblems(api: ApiSection | undefined, env: NodeJS.ProcessEnv = process.env): { field: string; message: string }[] {
  const out: { field: string; message: string }[] = [];
  const token = tokenFileProblem(api?.tokenFile);
  if (token) out.push(token);
  const tls = api?.tls;
  if (tls) {
    const pem: Record<string, Buffer> = {};
    for (const k of ['certFile', 'keyFile'] as const) {
      try {
        pem[k] = readFileSync(tls[k]);
      } catch (e) {
        out.push({ field: `/api/tls/${k}`, message: `cannot read ${tls[k]} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})` });
      }
    }
    if (pem.certFile && pem.keyFile)
      try {
        createSecureContext({ cert: pem.certFile, key: pem.keyFile });
      } catch (e) {
        out.push({ field: '/api/tls', message: `the certificate and key do not load as a pair: ${(e as Error).message}` });
      }
  }
  const hasToken = Boolean(api?.token || api?.tokenFile || env.FWLB_TOKEN);
  if (api?.listen && !isLoopbackListen(api.listen) && hasToken && !tls)
    out.push({
      field: '/api/tls',
      message: `is required: the API listens on ${api.listen}, not loopback, and its bearer token would cross the network in clear (give certFile and keyFile, or listen on loopback or a unix socket)`,
    });
  return out;
}

/** The certificate and key the API serves HTTPS with, or undefined for plain HTTP. */
export function httpsOf(api: ApiSection): { cert: Buffer; key: Buffer } | undefined {
  return api.tls ? { cert: readFileSync(api.tls.certFile), key: readFileSync(api.tls.keyFile) } : undefined;
}

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
    // The token and TLS files are checked with the config: a node whose API could not start, or could not
    // authenticate anyone, stops before it touches the kernel, not after its first reconcile.
    const loadChecked = (path: string): C => {
      const config = c.loadConfig(path);
      const problems = apiProblems(apiOf(config));
      if (problems.length) throw new ConfigError(problems, path);
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
      if (config) {
        const tls = apiProblems(apiOf(config)).filter((p) => p.field !== '/api/tokenFile');
        const api = apiOf(config);
        if (api?.tls || tls.length)
          checks.push({
            name: 'API TLS',
            ok: !tls.length,
            required: true,
            detail: tls.length ? tls.map((p) => `${p.field}: ${p.message}`).join('; ') : `HTTPS with ${api!.tls!.certFile}`,
          });
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
