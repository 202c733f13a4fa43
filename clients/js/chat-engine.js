// chat-engine.js — the JavaScript client of chat-engine (protocol v1 over WebSocket).
//
// A zero-dependency ES module for browsers and Node 20+. It behaves like the Rust client
// (chat-client): it reconnects by itself with backoff and jitter, resumes every room from
// the last (epoch, seq) it handed over, delivers each message once and in order per room,
// fills gaps from `history`, retries unanswered requests after a reconnect (a send keeps
// its `cid`, so the server stores it once), queues requests while offline (bounded), and
// treats a server silent for three heartbeats as gone.
//
//   import { ChatClient } from './chat-engine.js';
//   const client = await ChatClient.connect({ url: 'ws://127.0.0.1:8080/ws', token: 'dev:alice' });
//   client.on('message', (m) => console.log(`[${m.room}] ${m.from}: ${m.body}`));
//   await client.join('general');
//   await client.send('general', 'hello');
//
// Types: chat-engine.d.ts beside this file.

/** Messages kept ahead of a gap per room; later ones are fetched again with `history`. */
const MAX_EARLY = 10_000;
/** Messages asked for per gap-filling `history` request. */
const FILL_PAGE = 500;
/** The id of `hello`; requests on a connection count from 1. */
const HELLO_ID = 0;
const CLOSE_UNAUTHORIZED = 4001;
/** The server closes the connection (1009) on a WebSocket message larger than this. */
const MAX_FRAME_BYTES = 65_536;
/** Room for the `"id":N` the frame gets when it is sent. */
const ID_BYTES = 32;

/** Why a call failed: a protocol error `code` of the server, or one of the client's own. */
export class ChatError extends Error {
  /**
   * @param {string} code `bad_request`, `unauthorized`, `forbidden`, `not_found`, `too_large`,
   *   `rate_limited`, `unavailable`, `internal` (the server's), or `closed`, `timeout`,
   *   `queue_full`, `connect`, `protocol` (the client's)
   * @param {string} message
   */
  constructor(code, message) {
    super(message);
    this.name = 'ChatError';
    this.code = code;
  }
}

// ---------------------------------------------------------------------------------------
// Validation of what the server sends: a frame that does not fit is skipped, never trusted.

const isObject = (v) => typeof v === 'object' && v !== null && !Array.isArray(v);
const isName = (v) => typeof v === 'string' && v.length > 0 && v.length <= 256;
const isCount = (v) => Number.isSafeInteger(v) && v >= 0;
const isSeq = (v) => Number.isSafeInteger(v) && v >= 1;

/** A `message` object (push or history element) as the application gets it, or null. */
function readMessage(f) {
  if (!isObject(f) || !isName(f.room) || !isSeq(f.seq) || !isName(f.from)) return null;
  if (typeof f.cid !== 'string' || typeof f.body !== 'string') return null;
  const message = {
    room: f.room,
    seq: f.seq,
    from: f.from,
    cid: f.cid,
    body: f.body,
    ts: Number.isFinite(f.ts) ? f.ts : 0,
  };
  if (isObject(f.meta)) message.meta = f.meta;
  return message;
}

/** A room state (`hello` rooms, `join` reply), or null. */
function readRoomState(f) {
  if (!isObject(f) || !isName(f.room) || !isName(f.epoch) || !isCount(f.seq)) return null;
  return {
    room: f.room,
    epoch: f.epoch,
    seq: f.seq,
    read: isCount(f.read) ? f.read : 0,
    delivered: isCount(f.delivered) ? f.delivered : 0,
  };
}

function readPresence(f) {
  if (!isObject(f) || !isName(f.user)) return null;
  if (f.status !== 'online' && f.status !== 'offline') return null;
  return { user: f.user, status: f.status, last_seen: Number.isFinite(f.last_seen) ? f.last_seen : null };
}

function readReceipt(f) {
  if (!isObject(f) || !isName(f.room) || !isName(f.user)) return null;
  if (!isCount(f.delivered) && !isCount(f.read)) return null;
  const receipt = { room: f.room, user: f.user };
  if (isCount(f.delivered)) receipt.delivered = f.delivered;
  if (isCount(f.read)) receipt.read = f.read;
  return receipt;
}

function readTyping(f) {
  if (!isObject(f) || !isName(f.room) || !isName(f.user) || typeof f.active !== 'boolean') return null;
  return { room: f.room, user: f.user, active: f.active };
}

function readMember(f) {
  if (!isObject(f) || !isName(f.room) || !isName(f.user)) return null;
  if (f.action !== 'join' && f.action !== 'leave') return null;
  return { room: f.room, user: f.user, action: f.action };
}

