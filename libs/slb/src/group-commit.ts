// The state file's writes as a group commit; shell layer of libs/slb.

/** The change is live in the kernel, but the state file could not be written. */
export class SaveError extends Error {
  readonly code = 'FWLB_SAVE_FAILED';
}

/**
 * Writes the latest snapshot for every change accepted so far. A change that arrives while a write runs waits for
 * the one next write, which carries it and every other change that arrived meanwhile; so a burst of changes costs
 * two writes, and a resolved commit still means the change is on disk.
 */
export class GroupCommit<T> {
  private saving: Promise<void> | null = null;
  private next: Promise<void> | null = null;
  /** Set while the last change is live but not written: why. */
  error: string | null = null;

  /** `snapshot` is read when a write starts, so it carries every change accepted until then. */
  constructor(
    private readonly save: (snapshot: T) => void | Promise<void>,
    private readonly snapshot: () => T,
  ) {}

  commit(): Promise<void> {
    if (!this.saving) {
      const snap = this.snapshot();
      this.saving = Promise.resolve()
        .then(() => this.save(snap))
        .then(
          () => {
            this.error = null;
          },
          (e) => {
            this.error = `state file not written: ${(e as Error).message}`;
            throw new SaveError(this.error);
          },
        )
        .finally(() => (this.saving = null));
      return this.saving;
    }
    this.next ??= this.saving
      .catch(() => undefined)
      .then(() => {
        this.next = null;
        return this.commit();
      });
    return this.next;
  }
}
