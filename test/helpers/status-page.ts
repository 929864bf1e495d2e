// Test helper: a node's status page (/ui) in headless Chromium (Debian's, driven by playwright-core), served from the
// node's unix API socket through a TCP proxy on loopback; everything is closed on teardown.
import { createServer, connect } from 'node:net';
import { chromium, Page } from 'playwright-core';

export async function openStatusPage(t: { teardown(f: () => unknown): void }, socketPath: string): Promise<Page> {
  const proxy = createServer((c) => {
    const u = connect({ path: socketPath });
    c.pipe(u).pipe(c);
    c.on('error', () => u.destroy());
    u.on('error', () => c.destroy());
  });
  await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', () => r()));
  t.teardown(() => proxy.close());
  const browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
  });
  t.teardown(() => browser.close());
  const page = await browser.newPage();
  await page.goto(`http://127.0.0.1:${(proxy.address() as { port: number }).port}/ui`);
  return page;
}