function readMemberInfo(f) {
  const presence = readPresence(f);
  if (!presence) return null;
  return { ...presence, read: isCount(f.read) ? f.read : 0, delivered: isCount(f.delivered) ? f.delivered : 0 };
}

// ---------------------------------------------------------------------------------------
// Rooms: what the client knows of each room. Pure logic, no I/O (as chat-client's rooms.rs).

class Track {
  constructor(epoch = null, seq = null) {
    /** @type {string|null} */
    this.epoch = epoch;
    /** The last seq handed to the application; null until the first message says where
     * the room starts (a room joined on another device). @type {number|null} */
    this.last = seq;
    /** The highest seq heard of. */
    this.known = seq ?? 0;
    /** Messages that came ahead of a gap, by seq. @type {Map<number, object>} */
    this.early = new Map();
    this.filling = false;
  }

  /** Moves contiguous early messages to `out`. */
  drain(out) {
    if (this.early.size === 0) return;
    for (;;) {
      const next = (this.last ?? 0) + 1;
      const message = this.early.get(next);
      if (!message) break;
      this.early.delete(next);
      out.push(message);
      this.last = next;
    }
    const last = this.last ?? 0;
    for (const seq of this.early.keys()) if (seq <= last) this.early.delete(seq);
  }

  /** The fill this room needs now, if any. */
  fill(room) {
    const last = this.last;
    if (last === null || this.filling || this.known <= last) return null;
    let upto = this.known;
    for (const seq of this.early.keys()) upto = Math.min(upto, seq - 1);
    if (upto <= last) return null;
    this.filling = true;
    return { room, after: last, limit: Math.min(upto - last, FILL_PAGE) };
  }
}

/**
 * Every room the client follows: hands each (room, seq) over once and in order, holds
 * messages that came ahead of a gap, and says which `history` request fills the gap.
 * The client drives it; exported for tests and for those who write their own transport.
 */
export class RoomTracker {
  constructor() {
    /** @type {Map<string, Track>} */
    this.map = new Map();
    /** Rooms left in this session: a push that raced the leave is not followed. */
    this.left = new Set();
  }

  /** The resume map for `hello`: every room with a known epoch and position. */
  resumePoints() {
    const points = {};
    for (const [room, track] of this.map) {
      if (track.epoch !== null && track.last !== null) points[room] = { epoch: track.epoch, seq: track.last };
    }
    return points;
  }

  /** Whether `room` is followed without knowing its epoch (joined elsewhere). */
  epochUnknown(room) {
    const track = this.map.get(room);
    return track !== undefined && track.epoch === null;
  }

  /** The last seq handed over for `room` (null when unknown). */
  last(room) {
    return this.map.get(room)?.last ?? null;
  }

  /**
   * A message, pushed live, replayed, or read to fill a gap.
   * @returns {{deliver: object[], fill: {room: string, after: number, limit: number}|null}}
   */
  offer(message) {
    const room = message.room;
    if (this.left.has(room)) return { deliver: [message], fill: null };
    let track = this.map.get(room);
    if (!track) {
      // A push racing a join counts: the join's reply must not start the room below it.
      track = new Track();
      this.map.set(room, track);
    }
    const seq = message.seq;
    track.known = Math.max(track.known, seq);
    const deliver = [];
    if (track.last === null || seq === track.last + 1) {
      track.last = seq;
      deliver.push(message);
      track.drain(deliver);
    } else if (seq > track.last + 1 && track.early.size < MAX_EARLY) {
      track.early.set(seq, message);
    }
    return { deliver, fill: track.fill(room) };
  }

  /** A gap-filling request finished (whatever it brought); another may be needed. */
  fillDone(room) {
    const track = this.map.get(room);
    if (!track) return null;
    track.filling = false;
    return track.fill(room);
  }

  /** A fill was abandoned (the connection was lost): the next session decides again. */
  fillAbandoned(room) {
    const track = this.map.get(room);
    if (track) track.filling = false;
  }

