// The node's BGP announcements: the routing daemon's configuration (rendered, checked, loaded) and the announce
// table that tells it the node's state (fit, drained, unfit); I/O layer of apps/balancer.
import { execFile } from 'node:child_process';
import { renameSync, rmSync, writeFileSync } from 'node:fs';
import type { ResolvedBgp } from '@fwlb/config';
import {
  AnnounceState,
  AnnouncedRoute,
  birdProtocol,
  BirdProtocolState,
  parseBfdSessions,
  parseBirdProtocols,
  planAnnounce,
  renderBird,
  Rtnl,
  stateOfMetric,
} from '@fwlb/routing';

/** The routing daemon's tools, as the announcer uses them (a fake in unit tests). */
export interface DaemonPort {
  /** The daemon's verdict on a configuration file: null if it parses, else its message. */
  check(file: string): Promise<string | null>;
  /** Load `file` into the running daemon: null on success, else why not. */
  configure(file: string): Promise<string | null>;
  /** The daemon's protocols, or null when its control socket does not answer. */
  protocols(): Promise<BirdProtocolState[] | null>;
  /** The daemon's BFD sessions' states by peer address, or null when it does not answer. */
  bfdSessions(): Promise<Map<string, string> | null>;
}

const run = (cmd: string, args: string[], timeoutMs = 5000) =>
  new Promise<{ code: number; out: string }>((resolve) => {
    execFile(cmd, args, { timeout: timeoutMs, encoding: 'utf8' }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? ((err as { code: number }).code as number) : -1) : 0;
      resolve({ code, out: `${stdout}${stderr}`.trim() || (err ? err.message : '') });
    });
  });

export function birdPort(socket: string): DaemonPort {
  return {
    async check(file) {
      const r = await run('bird', ['-p', '-c', file]);
      return r.code === 0 ? null : r.out;
    },
    async configure(file) {
      const r = await run('birdc', ['-s', socket, 'configure', `"${file}"`]);
      // birdc exits 0 on the daemon's refusals too: its answer says.
      return r.code === 0 && /Reconfigur/.test(r.out) && !/error|failed/i.test(r.out) ? null : r.out;
    },
    async protocols() {
      const r = await run('birdc', ['-s', socket, 'show', 'protocols']);
      return r.code === 0 && !/Unable to connect/.test(r.out) ? parseBirdProtocols(r.out) : null;
    },
    async bfdSessions() {
      const r = await run('birdc', ['-s', socket, 'show', 'bfd', 'sessions']);
      return r.code === 0 && !/Unable to connect/.test(r.out) ? parseBfdSessions(r.out) : null;
    },
  };
}

/** Every configured prefix of `bgp`, once (each peer announces those of its family). */
export function announcedPrefixes(bgp: ResolvedBgp): { family: 4 | 6; prefix: string }[] {
  const seen = new Map<string, { family: 4 | 6; prefix: string }>();
  for (const p of bgp.peers) for (const prefix of p.announce) seen.set(prefix, { family: p.family, prefix });
  return [...seen.values()];
}

/** Put the announce table in `state` (null: nothing announced) without a controller; the errors, if any. */
export async function setAnnounced(rtnl: Pick<Rtnl, 'announced' | 'applyAnnounce'>, bgp: ResolvedBgp, state: AnnounceState | null): Promise<string[]> {
  const plan = planAnnounce(announcedPrefixes(bgp), state, await rtnl.announced(bgp.announceTable));
  return (await rtnl.applyAnnounce(bgp.announceTable, plan)).map((e) => e.message);
}

export interface AnnouncerDeps {
  rtnl: Pick<Rtnl, 'announced' | 'applyAnnounce'>;
  daemon: DaemonPort;
  /** Why the node should not attract traffic, or null (see Membership.unfitReason). */
  unfitReason: () => string | null;
  log: (line: string) => void;
}

export interface PeerStatus {
  name: string;
  address: string;
  state: string;
  established: boolean;
  info: string;
  /** The BFD session's state (Up, Down, Init), or null when the peer runs without BFD or the daemon does not say. */
  bfd: string | null;
}

export interface AnnounceStatus {
  state: AnnounceState;
  drained: boolean;
  /** Why the node is unfit (null when fit). */
  unfit: string | null;
  /** The prefixes in the announce table now, with the metric the daemon reads. */
  announced: AnnouncedRoute[];
  daemon: { running: boolean; config: 'loaded' | 'refused' | 'not loaded'; error: string | null };
  peers: PeerStatus[];
  /** When the state last changed (ms since the epoch). */
  since: number;
}

export class Announcer {
  private drained = false;
  private state: AnnounceState = 'fit';
  private since = Date.now();
  private actual: AnnouncedRoute[] = [];
  private configState: AnnounceStatus['daemon']['config'] = 'not loaded';
  private configError: string | null = null;
  private protocols: BirdProtocolState[] | null = null;
  private bfd: Map<string, string> | null = null;
  private applyError: string | null = null;
  private timer: NodeJS.Timeout | null = null;
  private ticks = 0;
  private busy: Promise<void> = Promise.resolve();

  constructor(
    private readonly bgp: ResolvedBgp,
    private readonly node: string,
    private readonly d: AnnouncerDeps,
  ) {}

  private prefixes() {
    return announcedPrefixes(this.bgp);
  }

