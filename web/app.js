// The chat-engine demo page: a small chat application on the JavaScript client.
//
// Everything a user or the server wrote goes into the page as text (textContent, text
// nodes, attributes set through the DOM), never as HTML.

import { ChatClient, directPeer, directRoom, newCid } from './chat-engine.js';

const USER_RE = /^[A-Za-z0-9._-]{1,64}$/;
const ROOM_RE = /^[A-Za-z0-9._:-]{1,128}$/;
const PAGE = 50;
const TYPING_SHOWN_MS = 12_000;
const TYPING_RESEND_MS = 3_000;
const STORE_NAME = 'chat-engine.name';
const STORE_ROOM = 'chat-engine.room';

const params = new URLSearchParams(location.search);
const WS_URL = params.get('ws') || `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`;

const $ = (id) => document.getElementById(id);

/** An element; strings among `children` become text nodes. */
function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null) continue;
    if (key === 'class') node.className = value;
    else if (key === 'text') node.textContent = value;
    else if (key.startsWith('data-') || key.startsWith('aria-')) node.setAttribute(key, String(value));
    else node[key] = value;
  }
  node.append(...children.filter((c) => c !== null && c !== undefined && c !== false));
  return node;
}

// --- state ------------------------------------------------------------------------------

let client = null;
let me = null;
let current = null;
let lastTypingSent = 0;
/** @type {Map<string, Room>} */
const rooms = new Map();
/** user → { status, last_seen } */
const presence = new Map();

/**
 * @typedef {object} Room
 * @property {string} id
 * @property {string|null} peer the other user of a direct room
 * @property {Map<number, object>} messages by seq
 * @property {Map<string, object>} pending own messages not yet seen back, by cid
 * @property {Map<string, {read: number, delivered: number}>} members cursors by user
 * @property {Map<string, number>} typing user → timer
 */
function roomOf(id) {
  let room = rooms.get(id);
  if (!room) {
    room = {
      id,
      peer: directPeer(id, me),
      messages: new Map(),
      pending: new Map(),
      members: new Map(),
      typing: new Map(),
      more: true,
      loaded: false,
      loading: false,
      read: 0,
      receipted: { read: 0, delivered: 0 },
      receiptTimer: null,
    };
    rooms.set(id, room);
  }
  return room;
}

const isDirect = (room) => room.id.startsWith('dm:');
const title = (room) => (isDirect(room) ? room.peer ?? room.id : `# ${room.id}`);
const lastSeq = (room) => (room.messages.size ? Math.max(...room.messages.keys()) : 0);
const firstSeq = (room) => (room.messages.size ? Math.min(...room.messages.keys()) : 0);
const viewing = (room) => room.id === current && document.visibilityState === 'visible';

function unread(room) {
  let n = 0;
  for (const m of room.messages.values()) if (m.from !== me && m.seq > room.read) n += 1;
  // Older unread messages may not be loaded yet.
  const partial = room.more && room.messages.size > 0 && firstSeq(room) > room.read + 1 && n > 0;
  return { n, label: n === 0 ? '' : partial ? `${n}+` : String(n) };
}

// --- sign-in ----------------------------------------------------------------------------

function showLogin(error = '') {
  $('login').hidden = false;
  $('app').hidden = true;
  $('login-error').textContent = error;
  $('login-name').focus();
}

$('login-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const name = $('login-name').value.trim();
  if (!USER_RE.test(name)) {
    $('login-error').textContent = 'Letters, digits, dot, dash and underscore only (at most 64).';
    return;
  }
  sessionStorage.setItem(STORE_NAME, name);
  start(name);
});

$('logout').addEventListener('click', () => {
  sessionStorage.removeItem(STORE_NAME);
  sessionStorage.removeItem(STORE_ROOM);
  client?.close();
  location.reload();
});