  /**
   * The rooms of a `hello` reply: rooms resumed under the same epoch replay by themselves;
   * a changed epoch or a vanished room is a reset; a room whose epoch was unknown is caught
   * up with `history`; new rooms start at their latest seq.
   */
  onHello(rooms) {
    this.left.clear();
    const resets = [];
    const fills = [];
    const seen = new Set();
    for (const state of rooms) {
      seen.add(state.room);
      let track = this.map.get(state.room);
      if (!track) {
        track = new Track();
        this.map.set(state.room, track);
      }
      track.filling = false;
      if (track.epoch !== null && track.last !== null && track.epoch === state.epoch) continue;
      if (track.epoch === null && track.last !== null) {
        track.epoch = state.epoch;
        track.known = Math.max(track.known, state.seq);
        if (state.seq > track.last) {
          const fill = track.fill(state.room);
          if (fill) fills.push(fill);
        }
      } else if (track.epoch === null) {
        this.map.set(state.room, new Track(state.epoch, state.seq));
      } else {
        resets.push({ room: state.room, epoch: state.epoch, seq: state.seq });
        this.map.set(state.room, new Track(state.epoch, state.seq));
      }
    }
    for (const room of [...this.map.keys()]) {
      if (!seen.has(room)) {
        this.map.delete(room);
        resets.push({ room, epoch: null, seq: 0 });
      }
    }
    return { resets, fills };
  }

  /** The reply to `join`: a new room starts at its latest seq; another epoch is a reset. */
  onJoin(state) {
    this.left.delete(state.room);
    const track = this.map.get(state.room);
    if (!track) {
      this.map.set(state.room, new Track(state.epoch, state.seq));
      return null;
    }
    if (track.epoch === state.epoch) return null;
    if (track.epoch === null) {
      track.epoch = state.epoch;
      if (track.last === null) this.map.set(state.room, new Track(state.epoch, state.seq));
      return null;
    }
    this.map.set(state.room, new Track(state.epoch, state.seq));
    return { room: state.room, epoch: state.epoch, seq: state.seq };
  }

  /** This user became a member elsewhere (another device, someone's `to` send). */
  onJoinedElsewhere(room) {
    this.left.delete(room);
    if (!this.map.has(room)) this.map.set(room, new Track());
  }

  /** This user left the room. */
  onLeft(room) {
    this.map.delete(room);
    this.left.add(room);
  }
}

// ---------------------------------------------------------------------------------------
// The client.

const encoder = new TextEncoder();
const utf8Length = (text) => encoder.encode(text).length;

function randomHex(bytes) {
  const buf = new Uint8Array(bytes);
  globalThis.crypto.getRandomValues(buf);
  return Array.from(buf, (b) => b.toString(16).padStart(2, '0')).join('');
}

/** A fresh client message id. */
export function newCid() {
  return `c-${randomHex(16)}`;
}

/**
 * The direct room of two users: `dm:` + both ids in byte order, joined by `:`.
 * @param {string} a
 * @param {string} b
 */
export function directRoom(a, b) {
  return a < b ? `dm:${a}:${b}` : `dm:${b}:${a}`;
}

/** The other user of a direct room, seen by `me` (null when `room` is not one of `me`'s). */
export function directPeer(room, me) {
  if (typeof room !== 'string' || !room.startsWith('dm:')) return null;
  const [a, b, rest] = room.slice(3).split(':');
  if (rest !== undefined || !a || !b) return null;
  if (a === me) return b;
  if (b === me) return a;
  return null;
}

const DEFAULTS = {
  backoffMin: 100,
  backoffMax: 10_000,
  connectTimeout: 10_000,
  requestTimeout: 60_000,
  queueLimit: 1_000,
  heartbeatMs: null,
};

const EVENTS = ['message', 'receipt', 'typing', 'presence', 'member', 'reset', 'state', 'error'];

/**
 * A chat-engine client. `ChatClient.connect(options)` waits for the first session;
 * `new ChatClient(options).start()` connects in the background (requests wait meanwhile).
 */
export class ChatClient {
  /** @param {import('./chat-engine.js').ChatClientOptions} options */
  constructor(options) {
    if (!isObject(options)) throw new TypeError('ChatClient: options { url, token } are required');
    const { url, token } = options;
    if (typeof url !== 'string' || url === '') throw new TypeError('ChatClient: `url` must be a ws:// or wss:// URL');
    if (typeof token !== 'string') throw new TypeError('ChatClient: `token` must be a string');
    const WebSocketImpl = options.WebSocket ?? globalThis.WebSocket;
    if (typeof WebSocketImpl !== 'function') {
      throw new TypeError('ChatClient: no WebSocket here; pass one as the `WebSocket` option (e.g. from the `ws` package)');
    }
    this._url = url;
    this._token = token;
    this._WebSocket = WebSocketImpl;
    const o = { ...DEFAULTS };
    for (const key of Object.keys(DEFAULTS)) if (options[key] !== undefined) o[key] = options[key];
    o.backoffMin = Math.max(1, Number(o.backoffMin) || DEFAULTS.backoffMin);
    o.backoffMax = Math.max(o.backoffMin, Number(o.backoffMax) || DEFAULTS.backoffMax);
    o.queueLimit = Math.max(1, Math.floor(Number(o.queueLimit) || DEFAULTS.queueLimit));
    this._options = o;

    this._listeners = new Map(EVENTS.map((e) => [e, new Set()]));
    this._rooms = new RoomTracker();
    /** Requests waiting for their reply, in the order they were made. */
    this._pending = [];
    this._nextWire = 1;
    this._state = 'idle';
    this._stateInfo = { state: 'idle' };
    this._everOnline = false;
    this._user = null;
    this._session = null;
    this._heartbeat = 25_000;
    this._lastHeard = 0;
    this._socket = null;
    this._online = false;
    this._endSession = null;
    this._wake = null;
    this._ticker = null;
    this._first = null;
    this._closing = false;
    this._retryNow = null;
    this._network = null;
  }

