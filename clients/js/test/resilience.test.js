// The client through a fault proxy to the real demo server: connections cut and stalled,
// replies lost, the server restarted. Nothing lost, nothing twice, in order.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { directRoom } from '../chat-engine.js';
import { startServer } from './support/server.js';
import { FaultProxy } from './support/proxy.js';
import { connect, unique } from './support/events.js';

let server;
const cleanup = [];
before(async () => {
  server = await startServer();
});
after(async () => {
  for (const f of cleanup.reverse()) await f();
  await server.stop();
});

async function proxy(port = server.port) {
  const p = new FaultProxy(port);
  await p.listen();
  cleanup.push(() => p.close());
  return p;
}

async function user(prefix, url = server.url, options = {}) {
  const name = unique(prefix);
  const c = await connect(url, name, options);
  cleanup.push(() => c.client.close());
  return { name, ...c };
}

const range = (from, to) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

test('a dropped connection resumes: every message once, in order; sends made offline go out', async () => {
  const p = await proxy();
  const alice = await user('alice');
  const bob = await user('bob', p.url);
  const room = unique('resume');
  await alice.client.join(room);
  await bob.client.join(room);
  for (let i = 1; i <= 3; i++) await alice.client.send(room, `m${i}`);
  await bob.rec.untilMessages(room, 3);

  p.mode = 'refuse';
  assert.equal(p.cut(), 1);
  await bob.rec.untilState('reconnecting');
  const offline = bob.client.send(room, 'written offline');
  for (let i = 4; i <= 23; i++) await alice.client.send(room, `m${i}`);
  const attempts = p.accepted;
  await bob.rec.until(() => p.accepted >= attempts + 2, 'two refused reconnect attempts');
  assert.equal(bob.client.state, 'reconnecting');
  p.mode = 'pass';

  const ack = await offline;
  assert.equal(ack.seq, 24);
  const got = await bob.rec.untilMessages(room, 24);
  // Wait a little longer for anything that would come twice.
  await alice.client.send(room, 'm25');
  await bob.rec.untilMessages(room, 25);
  const seen = bob.rec.messages(room);
  assert.deepEqual(seen.map((m) => m.seq), range(1, 25), 'each seq once, in order');
  assert.deepEqual(seen.slice(3, 23).map((m) => m.body), range(4, 23).map((i) => `m${i}`));
  assert.equal(got[23].body, 'written offline');
  const states = bob.rec.of('state').map((s) => s.state);
  assert.deepEqual(states.slice(-2), ['reconnecting', 'online']);
  const aliceSaw = await alice.rec.untilMessages(room, 25);
  assert.deepEqual(aliceSaw.map((m) => m.seq), range(1, 25));
});

test('a send whose reply was lost is retried with the same cid and stored once', async () => {
  const p = await proxy();
  const alice = await user('alice', p.url);
  const bob = await user('bob');
  const room = unique('retry');
  await alice.client.join(room);
  await bob.client.join(room);
  await alice.client.send(room, 'before');

  p.blackholeDown(); // the server hears alice; alice hears nothing
  const sending = alice.client.send(room, 'only once');
  const [, stored] = await bob.rec.untilMessages(room, 2);
  assert.equal(stored.body, 'only once', 'the server stored it');
  p.cut();
  const ack = await sending;
  assert.equal(ack.dup, true, 'the retry was recognised as the same message');
  assert.equal(ack.seq, stored.seq);
  assert.equal(ack.cid, stored.cid);
  await alice.client.send(room, 'after');
  await bob.rec.untilMessages(room, 3);
  const bodies = bob.rec.messages(room).map((m) => m.body);
  assert.deepEqual(bodies, ['before', 'only once', 'after']);
  const own = await alice.rec.untilMessages(room, 3);
  assert.deepEqual(own.map((m) => m.body), ['before', 'only once', 'after'], "alice's own copy arrives once too");

  // The same cid given by the application: a retry too.
  const first = await alice.client.send(room, 'explicit', { cid: 'fixed-cid-1' });
  const again = await alice.client.send(room, 'explicit', { cid: 'fixed-cid-1' });
  assert.deepEqual([again.seq, again.dup, first.dup], [first.seq, true, false]);
});

