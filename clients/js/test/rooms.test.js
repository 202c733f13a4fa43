// The room bookkeeping alone (no I/O): once, in order, gaps filled, resume points, resets.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RoomTracker, directRoom, directPeer } from '../chat-engine.js';

const msg = (room, seq) => ({ room, seq, from: 'u', cid: `c${seq}`, body: '', ts: 0 });
const state = (room, epoch, seq) => ({ room, epoch, seq, read: 0, delivered: 0 });
const seqs = (messages) => messages.map((m) => m.seq);

test('delivers in order, once, and fills gaps', () => {
  const rooms = new RoomTracker();
  rooms.onHello([state('r', 'e1', 2)]);
  assert.deepEqual(seqs(rooms.offer(msg('r', 3)).deliver), [3]);
  assert.deepEqual(rooms.offer(msg('r', 3)).deliver, [], 'a duplicate is dropped');
  const early = rooms.offer(msg('r', 7));
  assert.deepEqual(early.deliver, []);
  assert.deepEqual(early.fill, { room: 'r', after: 3, limit: 3 }, 'a gap asks for history');
  assert.equal(rooms.offer(msg('r', 8)).fill, null, 'one fill at a time');
  const got = [];
  for (const seq of [4, 5, 6]) got.push(...rooms.offer(msg('r', seq)).deliver);
  assert.deepEqual(seqs(got), [4, 5, 6, 7, 8]);
  assert.equal(rooms.fillDone('r'), null);
  assert.deepEqual(rooms.resumePoints(), { r: { epoch: 'e1', seq: 8 } });
});

test('a fill that brought only part of the gap asks for the rest', () => {
  const rooms = new RoomTracker();
  rooms.onHello([state('r', 'e1', 0)]);
  rooms.offer(msg('r', 1));
  assert.deepEqual(rooms.offer(msg('r', 1200)).fill, { room: 'r', after: 1, limit: 500 });
  const got = [];
  for (let seq = 2; seq <= 501; seq++) got.push(...rooms.offer(msg('r', seq)).deliver);
  assert.equal(got.length, 500);
  assert.deepEqual(rooms.fillDone('r'), { room: 'r', after: 501, limit: 500 });
});

test('pushes racing a join count; pushes racing a leave are not followed', () => {
  const rooms = new RoomTracker();
  rooms.onHello([]);
  const got = [];
  for (const seq of [1, 2]) got.push(...rooms.offer(msg('r', seq)).deliver);
  rooms.onJoinedElsewhere('r');
  assert.equal(rooms.onJoin(state('r', 'e1', 0)), null);
  const next = rooms.offer(msg('r', 3));
  assert.equal(next.fill, null, '#1 and #2 are not missing');
  got.push(...next.deliver);
  assert.deepEqual(seqs(got), [1, 2, 3], 'once each, in order');
  rooms.onLeft('r');
  assert.deepEqual(seqs(rooms.offer(msg('r', 4)).deliver), [4]);
  assert.equal(rooms.last('r'), null, 'a room left is not followed again');
  assert.deepEqual(rooms.resumePoints(), {});
});

test('hello resumes, resets and forgets', () => {
  const rooms = new RoomTracker();
  rooms.onHello([state('a', 'e1', 5), state('b', 'e1', 1), state('c', 'e1', 0)]);
  rooms.offer(msg('a', 6));
  assert.equal(rooms.resumePoints().a.seq, 6);
  const { resets, fills } = rooms.onHello([state('a', 'e1', 9), state('b', 'e2', 4)]);
  assert.deepEqual(fills, []);
  assert.deepEqual(resets, [
    { room: 'b', epoch: 'e2', seq: 4 },
    { room: 'c', epoch: null, seq: 0 },
  ]);
  assert.equal(rooms.last('b'), 4);
  assert.equal(rooms.last('c'), null);
  assert.equal(rooms.last('a'), 6, 'a resumed room keeps its position: the replay follows');
});

test('a room joined elsewhere starts at its first message and is caught up later', () => {
  const rooms = new RoomTracker();
  rooms.onJoinedElsewhere('x');
  assert.deepEqual(rooms.resumePoints(), {}, 'no epoch yet: not resumable');
  assert.deepEqual(seqs(rooms.offer(msg('x', 10)).deliver), [10]);
  const { resets, fills } = rooms.onHello([state('x', 'e1', 14)]);
  assert.deepEqual(resets, []);
  assert.deepEqual(fills, [{ room: 'x', after: 10, limit: 4 }]);
});

test('a join under another epoch is a reset', () => {
  const rooms = new RoomTracker();
  assert.equal(rooms.onJoin(state('r', 'e1', 3)), null);
  assert.deepEqual(rooms.onJoin(state('r', 'e2', 0)), { room: 'r', epoch: 'e2', seq: 0 });
  assert.deepEqual(seqs(rooms.offer(msg('r', 1)).deliver), [1], 'seq 1 of the new epoch is new');
});

test('direct rooms are named by both ids in byte order', () => {
  assert.equal(directRoom('bob', 'alice'), 'dm:alice:bob');
  assert.equal(directRoom('Zed', 'amy'), 'dm:Zed:amy', 'byte order: upper case first');
  assert.equal(directPeer('dm:alice:bob', 'bob'), 'alice');
  assert.equal(directPeer('dm:alice:bob', 'carol'), null);
  assert.equal(directPeer('general', 'bob'), null);
});