  /**
   * Connects and waits for the first session; rejects (and stops) if the first attempt
   * fails or the token is refused. After that it reconnects by itself.
   * @returns {Promise<ChatClient>}
   */
  static connect(options) {
    const client = new ChatClient(options);
    return new Promise((resolve, reject) => {
      client._first = { resolve: () => resolve(client), reject };
      client.start();
    });
  }

  /** Starts connecting in the background (idempotent). Returns the client. */
  start() {
    if (this._state !== 'idle') return this;
    this._run();
    return this;
  }

  /** 'idle' | 'connecting' | 'online' | 'reconnecting' | 'closed' */
  get state() {
    return this._state;
  }

  /** Whether a session is open right now. */
  get connected() {
    return this._online;
  }

  /** The user the server authenticated (once online). */
  get user() {
    return this._user;
  }

  /** The current session id (once online). */
  get session() {
    return this._session;
  }

  /** How many requests wait for a reply or a connection. */
  get queued() {
    return this._pending.filter((p) => !p.internal).length;
  }

  // --- events ---------------------------------------------------------------------------

  /**
   * Listens to `type`: 'message', 'receipt', 'typing', 'presence', 'member', 'reset',
   * 'state', 'error'. Returns a function that removes the listener.
   */
  on(type, listener) {
    const set = this._listeners.get(type);
    if (!set) throw new TypeError(`ChatClient: unknown event ${JSON.stringify(type)} (one of ${EVENTS.join(', ')})`);
    if (typeof listener !== 'function') throw new TypeError('ChatClient: a listener must be a function');
    set.add(listener);
    return () => set.delete(listener);
  }

  /** Removes a listener. */
  off(type, listener) {
    this._listeners.get(type)?.delete(listener);
  }

  /** Listens to the next `type` event only. */
  once(type, listener) {
    const off = this.on(type, (event) => {
      off();
      listener(event);
    });
    return off;
  }

  _emit(type, event) {
    for (const listener of [...this._listeners.get(type)]) {
      try {
        listener(event);
      } catch (error) {
        // The application's bug must not break the client's bookkeeping.
        console.error(`chat-engine: a '${type}' listener threw`, error);
      }
    }
  }

  _setState(state, info = {}) {
    this._state = state;
    this._stateInfo = { state, ...info };
    this._emit('state', this._stateInfo);
  }

  // --- requests -------------------------------------------------------------------------

  /**
   * Sends `body` to `room`; resolves once the message is stored.
   * @param {{cid?: string, meta?: object}} [options]
   */
  send(room, body, options = {}) {
    return this.sendMessage({ ...options, room, body });
  }

  /** Sends `body` to `user` in the direct room (made if needed). */
  sendTo(user, body, options = {}) {
    return this.sendMessage({ ...options, to: user, body });
  }

  /** Sends a message with every option: `{room | to, body, meta?, cid?}`. */
  sendMessage(message) {
    if (!isObject(message)) return Promise.reject(new TypeError('sendMessage: a message object is required'));
    const { room, to, body, meta } = message;
    if (typeof body !== 'string') return Promise.reject(new TypeError('send: `body` must be a string'));
    if ((room === undefined) === (to === undefined)) {
      return Promise.reject(new TypeError('send: give exactly one of `room` and `to`'));
    }
    if (meta !== undefined && !isObject(meta)) return Promise.reject(new TypeError('send: `meta` must be an object'));
    const cid = message.cid ?? newCid();
    const frame = { type: 'send' };
    if (room !== undefined) frame.room = room;
    else frame.to = to;
    frame.cid = cid;
    frame.body = body;
    if (meta !== undefined) frame.meta = meta;
    return this._request(frame).then((r) => {
      if (!isName(r.room) || !isSeq(r.seq)) throw new ChatError('protocol', 'malformed send reply');
      return { room: r.room, seq: r.seq, ts: Number.isFinite(r.ts) ? r.ts : 0, cid, dup: r.dup === true };
    });
  }

