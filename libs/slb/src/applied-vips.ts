// The VIPs as last applied to the kernel: each one's fragment (what the kernel holds, the slots the API reports) and
// the pools in panic, kept apart so that alarms never walk every member. Pure layer of libs/slb.
import type { VipFragment } from './render';

export interface Panic {
  healthy: number;
  enabled: number;
}

export class AppliedVips {
  private readonly fragments = new Map<string, VipFragment>();
  private readonly panicked = new Map<string, Panic>();

  /** `changed` runs when the fragment is a new one (the API's cached views are then stale). */
  constructor(private readonly changed: () => void) {}

  get(id: string): VipFragment | undefined {
    return this.fragments.get(id);
  }

  has(id: string): boolean {
    return this.fragments.has(id);
  }

  set(f: VipFragment): void {
    if (this.fragments.get(f.id) !== f) this.changed();
    this.fragments.set(f.id, f);
    if (f.panic) this.panicked.set(f.id, f.panic);
    else this.panicked.delete(f.id);
  }

  drop(id: string): void {
    this.fragments.delete(id);
    this.panicked.delete(id);
  }

  /** A full pass: exactly these. */
  replaceAll(frags: readonly VipFragment[]): void {
    this.fragments.clear();
    this.panicked.clear();
    for (const f of frags) this.set(f);
  }

  panics(): IterableIterator<[string, Panic]> {
    return this.panicked.entries();
  }
}
