// The kernel's pins maps: what they hold (by session id), and the transactions that bring them to the pins a pass
// wants without listing them; imperative shell of apps/balancer.
import type { ActualTable, NftJson, NftRunner, RawElement } from '@fwlb/nft';
import { ipv4KeyImage, parseSessionId } from '@fwlb/session-table';
import { keyImage } from '@fwlb/flowhash';
import { pinElement, TABLE_FAMILY, TABLE_NAME } from './render';
import { Family, familyFor, IPV6 } from './rules';

/** Pins as the session cache gives them: session id → the mark of the firewall its packets go to. */
export type PinSet = ReadonlyMap<string, number>;

/** Elements per transaction of an incremental change: each nft run stays well under its timeout. */
export const PIN_CHUNK = 50_000;

/** The map of a family's pins (see renderTable). */
export const pinMapName = (fam: Family) => `pins${fam.suffix}`;

/** A pin's map element, from its session id (null for an id that does not parse, which no cache holds). */
export function pinElementOf(id: string, mark: number): [NftJson, number] | null {
  const k = parseSessionId(id);
  return k ? pinElement({ ...k, mark }) : null;
}

/** The changes that turn `held` into `want`: pins to add or give another mark, and pins to remove. */
export function pinChanges(held: PinSet, want: PinSet): { put: [string, number][]; changed: Set<string>; remove: string[] } {
  const put: [string, number][] = [];
  const changed = new Set<string>();
  for (const [id, mark] of want) {
    const h = held.get(id);
    if (h === mark) continue;
    put.push([id, mark]);
    if (h !== undefined) changed.add(id);
  }
  const remove: string[] = [];
  for (const id of held.keys()) if (!want.has(id)) remove.push(id);
  return { put, changed, remove };
}

/**
 * Why the maps are not diffed with the rest of the table: at a million sessions a listing of the pins takes
 * minutes, and a change that moves a third of the buckets adds hundreds of thousands of them. So this node keeps
 * what it wrote and writes only the difference:
 * - pins to add, or whose firewall changed, go in before the pass's table transaction (a pin only restates its
 *   session's firewall, so it is right under the old table and the new one), in transactions of PIN_CHUNK;
 * - pins no longer wanted go after it (the old table may still need them until then);
 * - while nothing is known (the first pass, or after a failed transaction) the maps are replaced inside the table's
 *   transaction, flushed and filled at once, so no packet sees them half written.
 * The handles of the table and maps tell when someone else made them again: then nothing is known.
 */
export class PinMaps {
  private held: Map<string, number> | null = null;
  /** The pins `before` found no longer wanted, for `after`. */
  private leaving: string[] = [];
  /** Pins written (added, given another firewall or removed) by the current pass. */
  changed = 0;
  /** The handles the maps had when `held` was written; null until the next read shows them. */
  private handles: { table: number | null; maps: Map<string, number | null> } | null = null;

  constructor(private readonly nft: NftRunner) {}

  /** Pins in the kernel's maps, as this node wrote them (0 before the first pass). */
  get size(): number {
    return this.held?.size ?? 0;
  }

  /** Whether the maps' contents are known: the next pass writes the difference, not the whole. */
  get known(): boolean {
    return this.held !== null;
  }

  /** A read of the table at the start of a pass: the maps are still the ones written, or nothing is known. */
  observe(actual: ActualTable | null, families: readonly Family[]): void {
    if (!this.held || !this.handles) return;
    const names = families.map(pinMapName);
    if (!actual || (this.handles.table !== null && this.handles.table !== actual.handle)) return this.forget();
    this.handles.table = actual.handle;
    for (const n of names) {
      const m = actual.maps.get(n);
      const was = this.handles.maps.get(n);
      if (!m || (was != null && m.handle !== undefined && was !== m.handle)) return this.forget();
      this.handles.maps.set(n, m.handle ?? null);
    }
  }

  forget(): void {
    this.held = null;
    this.handles = null;
  }

