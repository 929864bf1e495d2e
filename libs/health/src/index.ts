// @fwlb/health: health checking; for now the pure timer state machine (checkers come with the health issue).
export * from './timer';