function start(name) {
  me = name;
  $('login').hidden = true;
  $('app').hidden = false;
  $('me-name').textContent = name;
  client = new ChatClient({ url: WS_URL, token: `dev:${name}` });
  client.on('state', onState);
  client.on('message', onMessage);
  client.on('receipt', onReceipt);
  client.on('typing', onTyping);
  client.on('presence', onPresence);
  client.on('member', onMember);
  client.on('reset', onReset);
  client.start();
  renderAll();
}

// --- events from the client -------------------------------------------------------------

let firstOnline = true;

function onState(s) {
  const conn = $('conn');
  conn.dataset.state = s.state;
  conn.textContent = { connecting: 'connecting…', online: 'online', reconnecting: 'reconnecting…', closed: 'offline' }[s.state] ?? s.state;
  $('me-dot').className = `dot ${s.state === 'online' ? 'online' : 'offline'}`;
  const banner = $('banner');
  if (s.state === 'online') {
    banner.hidden = true;
  } else if (s.state === 'reconnecting') {
    banner.hidden = false;
    banner.dataset.kind = 'reconnecting';
    banner.textContent = 'Reconnecting… Messages you write now are sent when the connection is back.';
  } else if (s.state === 'connecting') {
    banner.hidden = s.attempt <= 1;
    banner.dataset.kind = 'connecting';
    banner.textContent = `Connecting to ${WS_URL}…`;
  } else if (s.state === 'closed') {
    banner.hidden = false;
    banner.dataset.kind = 'closed';
    banner.textContent = `Disconnected: ${s.reason ?? 'closed'}. Sign out to try again.`;
  }
  if (s.state !== 'online') return;

  for (const state of s.rooms ?? []) {
    const room = roomOf(state.room);
    room.read = Math.max(room.read, state.read);
    if (!room.loaded) loadLatest(room);
  }
  refreshPresence();
  if (current) loadMembers(roomOf(current));
  if (firstOnline) {
    firstOnline = false;
    const saved = sessionStorage.getItem(STORE_ROOM);
    if (saved && rooms.has(saved)) openRoom(saved);
  }
  renderAll();
}

function onMessage(m) {
  const room = roomOf(m.room);
  room.messages.set(m.seq, m);
  if (m.from === me) room.pending.delete(m.cid);
  else {
    clearTyping(room, m.from);
    scheduleReceipt(room);
  }
  renderLists();
  if (room.id === current) renderTimeline();
}

function onReceipt(r) {
  const room = rooms.get(r.room);
  if (!room) return;
  if (r.user === me) {
    // Another device of mine read it.
    if (r.read !== undefined) room.read = Math.max(room.read, r.read);
    renderLists();
    return;
  }
  const cursor = room.members.get(r.user) ?? { read: 0, delivered: 0 };
  if (r.read !== undefined) cursor.read = Math.max(cursor.read, r.read);
  if (r.delivered !== undefined) cursor.delivered = Math.max(cursor.delivered, r.delivered, cursor.read);
  room.members.set(r.user, cursor);
  if (room.id === current) renderTimeline();
}

function onTyping(t) {
  const room = rooms.get(t.room);
  if (!room) return;
  clearTyping(room, t.user);
  if (t.active) room.typing.set(t.user, setTimeout(() => clearTyping(room, t.user, true), TYPING_SHOWN_MS));
  if (room.id === current) renderTyping();
}

function clearTyping(room, user, render = false) {
  clearTimeout(room.typing.get(user));
  room.typing.delete(user);
  if (render && room.id === current) renderTyping();
}

function onPresence(p) {
  presence.set(p.user, p);
  renderLists();
  renderHeader();
}

