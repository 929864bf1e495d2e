// @fwlb/session-table: the twin nodes' shared state in Redis: sessions, bucket epochs, health views, notifications.
export * from './options';
export * from './session-key';
export * from './session-table';
export * from './control';
export * from './scripts';
export * from './agreement';
