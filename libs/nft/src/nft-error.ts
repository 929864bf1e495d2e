// The one error class of libs/nft: what nft, or the kernel through nfnetlink, refused or did not answer; pure layer.

export class NftError extends Error {
  readonly code = 'FWLB_NFT_FAILED';
  constructor(
    message: string,
    readonly stderr: string,
  ) {
    super(message);
    this.name = 'NftError';
  }
}
