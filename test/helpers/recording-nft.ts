// Test helper: an nft runner that records applied batches (and can fail the next one); for tests that do not read the table back.
import { ActualTable, NftJson, NftRunner } from '@fwlb/nft';

export /** Keeps applied batches; can be told to fail the next apply. */
function recordingNft() {
  const batches: NftJson[][] = [];
  let failNext = false;
  const runner: NftRunner & { batches: NftJson[][]; failNext(): void } = {
    batches,
    failNext: () => (failNext = true),
    apply: async (c) => {
      if (failNext) {
        failNext = false;
        throw new Error('nft transaction failed (nothing applied): injected');
      }
      if (c.length) batches.push(c);
    },
    check: async () => undefined,
    list: async () => null,
    json: async () => null,
    applyText: async () => undefined,
    read: async (): Promise<ActualTable | null> => null,
  };
  return runner;
}
