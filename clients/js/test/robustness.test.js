// What a real server never sends: a scripted server that sends garbage, skips seqs and
// answers oddly. The client must skip what it cannot read and carry on.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket, { WebSocketServer } from 'ws';
import { ChatClient } from '../chat-engine.js';
import { Recorder } from './support/events.js';

const servers = [];
after(() =>
  Promise.all(
    servers.map((s) => {
      for (const ws of s.clients) ws.terminate();
      return new Promise((r) => s.close(r));
    }),
  ),
);

/** A server that answers `hello` and then lets the test script the rest. */
async function scripted(onConnection, helloReply) {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  servers.push(wss);
  await new Promise((r) => wss.once('listening', r));
  const received = [];
  wss.on('connection', (ws) => {
    ws.on('message', (data) => {
      const frame = JSON.parse(data.toString());
      received.push(frame);
      if (frame.type === 'hello') {
        ws.send(JSON.stringify(helloReply ?? { type: 'ok', id: frame.id, user: 'alice', session: 's-1', heartbeat_ms: 25000, rooms: [{ room: 'r', epoch: 'e1', seq: 0, read: 0, delivered: 0 }] }));
        onConnection(ws, received);
      } else {
        ws.emit('request', frame);
      }
    });
  });
  return { url: `ws://127.0.0.1:${wss.address().port}/ws`, received, wss };
}

const message = (seq, body = `b${seq}`) => ({ type: 'message', room: 'r', seq, from: 'bob', cid: `c${seq}`, body, ts: 1 });

async function start(url, options = {}) {
  const client = new ChatClient({ url, token: 'dev:alice', WebSocket, backoffMin: 20, backoffMax: 100, ...options });
  const rec = new Recorder(client);
  client.start();
  await rec.untilState('online');
  return { client, rec };
}

test('garbage from the server is skipped; the session goes on', async () => {
  const server = await scripted((ws) => {
    const junk = [
      'not json',
      '[]',
      'null',
      '42',
      '"a string"',
      '{"type":"message"}',
      JSON.stringify({ ...message(1), seq: '1' }),
      JSON.stringify({ ...message(1), seq: -1 }),
      JSON.stringify({ ...message(1), seq: 2 ** 60 }),
      JSON.stringify({ ...message(1), body: { html: '<b>' } }),
      JSON.stringify({ ...message(1), room: null }),
      JSON.stringify({ type: 'receipt', room: 'r' }),
      JSON.stringify({ type: 'typing', room: 'r', user: 'bob', active: 'yes' }),
      JSON.stringify({ type: 'presence', user: {}, status: 'online' }),
      JSON.stringify({ type: 'member', room: 'r', user: 'bob', action: 'explode' }),
      JSON.stringify({ type: 'ok', id: 'x' }),
      JSON.stringify({ type: 'ok', id: 999 }),
      JSON.stringify({ type: 'error', id: -5, code: 7 }),
      JSON.stringify({ type: 'from-the-future', x: 1 }),
      JSON.stringify({ type: '__proto__' }),
    ];
    for (const text of junk) ws.send(text);
    ws.send(Buffer.from([1, 2, 3]), { binary: true });
    ws.send(JSON.stringify(message(1, 'the only good one')));
    ws.send(JSON.stringify({ type: 'error', code: 'rate_limited', message: 'slow down' }));
  });
  const { client, rec } = await start(server.url);
  const errors = await rec.until(() => rec.of('error').length >= 2 && rec.of('error'), 'the error pushes');
  // An error whose id is not usable counts as one without id (and a code that is not a string
  // reads as 'unknown').
  assert.deepEqual(errors.map((e) => [e.code, e.message]), [['unknown', ''], ['rate_limited', 'slow down']]);
  assert.deepEqual(rec.messages('r').map((m) => m.body), ['the only good one']);
  assert.deepEqual(rec.of('receipt'), []);
  assert.deepEqual(rec.of('typing'), []);
  assert.deepEqual(rec.of('presence'), []);
  assert.deepEqual(rec.of('member'), []);
  assert.equal(client.state, 'online');
  assert.equal(rec.of('state').length, 2, 'connecting, online: never lost');
  client.close();
});

test('a gap in the pushes is filled with history before later messages are handed over', async () => {
  const server = await scripted((ws) => {
    ws.send(JSON.stringify(message(1)));
    ws.send(JSON.stringify(message(4)));
    ws.send(JSON.stringify(message(5)));
    ws.on('request', (frame) => {
      if (frame.type !== 'history') return;
      // The reply overlaps what is held: 2 and 3 are new, 4 is not.
      ws.send(JSON.stringify({ type: 'ok', id: frame.id, room: 'r', messages: [message(2), message(3), message(4)], more: false }));
    });
  });
  const { client, rec } = await start(server.url);
  const got = await rec.untilMessages('r', 5);
  assert.deepEqual(got.map((m) => m.seq), [1, 2, 3, 4, 5]);
  const histories = server.received.filter((f) => f.type === 'history');
  assert.equal(histories.length, 1, 'one fill');
  assert.deepEqual({ room: histories[0].room, after: histories[0].after, limit: histories[0].limit }, { room: 'r', after: 1, limit: 2 });
  client.close();
});

test('a malformed hello reply is a lost connection, retried; an error to hello stops the client', async () => {
  let connections = 0;
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  servers.push(wss);
  await new Promise((r) => wss.once('listening', r));
  wss.on('connection', (ws) => {
    connections += 1;
    ws.on('message', (data) => {
      const hello = JSON.parse(data.toString());
      if (connections === 1) ws.send('{"type":"ok","id":0,"user":17}');
      else if (connections === 2) ws.send(JSON.stringify({ type: 'message', ...message(1) }));
      else ws.send(JSON.stringify({ type: 'ok', id: hello.id, user: 'alice', session: 's', heartbeat_ms: 'soon', rooms: 'none' }));
    });
  });
  const { client, rec } = await start(`ws://127.0.0.1:${wss.address().port}/ws`);
  assert.equal(connections, 3);
  const reasons = rec.of('state', (s) => s.reason).map((s) => s.reason);
  assert.match(reasons[0], /hello reply/);
  assert.match(reasons[1], /before the hello reply/);
  client.close();

  const refusing = await scripted(() => {}, { type: 'error', id: 0, code: 'unauthorized', message: 'who are you' });
  await assert.rejects(ChatClient.connect({ url: refusing.url, token: 'x', WebSocket }), { code: 'unauthorized', message: 'who are you' });
});

test("a listener that throws does not break the client", async (t) => {
  const errors = [];
  t.mock.method(console, 'error', (...args) => errors.push(args));
  const server = await scripted((ws) => {
    ws.send(JSON.stringify(message(1)));
    ws.send(JSON.stringify(message(2)));
  });
  const client = new ChatClient({ url: server.url, token: 'dev:alice', WebSocket });
  client.on('message', () => {
    throw new Error('application bug');
  });
  const rec = new Recorder(client);
  client.start();
  const got = await rec.untilMessages('r', 2);
  assert.deepEqual(got.map((m) => m.seq), [1, 2]);
  assert.equal(errors.length, 2, 'each throw is reported');
  client.close();
});

test('options are checked', () => {
  assert.throws(() => new ChatClient(), TypeError);
  assert.throws(() => new ChatClient({ url: 'ws://x', token: 't', WebSocket: 3 }), /WebSocket/);
  const client = new ChatClient({ url: 'ws://127.0.0.1:1/ws', token: 't', WebSocket });
  assert.throws(() => client.on('nonsense', () => {}), /unknown event/);
  client.close();
  assert.equal(client.state, 'closed');
});
