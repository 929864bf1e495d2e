// One controller per node and owned table: a lock held by listening on an abstract unix socket; shell layer.
import { createServer, Server } from 'node:net';
import { ConfigError } from '@fwlb/config';

/**
 * Why an abstract socket: it belongs to the network namespace (a node), vanishes with the process however it dies
 * (no stale lock file after kill -9), and binding it twice fails with EADDRINUSE. Two controllers on one node would
 * fight over the same nft table and routes, each undoing the other's changes every resync.
 */
export function acquireInstanceLock(name: string): Promise<{ release(): void }> {
  return new Promise((resolve, reject) => {
    const srv: Server = createServer((c) => c.destroy());
    srv.once('error', (e: NodeJS.ErrnoException) => {
      if (e.code === 'EADDRINUSE')
        reject(new ConfigError([{ field: '', message: `another ${name} is already running on this node (network namespace); stop it first` }], name));
      else reject(e);
    });
    srv.listen({ path: `\0fwlb-lock:${name}` }, () => {
      srv.unref();
      resolve({ release: () => srv.close() });
    });
  });
}