function onMember(e) {
  if (e.user === me) {
    if (e.action === 'join') {
      const room = roomOf(e.room);
      if (!room.loaded) loadLatest(room);
      if (room.peer) refreshPresence();
    } else {
      rooms.delete(e.room);
      if (current === e.room) current = null;
    }
    renderAll();
    return;
  }
  const room = rooms.get(e.room);
  if (!room) return;
  if (e.action === 'join') {
    if (!room.members.has(e.user)) room.members.set(e.user, { read: 0, delivered: 0 });
    // Presence pushes come on changes only: ask for a newcomer's current status.
    client.presence([e.user]).then((list) => list.forEach(onPresence), () => {});
  } else room.members.delete(e.user);
  if (room.id === current) {
    renderHeader();
    renderTimeline();
  }
}

function onReset(e) {
  const room = rooms.get(e.room);
  if (!room) return;
  // The server's copy of the room was reset: what we hold is stale.
  room.messages.clear();
  room.members.clear();
  room.read = 0;
  room.receipted = { read: 0, delivered: 0 };
  room.more = true;
  room.loaded = false;
  if (e.epoch !== null) loadLatest(room);
  else if (!isDirect(room)) {
    // The server forgot we were in it (a restart without a durable store): join again.
    client.join(room.id).then(() => loadLatest(room), (error) => sideError(error));
  } else {
    // A direct room the server forgot: the next message (sent with `to`) makes it again.
    room.more = false;
    room.loaded = true;
  }
  renderAll();
}

// --- loading ----------------------------------------------------------------------------

async function loadLatest(room) {
  if (room.loading) return;
  room.loading = true;
  renderHistoryState();
  try {
    const page = await client.history(room.id, { limit: PAGE });
    for (const m of page.messages) room.messages.set(m.seq, m);
    room.more = page.more;
    room.loaded = true;
    scheduleReceipt(room);
  } catch (error) {
    if (error.code === 'forbidden') {
      room.more = false;
      room.loaded = true;
    }
  } finally {
    room.loading = false;
  }
  renderLists();
  if (room.id === current) {
    renderTimeline({ toBottom: true });
    fillViewport(room);
  }
}

async function loadOlder(room) {
  if (room.loading || !room.more || !room.loaded) return;
  const before = firstSeq(room);
  if (before <= 1) {
    room.more = false;
    renderHistoryState();
    return;
  }
  room.loading = true;
  renderHistoryState();
  const scroller = $('scroller');
  const fromBottom = scroller.scrollHeight - scroller.scrollTop;
  try {
    const page = await client.history(room.id, { before, limit: PAGE });
    for (const m of page.messages) room.messages.set(m.seq, m);
    room.more = page.more;
  } catch (error) {
    sideError(error);
  } finally {
    room.loading = false;
  }
  if (room.id !== current) return;
  renderTimeline();
  scroller.scrollTop = scroller.scrollHeight - fromBottom;
  fillViewport(room);
}

/** Loads older pages until the timeline can scroll (or the beginning is reached). */
function fillViewport(room) {
  const scroller = $('scroller');
  if (room.id === current && room.more && scroller.scrollHeight <= scroller.clientHeight + 8) loadOlder(room);
}

async function loadMembers(room) {
  try {
    const list = await client.members(room.id);
    room.members.clear();
    for (const m of list) {
      room.members.set(m.user, { read: m.read, delivered: Math.max(m.delivered, m.read) });
      presence.set(m.user, { user: m.user, status: m.status, last_seen: m.last_seen });
    }
  } catch {
    // Not a member (yet): a direct chat not started. The header says who it is with.
  }
  if (room.id === current) {
    renderHeader();
    renderTimeline();
  }
  renderLists();
}

async function refreshPresence() {
  const peers = [...rooms.values()].map((r) => r.peer).filter(Boolean);
  if (peers.length === 0) return;
  try {
    for (const p of await client.presence([...new Set(peers)])) presence.set(p.user, p);
  } catch {
    return;
  }
  renderLists();
  renderHeader();
}

