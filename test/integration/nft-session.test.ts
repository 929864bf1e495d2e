// Integration: transactions through one long-lived `nft -j -i` (NftSession), against a real kernel in the test's own
// namespace. Each transaction is all or nothing and says why it failed; the session survives a failed transaction and
// comes back after its process died; an nft that cannot hold a session leaves nftCli on a process per transaction,
// and a transaction too large for a line takes one as well.
import { t } from 'tap';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NftError, NftJson, NftSession, nftCli, NFT_TIMEOUT_MS, SESSION_MAX_BYTES, SESSION_RECYCLE_BYTES } from '@fwlb/nft';
import { deleteNs, inNs, run, uniquePrefix } from '@fwlb/lab';

const set = { family: 'ip', table: 'fwlb_session_test', name: 's' };
const elements = (verb: 'add' | 'delete', ...elem: string[]): NftJson => ({ [verb]: { element: { ...set, elem } } });
const doc = (...cmds: NftJson[]) => JSON.stringify({ nftables: cmds });

t.test('nft session', async (t) => {
  const ns = uniquePrefix('nfs');
  run(['ip', 'netns', 'add', ns]);
  const dir = mkdtempSync(join(tmpdir(), 'fwlb-nft-session-'));
  t.teardown(() => {
    deleteNs(ns);
    rmSync(dir, { recursive: true, force: true });
  });
  // nft in the test's namespace, each invocation logged; `noSession` refuses interactive mode, as a build without it.
  const log = join(dir, 'nft.log');
  writeFileSync(log, '');
  const wrapper = (name: string, noSession: boolean) => {
    const bin = join(dir, name);
    writeFileSync(
      bin,
      [
        '#!/bin/sh',
        `echo "$*" >> ${log}`,
        ...(noSession ? ['case " $* " in *" -i "*) echo "Error: interactive CLI not supported in this build" >&2; exit 1 ;; esac'] : []),
        `exec ip netns exec ${ns} nft "$@"`,
        '',
      ].join('\n'),
    );
    chmodSync(bin, 0o755);
    return bin;
  };
  const bin = wrapper('nft', false);
  inNs(ns, ['nft', '-f', '-'], `table ip ${set.table} {\n  set s { type ipv4_addr; }\n}\n`);
  const held = (): string[] => inNs(ns, ['nft', '-j', 'list', 'set', 'ip', set.table, 's']).match(/\d+\.\d+\.\d+\.\d+/g) ?? [];
  const invocations = () => readFileSync(log, 'utf8').split('\n').filter(Boolean);

  const s = new NftSession(bin, NFT_TIMEOUT_MS);
  t.teardown(() => s.close());

  await t.test('transactions commit in one process', async (t) => {
    t.equal(await s.apply(doc(elements('add', '10.0.0.1', '10.0.0.2'))), true);
    t.equal(await s.apply(doc(elements('delete', '10.0.0.1'))), true);
    t.same(held(), ['10.0.0.2']);
    t.equal(s.starts, 1, 'one nft for both');
  });

  await t.test('a failed transaction changes nothing, says why, and the session goes on', async (t) => {
    const e = await s.apply(doc(elements('add', '10.0.0.3'), elements('delete', '10.0.0.9'))).catch((x) => x);
    t.ok(e instanceof NftError, String(e));
    t.match(e.message, /^nft transaction failed \(nothing applied\): .*No such file or directory/);
    t.same(held(), ['10.0.0.2'], 'the add of the same transaction is not there');
    t.equal(await s.apply(doc(elements('add', '10.0.0.4'))), true);
    t.same(held().sort(), ['10.0.0.2', '10.0.0.4']);
    t.equal(s.starts, 1);
  });

  await t.test('a session whose nft died is started again', async (t) => {
    // The session's process is nft itself: the shell, the wrapper and `ip netns exec` each exec the next.
    const pid = s.pid;
    t.ok(pid && /^nft -j -i/.test(readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ')), `the session's nft: ${pid}`);
    process.kill(pid!, 'SIGKILL');
    await new Promise((r) => setTimeout(r, 200));
    t.equal(await s.apply(doc(elements('add', '10.0.0.5'))), true);
    t.ok(held().includes('10.0.0.5'));
    t.equal(s.starts, 2);
  });

  await t.test('a session is started afresh after a few megabytes, and leaves no history file', async (t) => {
    // The line editor of nft -i writes its history to $HOME at exit: the session's nft has a HOME of its own.
    const home = process.env.HOME;
    process.env.HOME = dir;
    t.teardown(() => void (process.env.HOME = home));
    const fresh = new NftSession(bin, NFT_TIMEOUT_MS);
    const block = Array.from({ length: 4000 }, (_, i) => `10.2.${i >> 8}.${i & 255}`);
    const each = doc(elements('add', ...block)).length;
    for (let i = 0; i * each <= SESSION_RECYCLE_BYTES; i++) t.equal(await fresh.apply(doc(elements(i % 2 ? 'delete' : 'add', ...block))), true);
    t.equal(await fresh.apply(doc(elements('add', '10.0.0.8'))), true);
    t.equal(fresh.starts, 2, `a second session after ${SESSION_RECYCLE_BYTES} bytes`);
    fresh.close();
    await new Promise((r) => setTimeout(r, 300));
    t.notOk(existsSync(join(dir, '.nft.history')), 'no history written');
  });

  await t.test('nftCli: an nft without a session runs each transaction in a process of its own', async (t) => {
    const cli = nftCli(wrapper('nft-no-session', true), NFT_TIMEOUT_MS, { session: true });
    const before = invocations().length;
    await cli.apply([elements('add', '10.0.0.6')]);
    await cli.apply([elements('add', '10.0.0.7')]);
    t.ok(held().includes('10.0.0.6') && held().includes('10.0.0.7'));
    const runs = invocations().slice(before);
    t.equal(runs.filter((r) => / -i( |$)/.test(r)).length, 1, `asked for a session once: ${runs.join('; ')}`);
    t.equal(runs.filter((r) => / -f -/.test(r)).length, 2, 'then a process per transaction');
    await t.rejects(cli.apply([elements('delete', '10.9.9.9')]), /nothing applied/, 'and its errors as before');
  });

  await t.test('nftCli: a small transaction goes to the session, a large one to a process of its own', async (t) => {
    const cli = nftCli(bin, NFT_TIMEOUT_MS, { session: true });
    const before = invocations().length;
    await cli.apply([elements('add', '10.0.1.1')]);
    const many = Array.from({ length: Math.ceil(SESSION_MAX_BYTES / 8) }, (_, i) => `10.${1 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`);
    await cli.apply([elements('add', ...many)]);
    const runs = invocations().slice(before);
    t.equal(runs.filter((r) => / -i( |$)/.test(r)).length, 1, 'one session');
    t.equal(runs.filter((r) => / -f -/.test(r)).length, 1, `the large one alone in a process: ${runs.join('; ').slice(0, 200)}`);
    t.equal(
      inNs(ns, ['nft', '-j', 'list', 'set', 'ip', set.table, 's']).match(/\d+\.\d+\.\d+\.\d+/g)!.length,
      many.length + 7 + (held().some((a) => a.startsWith('10.2.')) ? 4000 : 0),
    );
  });
});
