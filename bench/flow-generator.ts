// Runs as a child of bench/sessions-worker.ts, so that making flows does not compete with the sync for its event
// loop: creates one UDP flow per source port on loopback at a given rate and prints "port time" lines (time in ms
// since the epoch, sub-millisecond: performance.timeOrigin + performance.now()).
import * as dgram from 'node:dgram';

const [rate, seconds, portBase] = process.argv.slice(2).map(Number);
const total = rate * seconds;
const now = () => performance.timeOrigin + performance.now();
const t0 = performance.now();
let sent = 0;
let out = '';
const tick = () => {
  const due = Math.min(total, Math.floor(((performance.now() - t0) / 1000) * rate));
  while (sent < due) {
    const port = portBase + sent;
    const s = dgram.createSocket('udp4');
    s.bind(port, '127.0.0.1', () => {
      out += `${port} ${now()}\n`;
      s.send('x', 9, '127.0.0.1', () => s.close());
    });
    sent++;
  }
  if (out) {
    process.stdout.write(out);
    out = '';
  }
  if (sent >= total) {
    setTimeout(() => {
      process.stdout.write(out + `done ${Math.round((total / (performance.now() - t0)) * 1000)}\n`);
      process.exit(0);
    }, 200);
    return;
  }
  setImmediate(tick);
};
tick();