/** Tells the server what we have seen: read when the room is on screen, else delivered. */
function sendReceipt(room) {
  const seq = lastSeq(room);
  if (seq === 0) return;
  if (viewing(room)) {
    room.read = Math.max(room.read, seq);
    if (seq > room.receipted.read) {
      room.receipted.read = seq;
      room.receipted.delivered = Math.max(room.receipted.delivered, seq);
      client.markRead(room.id, seq).catch(() => {});
    }
    renderLists();
  } else if (seq > room.receipted.delivered) {
    room.receipted.delivered = seq;
    client.markDelivered(room.id, seq).catch(() => {});
  }
}

/** The same, a moment later: one receipt for a burst of messages. */
function scheduleReceipt(room) {
  if (room.receiptTimer) return;
  room.receiptTimer = setTimeout(() => {
    room.receiptTimer = null;
    sendReceipt(room);
  }, 150);
}

document.addEventListener('visibilitychange', () => {
  if (current && document.visibilityState === 'visible') scheduleReceipt(roomOf(current));
});

// --- actions ----------------------------------------------------------------------------

function sideError(error) {
  $('side-error').textContent = error ? String(error.message ?? error) : '';
}

function openRoom(id) {
  current = id;
  sessionStorage.setItem(STORE_ROOM, id);
  const room = roomOf(id);
  $('message').disabled = false;
  $('send').disabled = false;
  renderAll({ toBottom: true });
  if (!room.loaded) loadLatest(room);
  else fillViewport(room);
  loadMembers(room);
  if (room.peer) refreshPresence();
  sendReceipt(room);
  $('message').focus();
}

$('join-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const name = $('join-room').value.trim();
  if (!ROOM_RE.test(name) || name.startsWith('dm:')) {
    sideError('A room name: letters, digits and . _ : - (not starting with dm:).');
    return;
  }
  sideError('');
  $('join-room').value = '';
  const known = rooms.has(name);
  const room = roomOf(name);
  room.loading = true; // nothing to load before the join is through
  openRoom(name);
  try {
    await client.join(name);
  } catch (error) {
    sideError(error);
    if (!known) {
      rooms.delete(name);
      if (current === name) current = null;
      renderAll();
    }
    return;
  } finally {
    room.loading = false;
  }
  loadLatest(room);
  loadMembers(room);
});

$('dm-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const user = $('dm-user').value.trim();
  if (!USER_RE.test(user)) {
    sideError('A user name: letters, digits, dot, dash and underscore.');
    return;
  }
  sideError('');
  $('dm-user').value = '';
  const id = directRoom(me, user);
  const room = roomOf(id);
  // Nothing exists on the server until the first message (sent with `to`) makes the room.
  if (!room.loaded && !room.loading) {
    room.loaded = true;
    room.more = false;
    client.history(id, { limit: PAGE }).then(
      (page) => {
        for (const m of page.messages) room.messages.set(m.seq, m);
        room.more = page.more;
        if (current === id) renderTimeline({ toBottom: true });
      },
      () => {},
    );
  }
  openRoom(id);
});

function sendMessage(room, pending) {
  pending.state = 'sending';
  const options = { cid: pending.cid };
  const sent = room.peer ? client.sendTo(room.peer, pending.body, options) : client.send(room.id, pending.body, options);
  sent.then(
    (ack) => {
      const p = room.pending.get(pending.cid);
      if (!p) return;
      p.state = 'stored';
      p.seq = ack.seq;
      if (room.id === current) renderTimeline();
    },
    (error) => {
      const p = room.pending.get(pending.cid);
      if (!p) return;
      p.state = 'failed';
      p.error = error.message;
      if (room.id === current) renderTimeline();
    },
  );
}

$('composer').addEventListener('submit', (event) => {
  event.preventDefault();
  const input = $('message');
  const body = input.value;
  if (!current || body.trim() === '') return;
  const room = roomOf(current);
  input.value = '';
  autosize();
  const pending = { cid: newCid(), body, ts: Date.now(), state: 'sending' };
  room.pending.set(pending.cid, pending);
  sendMessage(room, pending);
  if (lastTypingSent) client.typing(room.id, false);
  lastTypingSent = 0;
  renderTimeline({ toBottom: true });
});

