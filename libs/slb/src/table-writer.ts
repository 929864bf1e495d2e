// The SLB's writes to the kernel: what it believes the tables hold, their declarations, the VIP addresses around a
// transaction, and the one transaction itself; each undone when what follows it fails. Shell layer of libs/slb.
import type { NftJson } from '@fwlb/nft';
import type { AddressPort, SlbKernel } from './kernel-port';
import { declarationsModel, familiesInUse, flowMapModel, hasDeclarations, NO_TABLES, SlbTables } from './kernel';
import { tablesCommands } from './kernel-diff';
import { applySlbCommands, applyTablesCommands } from './kernel-model';
import { declared, isFlowMap, SLB_FAMILIES, SlbFamily, VipFragment } from './render';

export interface AddressChange {
  addressesAdded: string[];
  addressesRemoved: string[];
}

/** A declaration made for a transaction: the tables as they will be, and how to take it back. */
export interface Declaration {
  have: SlbTables;
  undo: () => Promise<void>;
}

export class SlbTableWriter {
  /** The tables as this controller last read or wrote them (null per family before start, or with no table). */
  private believed: SlbTables = NO_TABLES;
  /** nft transactions sent (each one all or nothing), since start. */
  transactions = 0;

  constructor(
    private readonly kernel: SlbKernel,
    private readonly addresses: AddressPort,
    private readonly table: string,
    private readonly iface: string,
    readonly label: string,
  ) {}

  /** What a change is computed against when it does not read the kernel first. */
  tables(): SlbTables {
    return this.believed;
  }

  /** The `ip` table's handle (null without one): what a pass reports. */
  handle(): number | null {
    return this.believed.ip?.handle ?? null;
  }

  families(): SlbFamily[] {
    return SLB_FAMILIES.filter((f) => this.believed[f] !== null);
  }

  read(): Promise<SlbTables> {
    return this.kernel.read();
  }

  /** One transaction, all or nothing; nothing is sent for no command. */
  async transact(cmds: NftJson[]): Promise<void> {
    if (!cmds.length) return;
    this.transactions++;
    await this.kernel.apply(cmds);
  }

  /** The kernel took `cmds` on top of `have`: that is what it holds now. */
  took(have: SlbTables, cmds: NftJson[]): void {
    this.believed = applyTablesCommands(have, cmds);
  }

  /**
   * A change's transaction against the believed tables. When the kernel refuses it, the table may have drifted from
   * what this controller believes (someone edited it): it is read and the change tried once more, if that differs.
   * Returns the tables the commands were computed against and the commands the kernel took.
   */
  async transactScoped(frags: readonly VipFragment[], have: SlbTables, scope: ReadonlySet<string>): Promise<{ have: SlbTables; cmds: NftJson[] }> {
    let cmds = tablesCommands({ table: this.table, want: frags, have, scope });
    try {
      await this.transact(cmds);
    } catch (e) {
      have = await this.kernel.read();
      const again = tablesCommands({ table: this.table, want: frags, have, scope });
      if (!familiesInUse(frags, have).every((f) => hasDeclarations(have[f], f)) || JSON.stringify(again) === JSON.stringify(cmds)) throw e;
      cmds = again;
      await this.transact(cmds);
    }
    return { have, cmds };
  }

  /**
   * Declares, in text (JSON cannot), the pool maps and counter sets of each table `want` needs and lacks: both
   * families on a full pass, the first VIP of a family on a change. `undo` takes them away again when the
   * transaction that follows fails, so the kernel is as it was.
   */
  async declare(want: readonly VipFragment[], have: SlbTables): Promise<Declaration> {
    const done: SlbFamily[] = [];
    const maps: { f: SlbFamily; name: string }[] = [];
    let next = have;
    const table = this.table;
    const undo = async () => {
      // Declared into a table that did not exist: the table goes too.
      const cmds = [
        ...maps.filter((m) => have[m.f] && !done.includes(m.f)).map((m): NftJson => ({ delete: { map: { family: m.f, table, name: m.name } } })),
        ...done.flatMap((f): NftJson[] =>
          have[f]
            ? declared(f).map((d) => ({ delete: { [d.kind]: { family: f, table, name: d.name } } }))
            : [{ delete: { table: { family: f, name: table } } }],
        ),
      ];
      if (cmds.length) await this.kernel.apply(cmds).catch(() => undefined);
    };
    try {
      for (const f of familiesInUse(want, have)) {
        if (!hasDeclarations(next[f], f)) {
          await this.kernel.declare(f);
          done.push(f);
          next = { ...next, [f]: applySlbCommands(next[f], declarationsModel(table, f)) };
        }
        const missing = want.filter((x) => x.family === f && isFlowMap(x.pool) && !next[f]?.sets.has(x.pool));
        if (!missing.length) continue;
        await this.kernel.declareFlowMaps(
          f,
          missing.map((x) => ({ id: x.id, protocol: x.key[1] })),
        );
        maps.push(...missing.map((x) => ({ f, name: x.pool })));
        next = {
          ...next,
          [f]: applySlbCommands(
            next[f],
            missing.map((x) => flowMapModel(table, f, x.id)),
          ),
        };
      }
    } catch (e) {
      await undo();
      throw e;
    }
    return { have: next, undo };
  }

  /** The VIP addresses this controller holds on its interface (labelled, so nothing else's are touched). */
  heldAddresses(): Promise<string[]> {
    return this.addresses.labelledAddresses(this.iface, this.label);
  }

  /**
   * Adds the addresses `want` needs before `apply`, removes them again if it fails, and removes the ones no VIP uses
   * after it succeeded. `only` limits the pass to the addresses of a change (null: compare every labelled address).
   */
  async withAddresses(want: ReadonlySet<string>, only: ReadonlySet<string> | null, apply: () => Promise<void>): Promise<AddressChange> {
    // A change that touches no address reads none: the dump of a thousand VIP addresses cost a member change 4 ms.
    if (only && !only.size) {
      await apply();
      return { addressesAdded: [], addressesRemoved: [] };
    }
    const have = new Set(await this.heldAddresses());
    const added: string[] = [];
    try {
      for (const a of want) {
        if (have.has(a) || (only && !only.has(a))) continue;
        if ((await this.addresses.addAddress(this.iface, a, this.label)) !== false) added.push(a);
      }
      await apply();
    } catch (e) {
      for (const a of added) await this.addresses.delAddress(this.iface, a).catch(() => undefined);
      throw e;
    }
    const removed = [...have].filter((a) => !want.has(a) && (!only || only.has(a)));
    for (const a of removed) await this.addresses.delAddress(this.iface, a);
    return { addressesAdded: added, addressesRemoved: removed };
  }
}
