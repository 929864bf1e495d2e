#!/usr/bin/env node
// Captures raw ctnetlink messages from this kernel into test/fixtures (the codec's unit tests read them).
// Run as root: node scripts/capture-ctnetlink.js. It works in a namespace of its own and deletes it.
// conntrack-tools 1.4.7 quirk: `-u STATUS` after `--mark M` overwrites the mark with the status bits, so -u comes first.
'use strict';
const { execFileSync } = require('node:child_process');
const { writeFileSync } = require('node:fs');
const { join } = require('node:path');

const NS = `fwlbcap${process.pid}`;
const sh = (args) => execFileSync(args[0], args.slice(1), { encoding: 'utf8' });
const ins = (args) => sh(['ip', 'netns', 'exec', NS, ...args]);

if (process.argv[2] === '--inside') {
  const { createNetlink } = require('netlink');
  const out = join(__dirname, '..', 'test', 'fixtures');
  const entry = (m) => ({ type: m.type, flags: m.flags, hex: Buffer.from(m.data).toString('hex') });
  (async () => {
    const ct = (args) => execFileSync('conntrack', args, { stdio: 'ignore' });
    ct(['-I', '-p', 'tcp', '-s', '192.0.2.1', '-d', '192.0.2.2', '--sport', '40001', '--dport', '7007', '--state', 'ESTABLISHED', '--timeout', '300', '-u', 'SEEN_REPLY,ASSURED', '--mark', String(0x10001)]);
    ct(['-I', '-p', 'udp', '-s', '192.0.2.1', '-d', '192.0.2.2', '--sport', '40002', '--dport', '7007', '--timeout', '30', '--mark', String(0x10002)]);
    ct(['-I', '-p', 'icmp', '-s', '192.0.2.1', '-d', '192.0.2.2', '--icmp-type', '8', '--icmp-code', '0', '--icmp-id', '77', '--timeout', '30', '--mark', String(0x10003)]);
    const dump = createNetlink(12);
    const [msgs] = await dump.request((1 << 8) | 1, Buffer.from([2, 0, 0, 0]), { flags: 0x300 });
    dump.close();
    writeFileSync(join(out, 'ctnetlink-dump.json'), JSON.stringify(msgs.map(entry), null, 1) + '\n');
    const ev = createNetlink(12);
    ev.addMembership(1);
    ev.addMembership(3);
    const got = [];
    ev.on('message', (ms) => got.push(...ms.map(entry)));
    ct(['-I', '-p', 'udp', '-s', '192.0.2.1', '-d', '192.0.2.2', '--sport', '40003', '--dport', '7007', '--timeout', '30', '--mark', String(0x10001)]);
    ct(['-D', '-p', 'udp', '-s', '192.0.2.1', '--sport', '40003']);
    await new Promise((r) => setTimeout(r, 300));
    ev.close();
    writeFileSync(join(out, 'ctnetlink-events.json'), JSON.stringify(got, null, 1) + '\n');
    console.log(`captured ${msgs.length} dump messages and ${got.length} events`);
  })().catch((e) => {
    console.error(e);
    process.exit(1);
  });
} else {
  sh(['ip', 'netns', 'add', NS]);
  try {
    console.log(ins([process.execPath, __filename, '--inside']).trim());
  } finally {
    sh(['ip', 'netns', 'del', NS]);
  }
}
