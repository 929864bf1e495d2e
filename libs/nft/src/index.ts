// @fwlb/nft: desired nft table model, diff to one transaction, and the nft JSON runner.
export * from './model';
export * from './diff';
export * from './nft-error';
export * from './nft-cli';
export * from './nft-session';
export * from './text';
export * from './elements-netlink';
export * from './transaction';