  /**
   * Before the table's transaction: adds and changed firewalls, when the maps are known and exist. Returns the
   * commands that replace the maps' contents inside that transaction when they are not.
   */
  async before(want: PinSet, actual: ActualTable | null, families: readonly Family[]): Promise<NftJson[]> {
    const names = families.map(pinMapName);
    this.leaving = [];
    this.changed = 0;
    if (!this.held || !actual || names.some((n) => !actual.maps.has(n))) return this.replaceCommands(want, families);
    const { put, changed, remove } = pinChanges(this.held, want);
    this.leaving = remove;
    for (let i = 0; i < put.length; i += PIN_CHUNK) {
      const chunk = put.slice(i, i + PIN_CHUNK);
      const old = chunk.filter(([id]) => changed.has(id)).map(([id]) => [id, this.held!.get(id)!] as const);
      await this.write(old, chunk, families);
      for (const [id, mark] of chunk) this.held.set(id, mark);
      this.changed += chunk.length;
    }
    return [];
  }

  /** Pins deleted, then pins added: over nfnetlink when the runner can, else one nft transaction. */
  private async write(del: readonly (readonly [string, number])[], add: readonly (readonly [string, number])[], families: readonly Family[]) {
    const writer = this.nft.elements;
    try {
      if (!writer) return await this.nft.apply([...this.elementCommands('delete', del, families), ...this.elementCommands('add', add, families)]);
      const d = this.rawByFamily(del, families);
      const a = this.rawByFamily(add, families);
      for (const fam of families) {
        const map = { family: TABLE_FAMILY, table: TABLE_NAME, name: pinMapName(fam) };
        if (d.get(fam)!.length || a.get(fam)!.length) await writer.write(map, d.get(fam)!, a.get(fam)!);
      }
    } catch (e) {
      this.forget();
      throw e;
    }
  }

  /** Pins as the kernel keeps them (see keyImage), by family; pins of a family not steered are left out. */
  private rawByFamily(pins: readonly (readonly [string, number])[], families: readonly Family[]): Map<Family, RawElement[]> {
    const by = new Map<Family, RawElement[]>(families.map((f) => [f, []]));
    const v4 = families.find((f) => f !== IPV6);
    const v4pins = v4 ? by.get(v4)! : null;
    for (const [id, mark] of pins) {
      const fast = v4pins && ipv4KeyImage(id);
      if (fast) {
        v4pins.push({ key: fast, value: mark });
        continue;
      }
      const k = parseSessionId(id);
      const fam = k && familyFor(families, k.outerAddr);
      if (fam && (k.proto === 6 || k.proto === 17)) by.get(fam)!.push({ key: keyImage(k), value: mark });
    }
    return by;
  }

  /** After the table's transaction committed: the pins `before` found no longer wanted go. */
  async after(families: readonly Family[]): Promise<void> {
    const remove = this.leaving;
    this.leaving = [];
    if (!this.held) return;
    for (let i = 0; i < remove.length; i += PIN_CHUNK) {
      const chunk = remove.slice(i, i + PIN_CHUNK);
      await this.write(
        chunk.map((id) => [id, this.held!.get(id)!]),
        [],
        families,
      );
      for (const id of chunk) this.held.delete(id);
      this.changed += chunk.length;
    }
  }

  /** The table's transaction that carried replaceCommands committed: the maps hold `want`. */
  replaced(want: PinSet, families: readonly Family[]): void {
    this.held = new Map(want);
    this.changed = want.size;
    this.handles = { table: null, maps: new Map(families.map((f) => [pinMapName(f), null])) };
  }

  private replaceCommands(want: PinSet, families: readonly Family[]): NftJson[] {
    const flush = families.map((f) => ({ flush: { map: { family: TABLE_FAMILY, table: TABLE_NAME, name: pinMapName(f) } } }));
    return [...flush, ...this.elementCommands('add', [...want], families)];
  }

  /** Add or delete commands for `pins`, one per family map that has any; pins of a family not steered are left out. */
  private elementCommands(verb: 'add' | 'delete', pins: readonly (readonly [string, number])[], families: readonly Family[]): NftJson[] {
    const by = new Map<Family, NftJson[]>(families.map((f) => [f, []]));
    for (const [id, mark] of pins) {
      const k = parseSessionId(id);
      const fam = k && familyFor(families, k.outerAddr);
      if (!fam) continue;
      const el = pinElement({ ...k!, mark });
      by.get(fam)!.push(verb === 'add' ? el : el[0]);
    }
    return [...by].flatMap(([fam, elem]) =>
      elem.length ? [{ [verb]: { element: { family: TABLE_FAMILY, table: TABLE_NAME, name: pinMapName(fam), elem } } }] : [],
    );
  }
}