$('message').addEventListener('keydown', (event) => {
  if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    $('composer').requestSubmit();
  }
});

$('message').addEventListener('input', () => {
  autosize();
  if (!current || !rooms.get(current)?.loaded) return;
  const now = Date.now();
  const typing = $('message').value !== '';
  if (typing && now - lastTypingSent > TYPING_RESEND_MS) {
    if (client.typing(current, true)) lastTypingSent = now;
  } else if (!typing && lastTypingSent) {
    client.typing(current, false);
    lastTypingSent = 0;
  }
});

function autosize() {
  const input = $('message');
  input.style.height = 'auto';
  input.style.height = `${Math.min(input.scrollHeight, 160)}px`;
}

$('scroller').addEventListener('scroll', () => {
  if (!current) return;
  if ($('scroller').scrollTop < 80) loadOlder(roomOf(current));
});

// --- rendering --------------------------------------------------------------------------

function renderAll(options) {
  renderLists();
  renderHeader();
  renderTimeline(options);
  renderTyping();
}

function dot(user) {
  const status = presence.get(user)?.status ?? 'offline';
  return el('span', { class: `dot ${status}`, title: status, 'data-presence': status });
}

function renderLists() {
  const all = [...rooms.values()].sort((a, b) => title(a).localeCompare(title(b)));
  let total = 0;
  const item = (room) => {
    const { n, label } = unread(room);
    total += n;
    const button = el(
      'button',
      { type: 'button', class: 'room-link', onclick: () => openRoom(room.id) },
      room.peer ? dot(room.peer) : null,
      el('span', { class: 'name', text: title(room) }),
      label ? el('span', { class: 'badge', text: label, 'data-unread': n, 'aria-label': `${label} unread` }) : null,
    );
    return el('li', { class: room.id === current ? 'active' : '', 'data-room': room.id }, button);
  };
  $('rooms').replaceChildren(...all.filter((r) => !isDirect(r)).map(item));
  $('directs').replaceChildren(...all.filter(isDirect).map(item));
  document.title = total ? `(${total}) chat-engine demo` : 'chat-engine demo';
}

function renderHeader() {
  const room = current ? rooms.get(current) : null;
  $('room-title').textContent = room ? title(room) : 'No conversation open';
  const members = $('members');
  if (!room) {
    members.replaceChildren();
    return;
  }
  if (room.peer) {
    const p = presence.get(room.peer);
    const status = p?.status === 'online' ? 'online' : p?.last_seen ? `last seen ${clock(p.last_seen)}` : 'offline';
    members.replaceChildren(el('li', {}, dot(room.peer), el('span', { text: status })));
    return;
  }
  const users = [...room.members.keys()].sort((a, b) => (a === me) - (b === me) || a.localeCompare(b));
  // One's own dot follows the connection (no presence push comes for oneself).
  const ownDot = () => el('span', { class: `dot ${client.connected ? 'online' : 'offline'}` });
  members.replaceChildren(
    ...users.map((u) => el('li', { 'data-user': u }, u === me ? ownDot() : dot(u), el('span', { text: u === me ? `${u} (you)` : u }))),
  );
}

function clock(ts) {
  return new Date(ts).toLocaleTimeString([], { hour: 'numeric', minute: '2-digit' });
}

