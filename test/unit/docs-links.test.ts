// Unit: the README stays short, and every relative link in it and in docs/ resolves to a file of the repository.
import { t } from 'tap';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { REPO } from '@fwlb/lab';

const docs = [
  'README.md',
  ...readdirSync(join(REPO, 'docs'))
    .filter((f) => f.endsWith('.md'))
    .map((f) => join('docs', f)),
];

t.test('the README is at most about 200 lines', async (t) => {
  const n = readFileSync(join(REPO, 'README.md'), 'utf8').split('\n').length;
  t.ok(n <= 200, `${n} lines`);
});

t.test('every relative link resolves', async (t) => {
  let links = 0;
  for (const f of docs) {
    // Code spans are not links (a regex pattern in backticks may contain "](").
    const text = readFileSync(join(REPO, f), 'utf8').replace(/`[^`\n]*`/g, '');
    for (const m of text.matchAll(/\]\(([^)\s]+)\)/g)) {
      const target = m[1].split('#')[0];
      if (!target || /^[a-z]+:/.test(target)) continue;
      links++;
      t.ok(existsSync(join(REPO, dirname(f), target)), `${f}: ${m[1]}`);
    }
  }
  t.ok(links >= 10, `${links} links checked`);
});
