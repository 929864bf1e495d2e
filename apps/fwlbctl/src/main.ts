#!/usr/bin/env node
// fwlbctl: the command-line client of a node's REST API (balancer or SLB); the only place that touches process.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { CtlError, EXIT } from './client';
import { run } from './commands';

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  if (argv.includes('--version')) {
    console.log(`fwlbctl ${JSON.parse(readFileSync(join(__dirname, '..', 'package.json'), 'utf8')).version}`);
    return;
  }
  const take = (name: string): string | undefined => {
    const i = argv.indexOf(name);
    if (i < 0) return undefined;
    const v = argv[i + 1];
    argv.splice(i, 2);
    return v;
  };
  const json = argv.includes('--json');
  if (json) argv.splice(argv.indexOf('--json'), 1);
  // `fwlbctl slb ...`: the SLB's API without naming it each time.
  const slb = argv[0] === 'slb';
  if (slb) argv.shift();
  const api = take('--api') ?? (slb ? (process.env.FWLB_SLB_API ?? 'http://127.0.0.1:8481') : (process.env.FWLB_API ?? 'http://127.0.0.1:8480'));
  const tokenFile = take('--token-file');
  const caFile = take('--ca');
  try {
    const token = tokenFile ? readFileSync(tokenFile, 'utf8').trim() : process.env.FWLB_TOKEN;
    const ca = caFile ? readFileSync(caFile, 'utf8') : undefined;
    const out = await run({ api, token, ca }, argv);
    console.log(json ? JSON.stringify(out.json, null, 2) : out.text);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT' || (e as NodeJS.ErrnoException).code === 'EACCES')
      e = new CtlError('FWLBCTL_FILE', (e as Error).message, EXIT.unknown);
    if (e instanceof CtlError) {
      console.error(json ? JSON.stringify({ code: e.code, message: e.message }) : `fwlbctl: ${e.message}`);
      process.exit(e.exit);
    }
    throw e;
  }
}

void main();
