// Makes UDP flows at a given rate, one per source port, in a process of its own (so it competes with nothing it
// measures). For bench/sessions-worker.ts: to 127.0.0.1:9, printing "port time" lines (time in ms since the epoch,
// sub-millisecond: performance.timeOrigin + performance.now()). For bench/churn.ts: to DST:DPORT, source ports
// cycling through PORTS of them, quiet.
//   flow-generator RATE SECONDS PORTBASE [DST DPORT PORTS]
import * as dgram from 'node:dgram';

const [rateS, secondsS, portBaseS, dst = '127.0.0.1', dportS = '9', portsS = '0'] = process.argv.slice(2);
const [rate, seconds, portBase, dport, ports] = [rateS, secondsS, portBaseS, dportS, portsS].map(Number);
const quiet = ports > 0;
const total = rate * seconds;
const now = () => performance.timeOrigin + performance.now();
const t0 = performance.now();
let sent = 0;
let out = '';
const tick = () => {
  const due = Math.min(total, Math.floor(((performance.now() - t0) / 1000) * rate));
  while (sent < due) {
    const port = portBase + (quiet ? sent % ports : sent);
    const s = dgram.createSocket('udp4');
    s.on('error', () => s.close());
    s.bind(port, quiet ? undefined : '127.0.0.1', () => {
      if (!quiet) out += `${port} ${now()}\n`;
      s.send('x', dport, dst, () => s.close());
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
