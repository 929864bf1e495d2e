// One change of an owned table as one nft transaction, with the ct timeout objects its rules name; shell layer of libs/nft.
import { ctTimeoutChanges, ctTimeoutText } from './diff';
import type { ActualTable, DesiredTable } from './model';
import type { NftRunner } from './nft-cli';

/**
 * Applies `cmds` (the diff from `actual` to `desired`) in one transaction. The ct timeout objects its rules name are
 * declared before it, in text (nft 1.0.6's JSON cannot declare them), and taken away again if it fails, so a failed
 * change leaves the table as it was; objects no rule names any more go after it. A stale object that cannot be
 * deleted is only untidy: the next change tries again.
 */
export async function applyTableChange(
  nft: Pick<NftRunner, 'apply' | 'applyText'>,
  desired: DesiredTable,
  actual: ActualTable | null,
  cmds: unknown[],
): Promise<void> {
  const { add, stale } = ctTimeoutChanges(desired, actual);
  // A table that does not exist yet is made with its objects (an empty table), and goes again if the change fails.
  if (add.length) await nft.applyText((actual ? '' : `add table ${desired.family} ${desired.name}\n`) + ctTimeoutText(desired, add));
  try {
    await nft.apply(cmds);
  } catch (e) {
    if (add.length) {
      const undo = actual
        ? ctTimeoutText(
            desired,
            [],
            add.map((o) => o.name),
          )
        : `delete table ${desired.family} ${desired.name}\n`;
      await nft.applyText(undo).catch(() => undefined);
    }
    throw e;
  }
  if (stale.length) await nft.applyText(ctTimeoutText(desired, [], stale)).catch(() => undefined);
}
