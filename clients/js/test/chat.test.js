// The client against the real demo server: rooms, direct chats, receipts, typing,
// presence, members, history, refusals.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { ChatClient, ChatError, directRoom } from '../chat-engine.js';
import { startServer } from './support/server.js';
import { connect, unique } from './support/events.js';

let server;
const clients = [];
before(async () => {
  server = await startServer();
});
after(async () => {
  for (const c of clients) c.close();
  assert.equal(await server.stop(), 0, 'the server shuts down cleanly on SIGINT');
});

async function user(prefix, options) {
  const name = unique(prefix);
  const c = await connect(server.url, name, options);
  clients.push(c.client);
  return { name, ...c };
}

test('two users chat in a room: once each, in order, the sender matching its own by cid', async () => {
  const alice = await user('alice');
  const bob = await user('bob');
  const room = unique('general');
  const joined = await alice.client.join(room);
  assert.equal(joined.seq, 0);
  assert.match(joined.epoch, /^[A-Za-z0-9._:-]+$/);
  await bob.client.join(room);
  const acks = [];
  for (let i = 1; i <= 5; i++) acks.push(await alice.client.send(room, `hello ${i}`));
  acks.push(await bob.client.send(room, 'hi alice'));
  assert.deepEqual(acks.map((a) => a.seq), [1, 2, 3, 4, 5, 6]);
  assert.ok(acks.every((a) => a.dup === false && a.room === room));
  for (const who of [alice, bob]) {
    const got = await who.rec.untilMessages(room, 6);
    assert.deepEqual(got.map((m) => m.seq), [1, 2, 3, 4, 5, 6]);
    assert.deepEqual(got.map((m) => m.body), ['hello 1', 'hello 2', 'hello 3', 'hello 4', 'hello 5', 'hi alice']);
  }
  const own = alice.rec.messages(room).filter((m) => m.from === alice.name);
  assert.deepEqual(own.map((m) => m.cid), acks.slice(0, 5).map((a) => a.cid));
  assert.equal(bob.rec.messages(room)[5].from, bob.name);
  // Membership: both see bob's join.
  await alice.rec.until(() => alice.rec.of('member', (m) => m.room === room && m.user === bob.name && m.action === 'join').length === 1, "bob's join");
});

test('a direct chat: the room is made by the first send, both become members', async () => {
  const alice = await user('alice');
  const bob = await user('bob');
  const dm = directRoom(alice.name, bob.name);
  const ack = await alice.client.sendTo(bob.name, 'psst', { meta: { kind: 'whisper' } });
  assert.equal(ack.room, dm);
  assert.equal(ack.seq, 1);
  const [got] = await bob.rec.untilMessages(dm, 1);
  assert.equal(got.body, 'psst');
  assert.equal(got.from, alice.name);
  assert.deepEqual(got.meta, { kind: 'whisper' });
  await bob.rec.until(() => bob.rec.of('member', (m) => m.room === dm && m.user === bob.name).length, 'bob made a member');
  // Bob answers in the room by id, and alice by `to` again.
  await bob.client.send(dm, 'yes?');
  await alice.client.sendTo(bob.name, 'later');
  const seen = await bob.rec.untilMessages(dm, 3);
  assert.deepEqual(seen.map((m) => [m.seq, m.body]), [[1, 'psst'], [2, 'yes?'], [3, 'later']]);
  const page = await bob.client.history(dm);
  assert.deepEqual(page.messages.map((m) => m.body), ['psst', 'yes?', 'later']);
  assert.equal(page.more, false);
  // Nobody else may look in.
  const carol = await user('carol');
  await assert.rejects(carol.client.history(dm), (e) => e instanceof ChatError && e.code === 'forbidden');
  await assert.rejects(carol.client.join(dm), { code: 'forbidden' });
});

test('receipts: read marks reach the sender, cursors show in members', async () => {
  const alice = await user('alice');
  const bob = await user('bob');
  const room = unique('receipts');
  await alice.client.join(room);
  await bob.client.join(room);
  for (let i = 1; i <= 3; i++) await alice.client.send(room, `m${i}`);
  await bob.rec.untilMessages(room, 3);
  await bob.client.markDelivered(room, 3);
  const delivered = await alice.rec.until(() => alice.rec.of('receipt', (r) => r.room === room && r.user === bob.name && r.delivered === 3)[0], 'delivered 3');
  assert.equal(delivered.read, 0);
  await bob.client.markRead(room, 2);
  const read = await alice.rec.until(() => alice.rec.of('receipt', (r) => r.room === room && r.read === 2)[0], 'read 2');
  assert.equal(read.user, bob.name);
  const members = await alice.client.members(room);
  const b = members.find((m) => m.user === bob.name);
  assert.deepEqual([b.read, b.delivered, b.status], [2, 3, 'online']);
  assert.equal(bob.rec.of('receipt', (r) => r.user === bob.name).length, 0, "one's own receipt is not pushed back to the same connection");
});

