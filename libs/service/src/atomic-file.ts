// Files a node writes that must survive a crash whole: write to a temp file of its own, fsync, rename, fsync the
// directory; shell layer shared by the node processes (the SLB's VIPs, the balancer's admin state).
import { closeSync, fsyncSync, openSync, renameSync, rmSync, writeSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { dirname } from 'node:path';
import { open, rename, rm } from 'node:fs/promises';

/**
 * A crash mid-write never leaves half a file. The temp name is the node's own and created with O_EXCL, so a symlink
 * planted at a guessable name is never followed.
 */
export function writeFileAtomic(path: string, text: string): void {
  const tmp = `${path}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  const fd = openSync(tmp, 'wx', 0o600);
  try {
    writeSync(fd, text);
    fsyncSync(fd);
  } catch (e) {
    closeSync(fd);
    rmSync(tmp, { force: true });
    throw e;
  }
  closeSync(fd);
  renameSync(tmp, path);
  const dir = openSync(dirname(path), 'r');
  try {
    fsyncSync(dir);
  } finally {
    closeSync(dir);
  }
}

/** The same steps as writeFileAtomic, with the writes and fsyncs on libuv's thread pool instead of the event loop. */
export async function writeFileAtomicAsync(path: string, text: string): Promise<void> {
  const tmp = `${path}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  const f = await open(tmp, 'wx', 0o600);
  try {
    await f.writeFile(text);
    await f.sync();
  } catch (e) {
    await f.close();
    await rm(tmp, { force: true });
    throw e;
  }
  await f.close();
  await rename(tmp, path);
  const dir = await open(dirname(path), 'r');
  try {
    await dir.sync();
  } finally {
    await dir.close();
  }
}
