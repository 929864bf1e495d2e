// Unit: the handshake timeout policy. Rendered as ct timeout objects that rules at the head of both SYN chains name on
// bare SYNs; declared in text before the transaction that uses them, taken away when that transaction fails, and
// deleted once no rule names them (a changed value is a new object). The fake kernel refuses a rule that names an
// object it lacks and the deletion of an object a rule names, as nft does.
import { t } from 'tap';
import { validateBalancerConfig } from '@fwlb/config';
import { ctTimeoutChanges, ctTimeoutText, tableText } from '@fwlb/nft';
import { bucketTable, Reconciler, renderTable, RenderInput, RoutingPort } from '@fwlb/balancer';
import { fakeNft } from '../helpers/fake-nft';

const base = {
  role: 'outside',
  sideInterface: 'cli0',
  firewalls: [1, 2].map((k) => ({ id: `fw${k}`, nextHop: `172.16.${k}.2`, nextHop6: `2001:db8:${k}::2`, interface: `fw${k}` })),
  hash: { seed: 7 },
};
const routing: RoutingPort = { rules: async () => [], routes: async () => [], apply: async () => [] };
const render = (extra: object = {}) => {
  const config = validateBalancerConfig({ ...base, ...extra });
  const input: RenderInput = { config, live: ['fw1', 'fw2'], restorable: ['fw1', 'fw2'] };
  return renderTable(input, bucketTable(input));
};

t.test('rendered: one policy per family (10 s by default), set on bare SYNs at the head of both SYN chains only', async (t) => {
  const text = tableText(render());
  t.match(text, /ct timeout handshake_10 \{ protocol tcp; l3proto ip; policy = \{ syn_sent: 10, syn_recv: 10 \} \}/);
  t.match(text, /ct timeout handshake_v6_10 \{ protocol tcp; l3proto ip6; policy = \{ syn_sent: 10, syn_recv: 10 \} \}/);
  for (const chain of ['side-syn', 'firewall-syn']) {
    const head = `chain ${chain} {\n    tcp flags & syn,ack syn meta nfproto ipv4 ct timeout set "handshake_10"\n    tcp flags & syn,ack syn meta nfproto ipv6 ct timeout set "handshake_v6_10"\n`;
    t.ok(text.includes(head), `first in ${chain}`);
  }
  t.equal(text.match(/ct timeout set/g)?.length, 4, 'nowhere else: only SYNs reach those chains, so other packets never meet it');
  const off = tableText(render({ handshakeTimeoutSeconds: 0 }));
  t.notMatch(off, /ct timeout/, "0: the kernel's timeouts, nothing rendered");
  t.throws(() => validateBalancerConfig({ ...base, handshakeTimeoutSeconds: 121 }), /handshakeTimeoutSeconds/);
  t.throws(() => validateBalancerConfig({ ...base, handshakeTimeoutSeconds: 2.5 }), /handshakeTimeoutSeconds/);
});

t.test('text commands: built from identifiers and integers only', async (t) => {
  const want = render({ handshakeTimeoutSeconds: 7 });
  const { add, stale } = ctTimeoutChanges(want, null);
  t.same(
    add.map((o) => o.name),
    ['handshake_7', 'handshake_v6_7'],
  );
  t.same(stale, []);
  t.equal(ctTimeoutText(want, add.slice(0, 1)), 'add ct timeout inet fwlb handshake_7 { protocol tcp; l3proto ip; policy = { syn_sent: 7, syn_recv: 7 }; }\n');
  t.equal(ctTimeoutText(want, [], ['handshake_10']), 'delete ct timeout inet fwlb handshake_10\n');
  t.throws(() => ctTimeoutText(want, [], ['x; flush ruleset']), /not an nft identifier/);
  t.throws(() => ctTimeoutText(want, [{ name: 'h', protocol: 'tcp', l3proto: 'ip', policy: { 'syn_sent }; flush ruleset': 1 } }]), /bad ct timeout policy/);
});

t.test('the reconciler declares the objects, swaps them on a change, and leaves nothing behind when a pass fails', async (t) => {
  const nft = fakeNft();
  const r = new Reconciler(validateBalancerConfig(base), nft, routing);
  await r.reconcile();
  t.same([...(await nft.read('inet', 'fwlb'))!.ctTimeouts!].sort(), ['handshake_10', 'handshake_v6_10'], 'a fresh table gets its objects');
  t.match(nft.texts[0], /^add table inet fwlb\nadd ct timeout inet fwlb handshake_10 /, 'declared with the table, before the rules that name them');
  t.match(JSON.stringify(nft.rules.get('side-syn')), /handshake_10/);
  await r.reconcile();
  t.equal(nft.texts.length, 1, 'a pass with nothing to change sends no text');

  const r15 = new Reconciler(validateBalancerConfig({ ...base, handshakeTimeoutSeconds: 15 }), nft, routing);
  nft.failNext();
  await t.rejects(r15.reconcile(), /injected/);
  t.same(
    [...(await nft.read('inet', 'fwlb'))!.ctTimeouts!].sort(),
    ['handshake_10', 'handshake_v6_10'],
    'a failed pass takes the objects it declared away again',
  );
  await r15.reconcile();
  t.same(
    [...(await nft.read('inet', 'fwlb'))!.ctTimeouts!].sort(),
    ['handshake_15', 'handshake_v6_15'],
    'a new value: new objects, the old ones deleted once no rule names them',
  );
  t.match(JSON.stringify(nft.rules.get('firewall-syn')), /handshake_15/);

  const r0 = new Reconciler(validateBalancerConfig({ ...base, handshakeTimeoutSeconds: 0 }), nft, routing);
  await r0.reconcile();
  t.same([...(await nft.read('inet', 'fwlb'))!.ctTimeouts!], [], 'set to 0: the rules and the objects go');
  t.notMatch(JSON.stringify([...nft.rules.values()]), /ct timeout/);
});

t.test('a fresh table whose first pass fails: the table goes again', async (t) => {
  const nft = fakeNft();
  const r = new Reconciler(validateBalancerConfig(base), nft, routing);
  nft.failNext();
  await t.rejects(r.reconcile(), /injected/);
  t.equal(await nft.read('inet', 'fwlb'), null, 'no table left behind');
});