test('typing: others see it start and stop; only while online', async () => {
  const alice = await user('alice');
  const bob = await user('bob');
  const room = unique('typing');
  await alice.client.join(room);
  await bob.client.join(room);
  assert.equal(alice.client.typing(room, true), true);
  await bob.rec.until(() => bob.rec.of('typing', (t) => t.room === room && t.user === alice.name && t.active).length, 'typing on');
  alice.client.typing(room, false);
  await bob.rec.until(() => bob.rec.of('typing', (t) => t.room === room && !t.active).length, 'typing off');
  assert.equal(alice.rec.of('typing').length, 0, 'the typer does not hear itself');
  alice.client.close();
  assert.equal(alice.client.typing(room, true), false, 'not sent once closed');
});

test('presence: a user who shares a room goes offline and comes back', async () => {
  const alice = await user('alice');
  const bob = await user('bob');
  const room = unique('presence');
  await alice.client.join(room);
  await bob.client.join(room);
  const [p] = await alice.client.presence([bob.name, 'nobody-ever']);
  assert.equal(p.status, 'online');
  bob.client.close();
  const off = await alice.rec.until(() => alice.rec.of('presence', (e) => e.user === bob.name && e.status === 'offline')[0], 'bob offline');
  assert.ok(off.last_seen > 0);
  const bob2 = await connect(server.url, bob.name);
  clients.push(bob2.client);
  await alice.rec.until(() => alice.rec.of('presence', (e) => e.user === bob.name && e.status === 'online').length, 'bob online again');
  const users = await alice.client.presence(['nobody-ever']);
  assert.deepEqual(users, [{ user: 'nobody-ever', status: 'offline', last_seen: null }]);
});

test('history pages backwards and forwards', async () => {
  const alice = await user('alice');
  const room = unique('history');
  await alice.client.join(room);
  for (let i = 1; i <= 12; i++) await alice.client.send(room, `n${i}`);
  const latest = await alice.client.history(room, { limit: 5 });
  assert.deepEqual(latest.messages.map((m) => m.seq), [8, 9, 10, 11, 12]);
  assert.equal(latest.more, true);
  const older = await alice.client.history(room, { before: 8, limit: 5 });
  assert.deepEqual(older.messages.map((m) => m.seq), [3, 4, 5, 6, 7]);
  const oldest = await alice.client.history(room, { before: 3, limit: 5 });
  assert.deepEqual(oldest.messages.map((m) => m.seq), [1, 2]);
  assert.equal(oldest.more, false);
  const forward = await alice.client.history(room, { after: 10 });
  assert.deepEqual(forward.messages.map((m) => m.body), ['n11', 'n12']);
  assert.equal(forward.more, false);
});

test('refusals come back as ChatError with the protocol code', async () => {
  const alice = await user('alice');
  await assert.rejects(alice.client.join('bad room!'), { name: 'ChatError', code: 'bad_request' });
  await assert.rejects(alice.client.send(unique('notjoined'), 'x'), { code: 'forbidden' });
  const room = unique('big');
  await alice.client.join(room);
  await assert.rejects(alice.client.send(room, 'x'.repeat(16_385)), { code: 'too_large' });
  // Over the frame limit the server would close the connection (1009): refused before sending,
  // without a reconnect. (Control characters take six bytes each once escaped in JSON.)
  await assert.rejects(alice.client.send(room, '\u0001'.repeat(12_000)), { code: 'too_large', message: /frame limit/ });
  await assert.rejects(alice.client.send(room, 'y'.repeat(70_000)), { code: 'too_large' });
  assert.equal(alice.rec.of('state').length, 2, 'connecting, online: the connection stayed up');
  await assert.rejects(alice.client.sendMessage({ room, to: 'bob', body: 'x' }), TypeError);
  // The session survives all of it.
  assert.equal((await alice.client.send(room, 'still here')).seq, 1);
  assert.equal(alice.client.state, 'online');
});

test('a bad token closes the client for good; a dead address fails the first connect', async () => {
  await assert.rejects(ChatClient.connect({ url: server.url, token: 'nope', WebSocket }), { code: 'unauthorized' });
  const started = new ChatClient({ url: server.url, token: 'dev:', WebSocket }).start();
  const closed = await new Promise((resolve) => started.on('state', (s) => s.state === 'closed' && resolve(s)));
  assert.match(closed.reason, /unauthori|4001/);
  await assert.rejects(started.join('general'), { code: 'closed' });
  // Port 1 on loopback: nothing listens there.
  await assert.rejects(ChatClient.connect({ url: 'ws://127.0.0.1:1/ws', token: 'dev:x', WebSocket }), { code: 'connect' });
});