  /** Joins `room` (made if it does not exist); resolves with its state for this user. */
  join(room) {
    return this._request({ type: 'join', room }).then((r) => {
      const state = readRoomState(r);
      if (!state) throw new ChatError('protocol', 'malformed join reply');
      return state;
    });
  }

  /** Leaves `room`. */
  leave(room) {
    return this._request({ type: 'leave', room }).then(() => undefined);
  }

  /**
   * A page of `room`'s history: the latest, or `{before: seq}` / `{after: seq}`; `limit`
   * defaults to the server's 50. Resolves with `{room, messages, more}`.
   */
  history(room, query = {}) {
    const frame = { type: 'history', room };
    if (query.before !== undefined) frame.before = query.before;
    if (query.after !== undefined) frame.after = query.after;
    if (query.limit !== undefined) frame.limit = query.limit;
    return this._request(frame).then((r) => {
      if (!Array.isArray(r.messages)) throw new ChatError('protocol', 'malformed history reply');
      return { room, messages: r.messages.map(readMessage).filter(Boolean), more: r.more === true };
    });
  }

  /** The members of `room` with presence and cursors. */
  members(room) {
    return this._request({ type: 'members', room }).then((r) => {
      if (!Array.isArray(r.members)) throw new ChatError('protocol', 'malformed members reply');
      return r.members.map(readMemberInfo).filter(Boolean);
    });
  }

  /** The presence of `users`. */
  presence(users) {
    return this._request({ type: 'presence', users }).then((r) => {
      if (!Array.isArray(r.users)) throw new ChatError('protocol', 'malformed presence reply');
      return r.users.map(readPresence).filter(Boolean);
    });
  }

  /** Marks `room` read up to `seq` (which also marks it delivered up to there). */
  markRead(room, seq) {
    return this._request({ type: 'receipt', room, read: seq }).then(() => undefined);
  }

  /** Marks `room` delivered up to `seq`. */
  markDelivered(room, seq) {
    return this._request({ type: 'receipt', room, delivered: seq }).then(() => undefined);
  }

  /**
   * Tells the room's other members this user is typing (or stopped). Sent only while
   * online: a late typing indicator is worth nothing. Returns whether it was sent.
   */
  typing(room, active = true) {
    if (!this._online) return false;
    return this._write({ type: 'typing', room, active: Boolean(active) });
  }

  /** A round trip to the server. */
  ping() {
    return this._request({ type: 'ping' }).then(() => undefined);
  }

  /** Closes the connection and stops the client; waiting requests fail with `closed`. */
  close() {
    if (this._state === 'closed') return;
    if (this._state === 'idle') {
      this._finish(new ChatError('closed', 'the client is closed'), 'closed by the application');
      return;
    }
    this._closing = true;
    if (this._endSession) this._endSession({ kind: 'closed' });
    if (this._wake) this._wake();
  }

  _request(frame, internal = null) {
    if (this._state === 'closed' || this._closing) {
      return Promise.reject(new ChatError('closed', 'the client is closed'));
    }
    if (!internal && this.queued >= this._options.queueLimit) {
      return Promise.reject(new ChatError('queue_full', 'the offline queue is full'));
    }
    // A frame over the server's limit would close the connection, and be sent again after
    // every reconnect: refuse it here.
    const bytes = utf8Length(JSON.stringify(frame));
    if (bytes + ID_BYTES > MAX_FRAME_BYTES) {
      return Promise.reject(new ChatError('too_large', `the request takes ${bytes} bytes, over the ${MAX_FRAME_BYTES}-byte frame limit`));
    }
    return new Promise((resolve, reject) => {
      this._pending.push({
        frame,
        resolve,
        reject,
        internal,
        wire: null,
        deadline: Date.now() + this._options.requestTimeout,
      });
      if (this._online) this._sendPending();
    });
  }

  /** Writes one frame on the open connection; false (and the session ends) if it fails. */
  _write(frame) {
    const socket = this._socket;
    if (!socket || !this._online) return false;
    try {
      socket.send(JSON.stringify(frame));
      return true;
    } catch (error) {
      this._endSession?.({ kind: 'lost', reason: `write: ${error?.message ?? error}` });
      return false;
    }
  }

