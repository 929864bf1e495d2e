'use strict';
// Entry point of the packaged commands (/usr/bin/fwlb, fwlb-slb, fwlbctl, fwlb-conntrack): checks the Node.js version
// before any of fwlb's code loads, so an old runtime gets a sentence instead of a syntax error from a dependency.
// Plain ES5 on purpose: it must parse on any Node.js an operator may have on PATH.
var path = require('path');
var fs = require('fs');

var COMMANDS = {
  fwlb: 'apps/balancer/dist/main.js',
  'fwlb-slb': 'apps/slb/dist/main.js',
  fwlbctl: 'apps/fwlbctl/dist/main.js',
  'fwlb-conntrack': 'libs/conntrack/dist/cli.js',
};

var name = process.argv[2];
var entry = COMMANDS[name];
if (!entry) {
  process.stderr.write('launch.js: unknown command ' + name + '\n');
  process.exit(2);
}
var engines = JSON.parse(fs.readFileSync(path.join(__dirname, 'package.json'), 'utf8')).engines.node;
var required = Number(/\d+/.exec(engines)[0]);
var major = Number(process.versions.node.split('.')[0]);
if (major < required) {
  process.stderr.write(
    name + ': needs Node.js ' + engines + ', but ' + process.execPath + ' is ' + process.version + '.\n' +
      'Install Node.js ' + required + ' or later (Debian 13 ships it; on Debian 12 use NodeSource or a backport),\n' +
      'or name its binary in FWLB_NODE (e.g. in a systemd drop-in: Environment=FWLB_NODE=/opt/node/bin/node).\n',
  );
  // 3: the host lacks what fwlb needs (the units do not restart on it).
  process.exit(3);
}
process.argv.splice(1, 2, path.join(__dirname, entry));
require(path.join(__dirname, entry));