  /**
   * Render the daemon's configuration, let the daemon check it, and only then put it in place and load it. A
   * refused one is never loaded: the daemon keeps its last good configuration and an alarm says why.
   */
  async loadConfig(): Promise<boolean> {
    const text = renderBird(this.bgp, this.node);
    const file = this.bgp.configFile;
    const tmp = `${file}.fwlb-new`;
    try {
      // World-readable: BIRD reads it as its own user, and it holds no secret (no session passwords are rendered).
      writeFileSync(tmp, text, { mode: 0o644 });
      const refused = await this.d.daemon.check(tmp);
      if (refused) {
        this.configState = 'refused';
        this.configError = `the BIRD configuration fwlb rendered was refused by bird -p, the running one is kept: ${refused}`;
        this.d.log(`ALARM ${this.configError}`);
        return false;
      }
      renameSync(tmp, file);
    } catch (e) {
      this.configState = 'refused';
      this.configError = `the BIRD configuration could not be written to ${file}: ${(e as Error).message}`;
      this.d.log(`ALARM ${this.configError}`);
      return false;
    } finally {
      rmSync(tmp, { force: true });
    }
    const failed = await this.d.daemon.configure(file);
    this.configState = failed ? 'not loaded' : 'loaded';
    this.configError = failed ? `BIRD did not load ${file}: ${failed}` : null;
    if (failed) this.d.log(`ALARM ${this.configError}`);
    else this.d.log(`BIRD configuration loaded from ${file}`);
    return !failed;
  }

  /**
   * Start after the first reconcile (the kernel forwards as configured): the announce table is adopted as it is
   * (a controller that died left it announcing: fail static), a drained node stays drained, and from here on the
   * table follows the node's state.
   */
  async start(intervalMs = 250): Promise<void> {
    this.actual = await this.d.rtnl.announced(this.bgp.announceTable);
    if (this.actual.some((r) => stateOfMetric(r.metric) === 'drained')) {
      this.drained = true;
      this.d.log('the announce table says this node was drained: it stays drained (fwlbctl node undrain)');
    }
    await this.loadConfig();
    await this.update(true);
    await this.readDaemon();
    const tick = () => {
      this.ticks++;
      // The table is read back every 20 ticks: what someone else changed is put right.
      void this.update(this.ticks % 20 === 0)
        .then(() => (this.ticks % 8 === 0 ? this.readDaemon() : undefined))
        .finally(() => {
          if (this.timer) this.timer = setTimeout(tick, intervalMs);
        });
    };
    this.timer = setTimeout(tick, intervalMs);
  }

  stop(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  private wanted(): AnnounceState {
    if (this.d.unfitReason()) return 'unfit';
    return this.drained ? 'drained' : 'fit';
  }

  /** Bring the announce table to the node's state; one update at a time. */
  update(reread = false): Promise<void> {
    const next = this.busy.then(async () => {
      const want = this.wanted();
      if (reread) this.actual = await this.d.rtnl.announced(this.bgp.announceTable);
      const plan = planAnnounce(this.prefixes(), want, this.actual);
      if (want !== this.state) {
        this.d.log(`announcements: ${this.state} -> ${want}${want === 'unfit' ? ` (${this.d.unfitReason()})` : ''}`);
        this.state = want;
        this.since = Date.now();
      }
      if (!plan.add.length && !plan.del.length) return;
      const errors = await this.d.rtnl.applyAnnounce(this.bgp.announceTable, plan);
      this.applyError = errors.length ? `the announce table was not updated: ${errors.map((e) => e.message).join('; ')}` : null;
      if (this.applyError) this.d.log(`ALARM ${this.applyError}`);
      this.actual = await this.d.rtnl.announced(this.bgp.announceTable);
    });
    this.busy = next.catch((e) => this.d.log(`announcements: ${(e as Error).message}`));
    return this.busy;
  }

  /** Read the daemon's sessions now (GET /node answers with what BIRD says at that moment, not 2 s ago). */
  refresh(): Promise<void> {
    return this.readDaemon();
  }

  private async readDaemon(): Promise<void> {
    this.protocols = await this.d.daemon.protocols();
    this.bfd = this.bgp.peers.some((p) => p.bfd) ? await this.d.daemon.bfdSessions() : null;
  }

  /** Drain (less preferred: the routers move new and existing flows to the siblings) or undrain. */
  async setDrained(drained: boolean): Promise<AnnounceStatus> {
    this.drained = drained;
    await this.update();
    return this.status();
  }

  isDrained(): boolean {
    return this.drained;
  }

  peers(): PeerStatus[] {
    return this.bgp.peers.map((p) => {
      const s = this.protocols?.find((x) => x.name === birdProtocol(p.name));
      return {
        name: p.name,
        address: p.address,
        state: s?.state ?? 'unknown',
        established: s?.established ?? false,
        info: s?.info ?? '',
        bfd: p.bfd ? (this.bfd?.get(p.address) ?? null) : null,
      };
    });
  }

  status(): AnnounceStatus {
    return {
      state: this.state,
      drained: this.drained,
      unfit: this.d.unfitReason(),
      announced: this.actual,
      daemon: { running: this.protocols !== null, config: this.configState, error: this.configError },
      peers: this.peers(),
      since: this.since,
    };
  }

  alarms(): string[] {
    const out: string[] = [];
    if (this.configError) out.push(this.configError);
    if (this.applyError) out.push(this.applyError);
    if (this.protocols === null) out.push(`BIRD does not answer on ${this.bgp.controlSocket}: nothing is announced to the peers`);
    else
      for (const p of this.peers())
        if (!p.established) out.push(`BGP session ${p.name} to ${p.address} is not established (${p.state}${p.info ? `: ${p.info}` : ''})`);
    return out;
  }
}