  /** Sends every pending request that has not gone out on this connection, in order. */
  _sendPending() {
    for (const pending of this._pending) {
      if (pending.wire !== null) continue;
      pending.wire = this._nextWire++;
      if (!this._write({ ...pending.frame, id: pending.wire })) return;
    }
  }

  _fill(fill) {
    // Internal: no promise anyone waits on.
    this._request(
      { type: 'history', room: fill.room, after: fill.after, limit: fill.limit },
      { kind: 'fill', room: fill.room },
    ).catch(() => {});
  }

  /**
   * Learns the epoch of a room this user was made a member of elsewhere (another device,
   * someone's `to` send), with a `join`, which is `ok` again for a member and says the
   * epoch. Without it a reset of that room (a restarted server) would go unnoticed until
   * it was followed under an epoch, and its new messages would pass for ones held.
   */
  _learnEpoch(room) {
    if (!this._online || !this._rooms.epochUnknown(room)) return;
    if (this._pending.some((p) => p.internal?.kind === 'learn' && p.internal.room === room)) return;
    this._request({ type: 'join', room }, { kind: 'learn', room }).catch(() => {});
  }

  /** Fails requests past their deadline. */
  _expire(now) {
    if (this._pending.every((p) => p.deadline > now)) return;
    const kept = [];
    for (const pending of this._pending) {
      if (pending.deadline > now) kept.push(pending);
      else {
        if (pending.internal?.kind === 'fill') this._rooms.fillAbandoned(pending.internal.room);
        pending.reject(new ChatError('timeout', `no reply within ${this._options.requestTimeout} ms`));
      }
    }
    this._pending = kept;
  }

  // --- the connection loop --------------------------------------------------------------

  async _run() {
    const tick = () => this._tick();
    this._ticker = setInterval(tick, 250);
    this._watchNetwork();
    let attempt = 0;
    let reason = null;
    this._setState('connecting', { attempt: 1, reason });
    for (;;) {
      attempt += 1;
      const ended = await this._sessionOnce(() => {
        attempt = 0;
      });
      this._online = false;
      this._socket = null;
      this._endSession = null;
      // Requests the client made for itself belong to the lost connection.
      for (const p of this._pending) if (p.internal?.kind === 'fill') this._rooms.fillAbandoned(p.internal.room);
      this._pending = this._pending.filter((p) => {
        if (p.internal) p.reject(new ChatError('closed', 'connection lost'));
        return !p.internal;
      });
      for (const p of this._pending) p.wire = null;

      if (ended.kind === 'closed') {
        this._finish(new ChatError('closed', 'the client is closed'), 'closed by the application');
        return;
      }
      if (ended.kind === 'fatal') {
        this._first?.reject(ended.error);
        this._first = null;
        this._finish(ended.error, ended.error.message);
        return;
      }
      reason = ended.reason;
      if (this._first) {
        const error = new ChatError('connect', `cannot connect: ${reason}`);
        this._first.reject(error);
        this._first = null;
        this._finish(error, reason);
        return;
      }
      const delay = this._delay(attempt);
      this._setState(this._everOnline ? 'reconnecting' : 'connecting', { attempt: attempt + 1, reason, retryIn: delay });
      if (!(await this._backOff(delay))) {
        this._finish(new ChatError('closed', 'the client is closed'), 'closed by the application');
        return;
      }
    }
  }

  /** Exponential backoff with jitter: a delay between half and all of its step. */
  _delay(attempt) {
    const { backoffMin, backoffMax } = this._options;
    const step = Math.min(backoffMin * 2 ** (Math.max(1, Math.min(attempt, 16)) - 1), backoffMax);
    return Math.round(step / 2 + (step / 2) * Math.random());
  }

  /**
   * Waits `delay` ms (less when the browser says the network is back); false when the
   * application closed the client meanwhile.
   */
  _backOff(delay) {
    if (this._closing) return Promise.resolve(false);
    return new Promise((resolve) => {
      const done = (again) => {
        clearTimeout(timer);
        this._wake = null;
        this._retryNow = null;
        resolve(again);
      };
      const timer = setTimeout(() => done(true), delay);
      this._wake = () => done(false);
      this._retryNow = () => done(true);
    });
  }

  /**
   * In a browser, the `offline` event ends the session at once (a socket on a network
   * that went away may not notice for a long time) and `online` retries without waiting
   * for the backoff.
   */
  _watchNetwork() {
    const target = globalThis;
    const nav = globalThis.navigator;
    if (typeof target.addEventListener !== 'function' || !nav || typeof nav.onLine !== 'boolean') return;
    const offline = () => {
      if (nav.onLine === false) this._endSession?.({ kind: 'lost', reason: 'the network went offline' });
    };
    const online = () => this._retryNow?.();
    target.addEventListener('offline', offline);
    target.addEventListener('online', online);
    this._network = () => {
      target.removeEventListener('offline', offline);
      target.removeEventListener('online', online);
    };
  }