test('a half-open connection is given up after three silent heartbeats', async () => {
  const p = await proxy();
  const alice = await user('alice', p.url, { heartbeatMs: 200 });
  const bob = await user('bob');
  const room = unique('stall');
  await alice.client.join(room);
  await bob.client.join(room);
  p.stall();
  const stalledAt = Date.now();
  await bob.client.send(room, 'while stalled');
  const lost = await alice.rec.until(() => alice.rec.of('state', (s) => s.state === 'reconnecting')[0], 'reconnecting', 5_000);
  assert.equal(lost.reason, 'the server went silent');
  // Three heartbeats (600 ms) of silence, counted from the last frame heard, which came
  // at most one heartbeat before the stall (the client pings when it hears nothing).
  assert.ok(Date.now() - stalledAt >= 400, 'not after a single silent heartbeat');
  const [m] = await alice.rec.untilMessages(room, 1);
  assert.equal(m.body, 'while stalled');
  assert.equal(alice.client.state, 'online');
});

test('a push lost on the way is fetched from history (gap fill), once and in order', async () => {
  const p = await proxy();
  const alice = await user('alice', p.url);
  const bob = await user('bob');
  const room = unique('gap');
  await alice.client.join(room);
  await bob.client.join(room);
  await bob.client.send(room, 'k1');
  await alice.rec.untilMessages(room, 1);
  p.dropText = (text) => text.startsWith('{"type":"message"') && /"body":"k[23]"/.test(text);
  for (let i = 2; i <= 5; i++) await bob.client.send(room, `k${i}`);
  const got = await alice.rec.untilMessages(room, 5);
  assert.equal(p.dropped.length, 2, 'the proxy dropped the pushes of k2 and k3');
  assert.deepEqual(got.map((m) => [m.seq, m.body]), range(1, 5).map((i) => [i, `k${i}`]));
  p.dropText = null;
  await bob.client.send(room, 'k6');
  const all = await alice.rec.untilMessages(room, 6);
  assert.deepEqual(all.map((m) => m.seq), range(1, 6));
});

test('a push that arrives twice is handed over once', async () => {
  const p = await proxy();
  const alice = await user('alice', p.url);
  const bob = await user('bob');
  const room = unique('twice');
  await alice.client.join(room);
  await bob.client.join(room);
  p.twiceText = (text) => text.startsWith('{"type":"message"');
  for (let i = 1; i <= 3; i++) await bob.client.send(room, `t${i}`);
  await alice.rec.untilMessages(room, 3);
  p.twiceText = null;
  await bob.client.send(room, 't4');
  const got = await alice.rec.untilMessages(room, 4);
  assert.deepEqual(got.map((m) => m.body), ['t1', 't2', 't3', 't4']);
});

test('a room joined on another device is followed and resumed after a reconnect', async () => {
  const p = await proxy();
  const name = unique('alice');
  const phone = await connect(p.url, name); // the client under test
  cleanup.push(() => phone.client.close());
  const laptop = await connect(server.url, name);
  cleanup.push(() => laptop.client.close());
  const bob = await user('bob');
  const room = unique('elsewhere');
  await laptop.client.join(room);
  await phone.rec.until(() => phone.rec.of('member', (m) => m.room === room && m.user === name).length, 'the join on the laptop');
  await bob.client.join(room);
  await bob.client.send(room, 'g1');
  await phone.rec.untilMessages(room, 1);

  p.mode = 'refuse';
  p.cut();
  await phone.rec.untilState('reconnecting');
  for (let i = 2; i <= 6; i++) await bob.client.send(room, `g${i}`);
  p.mode = 'pass';
  const got = await phone.rec.untilMessages(room, 6);
  assert.deepEqual(got.map((m) => m.body), ['g1', 'g2', 'g3', 'g4', 'g5', 'g6']);
  await bob.client.send(room, 'g7');
  const all = await phone.rec.untilMessages(room, 7);
  assert.deepEqual(all.map((m) => m.seq), range(1, 7));
});