/** sent / delivered / read for one's own stored message: every other member counts. */
function mark(room, seq) {
  const others = [...room.members.entries()].filter(([user]) => user !== me);
  if (room.peer && room.peer !== me && !room.members.has(room.peer)) others.push([room.peer, { read: 0, delivered: 0 }]);
  if (others.length === 0) return { state: 'sent', label: 'sent' };
  const readers = others.filter(([, c]) => c.read >= seq).map(([u]) => u);
  if (readers.length === others.length) return { state: 'read', label: `read by ${readers.join(', ')}` };
  const delivered = others.filter(([, c]) => Math.max(c.delivered, c.read) >= seq).length;
  if (delivered === others.length) return { state: 'delivered', label: 'delivered' };
  return { state: 'sent', label: readers.length ? `sent, read by ${readers.join(', ')}` : 'sent' };
}

const MARK_TEXT = { sending: '◷', stored: '✓', sent: '✓', delivered: '✓✓', read: '✓✓', failed: '!' };

function messageItem(room, m, previous) {
  const mine = m.from === me;
  const grouped = previous && previous.from === m.from && m.ts - previous.ts < 5 * 60_000;
  const stamp = el('span', { class: 'stamp' }, el('time', { text: clock(m.ts), dateTime: new Date(m.ts).toISOString() }));
  if (mine) {
    const state = m.state ?? mark(room, m.seq).state;
    const label = m.state
      ? m.state === 'failed'
        ? `not sent: ${m.error} (click to retry)`
        : m.state === 'sending'
          ? 'sending'
          : 'sent'
      : mark(room, m.seq).label;
    const markEl = el('span', { class: `mark ${state}`, title: label, 'aria-label': label, 'data-mark': state === 'stored' ? 'sent' : state, text: MARK_TEXT[state] });
    if (m.state === 'failed') {
      markEl.onclick = () => {
        sendMessage(room, m);
        renderTimeline();
      };
    }
    stamp.append(markEl);
  }
  return el(
    'li',
    { class: `msg ${mine ? 'mine' : 'theirs'}${grouped ? ' grouped' : ''}`, 'data-seq': m.seq ?? '', 'data-cid': m.cid, 'data-from': m.from },
    !mine && !grouped ? el('div', { class: 'author', text: m.from }) : null,
    el('div', { class: 'content' }, el('span', { class: 'body', text: m.body }), stamp),
  );
}

function renderTimeline({ toBottom = false } = {}) {
  const list = $('timeline');
  const scroller = $('scroller');
  const room = current ? rooms.get(current) : null;
  if (!room) {
    list.replaceChildren();
    renderHistoryState();
    return;
  }
  const atBottom = scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 60;
  const stored = [...room.messages.values()].sort((a, b) => a.seq - b.seq);
  const waiting = [...room.pending.values()].map((p) => ({ ...p, from: me, seq: undefined }));
  const items = [];
  let previous = null;
  for (const m of [...stored, ...waiting]) {
    items.push(messageItem(room, m, previous));
    previous = m;
  }
  list.replaceChildren(...items);
  renderHistoryState();
  if (toBottom || atBottom) scroller.scrollTop = scroller.scrollHeight;
}

function renderHistoryState() {
  const room = current ? rooms.get(current) : null;
  const state = $('history-state');
  if (!room) {
    state.textContent = 'Pick a room or a person on the left, or start a new one.';
    return;
  }
  if (room.loading) state.textContent = 'Loading…';
  else if (room.more) state.textContent = 'Scroll up for older messages';
  else state.textContent = room.messages.size ? 'The beginning of the conversation' : 'No messages yet: say hello.';
  state.dataset.more = String(room.more);
}

function renderTyping() {
  const room = current ? rooms.get(current) : null;
  const names = room ? [...room.typing.keys()] : [];
  const line = $('typing');
  if (names.length === 0) line.textContent = '';
  else if (names.length === 1) line.textContent = `${names[0]} is typing…`;
  else if (names.length === 2) line.textContent = `${names[0]} and ${names[1]} are typing…`;
  else line.textContent = `${names.length} people are typing…`;
}

// --- go ---------------------------------------------------------------------------------

const saved = sessionStorage.getItem(STORE_NAME);
if (saved && USER_RE.test(saved)) start(saved);
else showLogin();