  /** Fails every waiting request and says so. */
  _finish(error, reason) {
    this._closing = true;
    this._online = false;
    if (this._ticker) clearInterval(this._ticker);
    this._ticker = null;
    this._network?.();
    this._network = null;
    const pending = this._pending;
    this._pending = [];
    for (const p of pending) p.reject(error);
    this._setState('closed', { reason });
  }

  _tick() {
    const now = Date.now();
    this._expire(now);
    if (!this._online) return;
    const silent = now - this._lastHeard;
    // The server pings at the transport level, which a browser cannot see: ask for a reply
    // when it has been quiet for a heartbeat, and give it up after three.
    if (silent > this._heartbeat * 3) {
      this._endSession?.({ kind: 'lost', reason: 'the server went silent' });
    } else if (silent >= this._heartbeat && !this._pending.some((p) => p.internal?.kind === 'ping')) {
      this._request({ type: 'ping' }, { kind: 'ping' }).catch(() => {});
    }
  }

  /** One connection, from connect to loss. Resolves with how it ended. */
  _sessionOnce(onOpen) {
    return new Promise((resolve) => {
      let socket;
      let ended = false;
      let helloDone = false;
      const end = (how) => {
        if (ended) return;
        ended = true;
        clearTimeout(timer);
        if (this._socket === socket) {
          this._online = false;
          this._socket = null;
        }
        if (socket) {
          socket.onopen = socket.onmessage = socket.onclose = null;
          socket.onerror = () => {};
          try {
            socket.close(how.kind === 'closed' ? 1000 : undefined);
          } catch {
            // Closing a socket that never opened may throw: it is gone either way.
          }
        }
        resolve(how);
      };
      this._endSession = end;
      if (this._closing) return end({ kind: 'closed' });
      const timer = setTimeout(() => end({ kind: 'lost', reason: 'connect: timed out' }), this._options.connectTimeout);
      try {
        socket = new this._WebSocket(this._url);
      } catch (error) {
        return end({ kind: 'lost', reason: `connect: ${error?.message ?? error}` });
      }
      try {
        socket.binaryType = 'arraybuffer';
      } catch {
        // Not every implementation lets it be set; binary frames are ignored anyway.
      }
      socket.onopen = () => {
        try {
          socket.send(JSON.stringify({ type: 'hello', id: HELLO_ID, token: this._token, resume: this._rooms.resumePoints() }));
        } catch (error) {
          end({ kind: 'lost', reason: `write: ${error?.message ?? error}` });
        }
      };
      socket.onerror = () => {
        // The close event that follows says what happened.
      };
      socket.onclose = (event) => {
        const code = event?.code;
        if (code === CLOSE_UNAUTHORIZED) {
          return end({ kind: 'fatal', error: new ChatError('unauthorized', 'the server closed the session (4001)') });
        }
        const why = helloDone ? 'closed by the server' : 'closed during hello';
        end({ kind: 'lost', reason: code ? `${why} (${code}${event.reason ? ` ${event.reason}` : ''})` : why });
      };
      socket.onmessage = (event) => {
        if (ended) return;
        this._lastHeard = Date.now();
        if (typeof event.data !== 'string') return;
        let frame;
        try {
          frame = JSON.parse(event.data);
        } catch {
          frame = undefined;
        }
        if (!helloDone) {
          const outcome = this._onHello(frame);
          if (outcome.kind !== 'open') return end(outcome);
          helloDone = true;
          clearTimeout(timer);
          this._socket = socket;
          this._online = true;
          this._nextWire = 1;
          onOpen();
          this._everOnline = true;
          if (this._first) {
            this._first.resolve();
            this._first = null;
          }
          this._setState('online', { user: this._user, session: this._session, rooms: outcome.rooms });
          // Everything unanswered goes (again) in its original order; sends keep their
          // cid, so one stored before the loss is not stored twice.
          if (this._online && !ended) this._sendPending();
          return;
        }
        if (!isObject(frame)) return; // Not JSON, or not an object: skipped.
        this._onFrame(frame);
      };
    });
  }

