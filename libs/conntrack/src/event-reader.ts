// The ctnetlink event reader, run as a child process of ConntrackEvents; I/O layer of libs/conntrack.
// Why a process of its own: when the kernel drops events it reports ENOBUFS on the socket, and the `netlink`
// addon (0.3.x) aborts the whole process on that error ("terminate called after throwing an instance of
// 'Napi::Error'", reproduced here with a 4 KiB buffer and 2,000 new flows). Isolated here, the abort is the
// loss signal: the parent counts it, re-syncs from a dump and starts a new reader.
import { createNetlink } from 'netlink';
import { eventKind, NFNLGRP_CONNTRACK_DESTROY, NFNLGRP_CONNTRACK_NEW, NFNLGRP_CONNTRACK_UPDATE, parseEntry } from './codec';

const NETLINK_NETFILTER = 12;
const [kinds, rcvbuf] = [process.argv[2] ?? 'new,destroy', Number(process.argv[3] ?? 8 << 20)];
const sock = createNetlink(NETLINK_NETFILTER, { recvBufferSize: rcvbuf, sendBufferSize: 1 << 16 } as never);
if (kinds.includes('new')) sock.addMembership(NFNLGRP_CONNTRACK_NEW);
if (kinds.includes('update')) sock.addMembership(NFNLGRP_CONNTRACK_UPDATE);
if (kinds.includes('destroy')) sock.addMembership(NFNLGRP_CONNTRACK_DESTROY);
sock.ref();
sock.on('message', (msgs) => {
  let out = '';
  for (const m of msgs) {
    const kind = eventKind(m.type, m.flags);
    if (!kind) continue;
    const entry = parseEntry(m.data);
    if (entry) out += JSON.stringify({ kind, entry }) + '\n';
  }
  if (out) process.stdout.write(out);
});
process.stdout.write(JSON.stringify({ ready: true }) + '\n');
// --stall MS (tests only): block the event loop once, as a slow consumer would.
const stall = Number(process.argv[4] ?? 0);
if (stall)
  setTimeout(() => {
    const end = Date.now() + stall;
    while (Date.now() < end);
  }, 100);
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
