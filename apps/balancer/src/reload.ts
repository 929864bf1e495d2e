// Reload: a running node re-reads its config file and takes it without a restart, or refuses it as a whole and keeps
// the one it has; shell layer of apps/balancer (SIGHUP, POST /reload and `fwlbctl reload` all come here).
import { ConfigError, FieldProblem, reloadProblems, ResolvedBalancerConfig } from '@fwlb/config';
import type { FirewallHealth } from './firewall-health';
import type { Membership } from './membership';
import type { Reconciler } from './reconciler';
import type { SessionsHandle } from './session-layer';

export interface ReloadParts {
  membership: Membership;
  reconciler: Reconciler;
  health: () => FirewallHealth | null;
  sessions: SessionsHandle | null;
  /** Reads and validates the config file (a ConfigError names the fields). */
  load: () => ResolvedBalancerConfig;
  log: (m: string, fields?: Record<string, unknown>) => void;
}

export interface ReloadResult {
  changed: boolean;
  added: string[];
  removed: string[];
  nftCommands: number;
  routingChanges: number;
}

/**
 * Why a firewall cannot be removed now: it still takes new sessions. An operator disables it first (its new
 * sessions go elsewhere at once, its established ones keep it), lets its sessions end, then removes it.
 */
function removalProblems(running: ResolvedBalancerConfig, next: ResolvedBalancerConfig, membership: Membership): FieldProblem[] {
  const ids = new Set(next.firewalls.map((f) => f.id));
  return running.firewalls
    .filter((f) => !ids.has(f.id) && membership.isEnabled(f.id))
    .map((f) => ({
      field: '/firewalls',
      message: `${f.id} is removed while it is enabled: disable it first (fwlbctl disable ${f.id}), let its sessions end, then reload`,
    }));
}

export class Reloader {
  private queue: Promise<unknown> = Promise.resolve();
  reloads = 0;
  refused = 0;

  constructor(private readonly p: ReloadParts) {}

  /** One reload at a time: a SIGHUP and an API call that come together run one after the other. */
  reload(why: string): Promise<ReloadResult> {
    const run = this.queue.then(() => this.reloadNow(why));
    this.queue = run.catch(() => undefined);
    return run;
  }

  private async reloadNow(why: string): Promise<ReloadResult> {
    const { membership, reconciler, log } = this.p;
    const running = reconciler.config;
    let next: ResolvedBalancerConfig;
    try {
      next = this.p.load();
      const problems = [...reloadProblems(running, next), ...removalProblems(running, next, membership)];
      if (problems.length) throw new ConfigError(problems, 'the reloaded config');
    } catch (e) {
      this.refused++;
      log(`reload (${why}) refused, the running config stays: ${(e as Error).message}`, { event: 'reload-refused' });
      throw e;
    }
    if (JSON.stringify(next) === JSON.stringify(running)) {
      log(`reload (${why}): the config file is unchanged`, { event: 'reload', changed: false });
      return { changed: false, added: [], removed: [], nftCommands: 0, routingChanges: 0 };
    }
    // The kernel first: a transaction the kernel refuses leaves it as it was, and everything goes back.
    const undo = membership.reconfigure(next);
    reconciler.reconfigure(next);
    let applied;
    try {
      applied = await reconciler.reconcile();
    } catch (e) {
      undo.undo();
      reconciler.reconfigure(running);
      await reconciler.reconcile().catch(() => undefined);
      this.refused++;
      log(`reload (${why}) refused by the kernel, the running config stays: ${(e as Error).message}`, { event: 'reload-refused' });
      throw new ConfigError([{ field: '', message: `the kernel refused it: ${(e as Error).message}` }], 'the reloaded config');
    }
    // Then the checks (an added firewall's probes need its route and mark) and the shared views and digest.
    this.p.health()?.reconfigure(next);
    this.p.sessions?.reconfigure(next);
    this.reloads++;
    const r = { changed: true, added: undo.added, removed: undo.removed, nftCommands: applied.nftCommands, routingChanges: applied.routingChanges };
    log(
      `reloaded (${why}): firewalls added ${undo.added.join(',') || 'none'}, removed ${undo.removed.join(',') || 'none'}; ${r.nftCommands} nft commands, ${r.routingChanges} routing changes`,
      { event: 'reload', ...r },
    );
    return r;
  }
}