  /** Reads the reply to `hello`. */
  _onHello(frame) {
    if (!isObject(frame)) return { kind: 'lost', reason: 'the hello reply is not a JSON object' };
    if (frame.type === 'error') {
      const message = typeof frame.message === 'string' ? frame.message : 'refused';
      if (frame.code === 'unauthorized') return { kind: 'fatal', error: new ChatError('unauthorized', message) };
      return { kind: 'lost', reason: `hello refused: ${frame.code}: ${message}` };
    }
    if (frame.type !== 'ok' || frame.id !== HELLO_ID || !isName(frame.user)) {
      return { kind: 'lost', reason: `unexpected frame before the hello reply: ${String(frame.type)}` };
    }
    this._user = frame.user;
    this._session = typeof frame.session === 'string' ? frame.session : null;
    const server = Number.isFinite(frame.heartbeat_ms) && frame.heartbeat_ms > 0 ? frame.heartbeat_ms : 25_000;
    const wanted = this._options.heartbeatMs;
    this._heartbeat = Math.max(100, wanted ? Math.min(wanted, server) : server);
    this._lastHeard = Date.now();
    const rooms = Array.isArray(frame.rooms) ? frame.rooms.map(readRoomState).filter(Boolean) : [];
    const { resets, fills } = this._rooms.onHello(rooms);
    for (const reset of resets) this._emit('reset', reset);
    for (const fill of fills) this._fill(fill);
    return { kind: 'open', rooms };
  }

  /** Acts on one frame from the server (after `hello`). */
  _onFrame(frame) {
    switch (frame.type) {
      case 'ok':
      case 'error': {
        if (!isCount(frame.id)) {
          if (frame.type === 'error') {
            this._emit('error', {
              code: typeof frame.code === 'string' ? frame.code : 'unknown',
              message: typeof frame.message === 'string' ? frame.message : '',
            });
          }
          return;
        }
        this._onReply(frame.id, frame);
        return;
      }
      case 'message': {
        const message = readMessage(frame);
        if (message) this._onMessage(message);
        return;
      }
      case 'member': {
        const member = readMember(frame);
        if (!member) return;
        if (member.user === this._user) {
          if (member.action === 'join') {
            this._rooms.onJoinedElsewhere(member.room);
            this._learnEpoch(member.room);
          } else this._rooms.onLeft(member.room);
        }
        this._emit('member', member);
        return;
      }
      case 'receipt': {
        const receipt = readReceipt(frame);
        if (receipt) this._emit('receipt', receipt);
        return;
      }
      case 'typing': {
        const typing = readTyping(frame);
        if (typing) this._emit('typing', typing);
        return;
      }
      case 'presence': {
        const presence = readPresence(frame);
        if (presence) this._emit('presence', presence);
        return;
      }
      default:
        // A newer server's push: skipped.
    }
  }

  _onMessage(message) {
    const { deliver, fill } = this._rooms.offer(message);
    for (const m of deliver) this._emit('message', m);
    if (fill) this._fill(fill);
  }

  _onReply(wire, frame) {
    const at = this._pending.findIndex((p) => p.wire === wire);
    if (at < 0) return;
    const [pending] = this._pending.splice(at, 1);
    const ok = frame.type === 'ok';
    if (pending.internal?.kind === 'fill') {
      // A refused fill (the room was left meanwhile) is not retried before the next session.
      if (ok && Array.isArray(frame.messages)) {
        for (const raw of frame.messages) {
          const message = readMessage(raw);
          if (message && message.room === pending.internal.room) this._onMessage(message);
        }
        const next = this._rooms.fillDone(pending.internal.room);
        if (next) this._fill(next);
      }
      pending.resolve(frame);
      return;
    }
    if (pending.internal?.kind === 'learn') {
      const state = ok ? readRoomState(frame) : null;
      if (state && state.room === pending.internal.room && this._rooms.epochUnknown(state.room)) {
        const reset = this._rooms.onJoin(state);
        if (reset) this._emit('reset', reset);
      }
      pending.resolve(frame);
      return;
    }
    if (pending.internal) {
      pending.resolve(frame);
      return;
    }
    if (!ok) {
      const code = typeof frame.code === 'string' ? frame.code : 'unknown';
      const message = typeof frame.message === 'string' ? frame.message : code;
      pending.reject(new ChatError(code, message));
      return;
    }
    const type = pending.frame.type;
    if (type === 'join') {
      const state = readRoomState(frame);
      if (state) {
        const reset = this._rooms.onJoin(state);
        if (reset) this._emit('reset', reset);
      }
    } else if (type === 'leave') {
      this._rooms.onLeft(pending.frame.room);
    } else if (type === 'send' && isName(frame.room)) {
      // A `to` send may have made us a member of the direct room.
      this._rooms.onJoinedElsewhere(frame.room);
      this._learnEpoch(frame.room);
    }
    pending.resolve(frame);
  }
}