test('a server restart resets the rooms; a new epoch of a direct room is a reset too', async () => {
  const first = await startServer();
  let current = first;
  cleanup.push(() => current.stop());
  const pa = await proxy(first.port);
  const pb = await proxy(first.port);
  const alice = await user('alice', pa.url);
  const bob = await user('bob', pb.url);
  const room = unique('restart');
  await alice.client.join(room);
  await alice.client.send(room, 'old 1');
  await alice.client.sendTo(bob.name, 'old dm');
  const dm = directRoom(alice.name, bob.name);
  await bob.rec.untilMessages(dm, 1);
  await alice.rec.untilMessages(room, 1);

  // Alice stays away while the server is replaced by an empty one.
  pa.mode = 'refuse';
  const second = await startServer();
  current = second;
  pa.retarget(second.port);
  pb.retarget(second.port);
  assert.equal(await first.stop(), 0);
  // Bob: his direct room is gone from the new server.
  const bobReset = await bob.rec.until(() => bob.rec.of('reset', (r) => r.room === dm)[0], "bob's reset");
  assert.deepEqual(bobReset, { kind: 'reset', room: dm, epoch: null, seq: 0 });
  await bob.client.sendTo(alice.name, 'new dm');

  pa.mode = 'pass';
  const roomReset = await alice.rec.until(() => alice.rec.of('reset', (r) => r.room === room)[0], 'reset of the room');
  assert.equal(roomReset.epoch, null, 'not a member on the new server');
  const dmReset = await alice.rec.until(() => alice.rec.of('reset', (r) => r.room === dm)[0], 'reset of the direct room');
  assert.equal(typeof dmReset.epoch, 'string', 'the direct room lives again under a new epoch');
  assert.equal(dmReset.seq, 1);
  const page = await alice.client.history(dm);
  assert.deepEqual(page.messages.map((m) => m.body), ['new dm'], 'reloaded after the reset');

  // Seq 1 of the new epoch is a new message, not a duplicate of the old seq 1.
  const rejoined = await alice.client.join(room);
  assert.equal(rejoined.seq, 0);
  await bob.client.join(room);
  await bob.client.send(room, 'new 1');
  const seen = await alice.rec.untilMessages(room, 2);
  assert.deepEqual(seen.map((m) => [m.seq, m.body]), [[1, 'old 1'], [1, 'new 1']]);
  await bob.client.sendTo(alice.name, 'new dm 2');
  const dms = await alice.rec.untilMessages(dm, 2);
  assert.deepEqual(dms.map((m) => [m.seq, m.body]), [[1, 'old dm'], [2, 'new dm 2']]);
});

test('the offline queue is bounded; requests time out; close fails what waits', async () => {
  const p = await proxy();
  p.mode = 'refuse';
  const name = unique('queue');
  const { ChatClient } = await import('../chat-engine.js');
  const { default: WebSocket } = await import('ws');
  const client = new ChatClient({ url: p.url, token: `dev:${name}`, WebSocket, queueLimit: 3, requestTimeout: 60_000, backoffMin: 20, backoffMax: 100 }).start();
  cleanup.push(() => client.close());
  const waiting = [client.join('q1'), client.join('q2'), client.join('q3')];
  await assert.rejects(client.join('q4'), { code: 'queue_full' });
  assert.equal(client.queued, 3);
  p.mode = 'pass';
  const states = await Promise.all(waiting);
  assert.deepEqual(states.map((s) => s.room), ['q1', 'q2', 'q3']);
  client.close();

  p.mode = 'refuse';
  p.cut();
  const slow = new ChatClient({ url: p.url, token: `dev:${name}`, WebSocket, requestTimeout: 300, backoffMin: 20, backoffMax: 100 }).start();
  const started = Date.now();
  await assert.rejects(slow.ping(), { code: 'timeout' });
  assert.ok(Date.now() - started >= 300);
  const parked = slow.join('q5');
  slow.close();
  await assert.rejects(parked, { code: 'closed' });
  assert.equal(slow.state, 'closed');
  // An attempt already under way when it was closed may still reach the proxy: let it.
  await new Promise((r) => setTimeout(r, 150));
  const accepted = p.accepted;
  p.mode = 'pass';
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(p.accepted, accepted + 0, 'a closed client does not reconnect');
});
