#!/usr/bin/env node
// Prints "N passed, N failed" from tap's own closing count line (`# { total: T, pass: P, fail: F, ... }`),
// or with --sum adds up the lines it printed before. A run whose output lacks the line counts as 1 failure.
'use strict';
const fs = require('node:fs');
const [mode, file] = process.argv[2] === '--sum' ? ['sum', process.argv[3]] : ['one', process.argv[2]];
const text = fs.readFileSync(file, 'utf8');
let pass = 0;
let fail = 0;
if (mode === 'sum') {
  for (const m of text.matchAll(/^(\d+) passed, (\d+) failed$/gm)) {
    pass += Number(m[1]);
    fail += Number(m[2]);
  }
} else {
  const all = [...text.matchAll(/^# \{ total: (\d+)(?:, pass: (\d+))?(?:, fail: (\d+))?/gm)];
  const m = all[all.length - 1];
  if (!m) fail = 1;
  else {
    pass = Number(m[2] ?? 0);
    fail = Number(m[3] ?? 0);
  }
}
console.log(`${pass} passed, ${fail} failed`);
