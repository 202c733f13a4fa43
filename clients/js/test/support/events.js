// Records a client's events and waits for conditions on them, bounded in time.
import { ChatClient } from '../../chat-engine.js';
import WebSocket from 'ws';

const KINDS = ['message', 'receipt', 'typing', 'presence', 'member', 'reset', 'state', 'error'];

export class Recorder {
  /** @param {ChatClient} client */
  constructor(client) {
    this.client = client;
    this.events = [];
    this.waiters = new Set();
    for (const kind of KINDS) {
      client.on(kind, (event) => {
        this.events.push({ kind, ...event });
        for (const waiter of [...this.waiters]) waiter();
      });
    }
  }

  of(kind, filter = () => true) {
    return this.events.filter((e) => e.kind === kind && filter(e));
  }

  messages(room) {
    return this.of('message', (m) => m.room === room);
  }

  /** Resolves with `check()`'s first truthy value, re-checked after each event. */
  until(check, what = 'a condition', ms = 10_000) {
    return new Promise((resolve, reject) => {
      const done = () => {
        const value = check();
        if (!value) return;
        clearTimeout(timer);
        clearInterval(poll);
        this.waiters.delete(done);
        resolve(value);
      };
      const timer = setTimeout(() => {
        clearInterval(poll);
        this.waiters.delete(done);
        reject(new Error(`timed out after ${ms} ms waiting for ${what}; events: ${JSON.stringify(this.events.slice(-12))}`));
      }, ms);
      // Some conditions depend on the client's state rather than an event.
      const poll = setInterval(done, 50);
      this.waiters.add(done);
      done();
    });
  }

  /** Waits until `room` holds `n` messages (and no more may come in between checks). */
  untilMessages(room, n, ms) {
    return this.until(() => this.messages(room).length >= n && this.messages(room), `${n} messages in ${room}`, ms);
  }

  untilState(state, ms) {
    return this.until(() => this.client.state === state, `state ${state}`, ms);
  }
}

let serial = 0;
/** A unique name per test run, so that tests sharing a server do not meet. */
export function unique(prefix) {
  serial += 1;
  return `${prefix}${process.pid}x${serial}`;
}

/** Connects `user` to `url` and records its events. */
export async function connect(url, user, options = {}) {
  const client = new ChatClient({ url, token: `dev:${user}`, WebSocket, backoffMin: 20, backoffMax: 200, ...options });
  const recorder = new Recorder(client);
  client.start();
  await recorder.untilState('online');
  return { client, rec: recorder };
}
