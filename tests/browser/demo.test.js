// The demo page in a real browser: Debian's Chromium (/usr/bin/chromium, headless) driven by
// playwright-core. Alice and Bob, each in a browser context of their own, chat in a room and
// in a direct chat; Bob's network drops while Alice writes, and when it is back Bob has every
// message once, in order; read marks follow Bob's reading; markup in a message stays text;
// older history comes in on scrolling up. Screenshots go to target/browser/.
//
//   CHAT_HTTP_URL=http://127.0.0.1:PORT node --test demo.test.js   # a running demo server
//   node --test demo.test.js                                       # starts its own
//
// The page is loaded from the demo server itself (`GET /`), and its four files are checked
// against the repository's (a stale binary fails). CHAT_WEB_FALLBACK=1 serves them from the
// work tree instead, for a server without the static routes.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { mkdirSync, readFileSync, existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { startServer } from '../../clients/js/test/support/server.js';
import { FaultProxy } from '../../clients/js/test/support/proxy.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const shots = path.join(root, 'target/browser');
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const PAGE_FILES = {
  '/': 'web/index.html',
  '/app.js': 'web/app.js',
  '/style.css': 'web/style.css',
  '/chat-engine.js': 'clients/js/chat-engine.js',
};

let server; // { port, stop? }
let staticServer = null;
let base; // where the page is loaded from
let wsUrl; // the demo server's WebSocket
let proxy; // Bob's network
let browser;
let alice;
let bob;
const problems = []; // page errors and unexpected console errors, from both pages
const dialogs = [];

async function servedByDemoServer(port) {
  for (const [route, file] of Object.entries(PAGE_FILES)) {
    let res;
    try {
      res = await fetch(`http://127.0.0.1:${port}${route}`, { signal: AbortSignal.timeout(3_000) });
    } catch (error) {
      return `GET ${route}: ${error.message}`;
    }
    if (!res.ok) return `GET ${route}: ${res.status}`;
    const body = Buffer.from(await res.arrayBuffer());
    if (!body.equals(readFileSync(path.join(root, file)))) {
      return `GET ${route} differs from ${file}: rebuild the server (the files are embedded at compile time)`;
    }
  }
  return null;
}

function serveWorkTree() {
  const types = { html: 'text/html', js: 'text/javascript', css: 'text/css' };
  const s = http.createServer((req, res) => {
    const file = PAGE_FILES[new URL(req.url, 'http://x').pathname];
    if (!file) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { 'content-type': `${types[file.split('.').pop()]}; charset=utf-8` });
    res.end(readFileSync(path.join(root, file)));
  });
  return new Promise((resolve) => s.listen(0, '127.0.0.1', () => resolve(s)));
}

async function openPage(name, query) {
  const context = await browser.newContext({ viewport: { width: 1100, height: 680 } });
  const page = await context.newPage();
  page.on('pageerror', (error) => problems.push(`${name}: page error: ${error.message}`));
  page.on('console', (m) => {
    // A dropped network makes the browser log its failed reconnection attempts.
    if (m.type() === 'error' && !/WebSocket connection to .* failed|ERR_INTERNET_DISCONNECTED/.test(m.text())) {
      problems.push(`${name}: console error: ${m.text()}`);
    }
  });
  page.on('dialog', (dialog) => {
    dialogs.push(`${name}: ${dialog.type()} ${dialog.message()}`);
    dialog.dismiss().catch(() => {});
  });
  await page.goto(`${base}/${query ? `?${query}` : ''}`);
  await page.fill('#login-name', name);
  await page.click('#login-form button[type=submit]');
  await page.waitForSelector('#conn[data-state="online"]');
  return { name, context, page };
}

const shot = (who, file) => who.page.screenshot({ path: path.join(shots, file) });

async function joinRoom(who, room) {
  await who.page.fill('#join-room', room);
  await who.page.press('#join-room', 'Enter');
  await who.page.waitForSelector(`#rooms li.active[data-room="${room}"]`);
  await who.page.waitForFunction(() => !document.getElementById('history-state').textContent.startsWith('Loading'));
}

async function open(who, room) {
  await who.page.click(`li[data-room="${room}"] button`);
  await who.page.waitForSelector(`li.active[data-room="${room}"]`);
}

async function send(who, text) {
  await who.page.fill('#message', text);
  await who.page.press('#message', 'Enter');
}

/** The open conversation as the page shows it. */
function timeline(who) {
  return who.page.$$eval('#timeline li', (items) =>
    items.map((li) => ({
      seq: li.dataset.seq,
      from: li.dataset.from,
      body: li.querySelector('.body').textContent,
      mark: li.querySelector('.mark')?.dataset.mark ?? null,
    })),
  );
}

/** Waits until the open conversation's bodies end with `bodies` (as text). */
async function waitForBodies(who, bodies, what) {
  try {
    await who.page.waitForFunction(
      (want) => {
        const got = [...document.querySelectorAll('#timeline li .body')].map((b) => b.textContent);
        return want.every((w, i) => got[got.length - want.length + i] === w);
      },
      bodies,
      { timeout: 10_000 },
    );
  } catch (error) {
    throw new Error(`${who.name} never showed ${what}: ${JSON.stringify((await timeline(who)).map((m) => m.body))} (${error.message})`);
  }
}

/** Waits until the mark of `who`'s own message `body` is `state`. */
async function waitForMark(who, body, state) {
  try {
    await who.page.waitForFunction(
      ({ body, state }) =>
        [...document.querySelectorAll('#timeline li.mine')].some(
          (li) => li.querySelector('.body').textContent === body && li.querySelector('.mark')?.dataset.mark === state,
        ),
      { body, state },
      { timeout: 10_000 },
    );
  } catch {
    const mine = (await timeline(who)).filter((m) => m.body === body);
    throw new Error(`${who.name}'s "${body}" is not marked ${state}: ${JSON.stringify(mine)}`);
  }
}

const unreadBadge = (who, room) => who.page.locator(`li[data-room="${room}"] .badge`);

before(async () => {
  assert.ok(existsSync(CHROMIUM), `no Chromium at ${CHROMIUM}: apt-get install chromium (scripts/browser_check.sh does)`);
  mkdirSync(shots, { recursive: true });
  if (process.env.CHAT_HTTP_URL) {
    const url = new URL(process.env.CHAT_HTTP_URL);
    server = { port: Number(url.port) };
  } else {
    server = await startServer();
  }
  wsUrl = `ws://127.0.0.1:${server.port}/ws`;
  const problem = await servedByDemoServer(server.port);
  if (problem === null) {
    base = `http://127.0.0.1:${server.port}`;
  } else if (process.env.CHAT_WEB_FALLBACK === '1') {
    console.log(`# the demo server does not serve the page (${problem}); serving the work tree's files`);
    staticServer = await serveWorkTree();
    base = `http://127.0.0.1:${staticServer.address().port}`;
  } else {
    throw new Error(`the demo server does not serve the page: ${problem}`);
  }
  proxy = new FaultProxy(server.port);
  await proxy.listen();
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    // This machine's network is closed: no background traffic to hosts that cannot be reached.
    args: ['--disable-gpu', '--disable-quic', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
  });
  // Alice's page finds the server from its own address (or ?ws= with the work-tree fallback);
  // Bob's goes through a proxy that stands for his network.
  alice = await openPage('alice', staticServer ? `ws=${encodeURIComponent(wsUrl)}` : '');
  bob = await openPage('bob', `ws=${encodeURIComponent(proxy.url)}`);
});

after(async () => {
  await browser?.close();
  await proxy?.close();
  staticServer?.close();
  if (server?.stop) await server.stop();
});

test('alice and bob chat in a room; read marks follow bob', async () => {
  await joinRoom(alice, 'general');
  await joinRoom(bob, 'general');
  await send(alice, 'Morning Bob! Did the deploy go through?');
  await waitForBodies(bob, ['Morning Bob! Did the deploy go through?'], "alice's first message");
  // Bob has the room open: the message is read at once.
  await waitForMark(alice, 'Morning Bob! Did the deploy go through?', 'read');
  await send(bob, 'Yes, all green. The new JavaScript client reconnects by itself now.');
  await send(alice, 'Nice, I will try it from the train later.');
  const want = [
    'Morning Bob! Did the deploy go through?',
    'Yes, all green. The new JavaScript client reconnects by itself now.',
    'Nice, I will try it from the train later.',
  ];
  await waitForBodies(alice, want, 'the conversation');
  await waitForBodies(bob, want, 'the conversation');
  assert.deepEqual((await timeline(bob)).map((m) => [m.seq, m.from]), [['1', 'alice'], ['2', 'bob'], ['3', 'alice']]);
  await waitForMark(alice, 'Nice, I will try it from the train later.', 'read');
  assert.equal(await alice.page.locator('#members li[data-user="bob"] .dot').getAttribute('data-presence'), 'online');
});

test('typing shows on the other side', async () => {
  await bob.page.fill('#message', 'Safe trip');
  await bob.page.type('#message', '!');
  await alice.page.waitForFunction(() => document.getElementById('typing').textContent === 'bob is typing…');
  await shot(alice, 'alice-room.png');
  await bob.page.press('#message', 'Enter');
  await waitForBodies(alice, ['Safe trip!'], "bob's answer");
  await alice.page.waitForFunction(() => document.getElementById('typing').textContent === '');
  await waitForMark(bob, 'Safe trip!', 'read');
});

test('a direct chat: unread count, then read', async () => {
  await alice.page.fill('#dm-user', 'bob');
  await alice.page.press('#dm-user', 'Enter');
  await alice.page.waitForSelector('#directs li.active[data-room="dm:alice:bob"]');
  await send(alice, 'Psst, a private one: lunch at noon?');
  await waitForBodies(alice, ['Psst, a private one: lunch at noon?'], 'the direct message');
  // Bob looks at the room, not the direct chat: delivered, unread there.
  await bob.page.waitForSelector('#directs li[data-room="dm:alice:bob"] .badge');
  assert.equal(await unreadBadge(bob, 'dm:alice:bob').textContent(), '1');
  await waitForMark(alice, 'Psst, a private one: lunch at noon?', 'delivered');
  await open(bob, 'dm:alice:bob');
  await waitForBodies(bob, ['Psst, a private one: lunch at noon?'], 'the direct message');
  await waitForMark(alice, 'Psst, a private one: lunch at noon?', 'read');
  assert.equal(await unreadBadge(bob, 'dm:alice:bob').count(), 0, 'no unread badge once read');
  await send(bob, 'Noon works.');
  await waitForBodies(alice, ['Noon works.'], "bob's direct answer");
  await shot(bob, 'bob-direct.png');
  await open(bob, 'general');
  await open(alice, 'general');
});

test('bob drops off while alice writes; back, he has every message once, in order', async () => {
  // The browser reports the network gone: the page gives up its connection at once.
  await bob.context.setOffline(true);
  await bob.page.waitForSelector('#banner[data-kind="reconnecting"]:not([hidden])', { timeout: 5_000 });
  assert.match(await bob.page.textContent('#banner'), /Reconnecting/);
  assert.equal(await bob.page.getAttribute('#conn', 'data-state'), 'reconnecting');
  // And the network is really down: the old connection is cut, new ones are refused.
  proxy.mode = 'refuse';
  proxy.cut();

  const offline = Array.from({ length: 6 }, (_, i) => `While you were away #${i + 1}`);
  for (const text of offline) await send(alice, text);
  await waitForMark(alice, offline.at(-1), 'sent');
  await open(alice, 'dm:alice:bob');
  await send(alice, 'Also: bring the slides');
  await send(alice, 'And the adapter');
  await waitForMark(alice, 'And the adapter', 'sent');
  await open(alice, 'general');
  // Bob writes while offline: it waits, marked as sending.
  await send(bob, 'Typed in the tunnel');
  await bob.page.waitForSelector('#timeline li.mine .mark[data-mark="sending"]');
  await shot(bob, 'bob-offline.png');

  await bob.context.setOffline(false);
  proxy.mode = 'pass';
  await bob.page.waitForSelector('#conn[data-state="online"]', { timeout: 15_000 });
  await bob.page.waitForSelector('#banner', { state: 'hidden' });
  await waitForBodies(alice, ['Typed in the tunnel'], "bob's queued message");
  const expected = [
    'Morning Bob! Did the deploy go through?',
    'Yes, all green. The new JavaScript client reconnects by itself now.',
    'Nice, I will try it from the train later.',
    'Safe trip!',
    ...offline,
    'Typed in the tunnel',
  ];
  await waitForBodies(bob, expected, 'every message');
  const seen = await timeline(bob);
  assert.deepEqual(seen.map((m) => m.body), expected, 'each once, in order, nothing else');
  assert.deepEqual(seen.map((m) => m.seq), expected.map((_, i) => String(i + 1)));
  // Bob has the room open: alice's marks turn to read.
  await waitForMark(alice, offline.at(-1), 'read');
  await waitForMark(bob, 'Typed in the tunnel', 'read');
  // The direct chat: two unread, then both there once.
  await bob.page.waitForFunction(() => document.querySelector('li[data-room="dm:alice:bob"] .badge')?.textContent === '2');
  await open(bob, 'dm:alice:bob');
  const direct = await timeline(bob);
  assert.deepEqual(direct.map((m) => m.body), ['Psst, a private one: lunch at noon?', 'Noon works.', 'Also: bring the slides', 'And the adapter']);
  await open(bob, 'general');
  assert.equal(await unreadBadge(bob, 'dm:alice:bob').count(), 0, 'opening the direct chat read it');
  await open(alice, 'dm:alice:bob');
  await waitForMark(alice, 'And the adapter', 'read');
  await open(alice, 'general');
});

test('the conversation as the README shows it', async () => {
  // Carol writes to alice directly and leaves: an unread direct chat in alice's list.
  await alice.page.evaluate(async (url) => {
    const { ChatClient } = await import('/chat-engine.js');
    const carol = await ChatClient.connect({ url, token: 'dev:carol' });
    await carol.sendTo('alice', 'Are you joining the standup?');
    carol.close();
  }, wsUrl);
  await alice.page.waitForFunction(() => document.querySelector('li[data-room="dm:alice:carol"] .badge')?.textContent === '1');
  await bob.page.fill('#message', 'Thanks, catching up now');
  await bob.page.type('#message', '.');
  await alice.page.waitForFunction(() => document.getElementById('typing').textContent === 'bob is typing…');
  await shot(alice, 'demo.png');
  await bob.page.fill('#message', '');
  await bob.page.type('#message', 'x');
  await bob.page.press('#message', 'Backspace');
});

test('markup in a message is shown as text and runs nothing', async () => {
  const evil = '<script>alert(1)</script> <img src=x onerror="window.__xss=1;alert(2)"> <b>bold?</b>';
  await send(alice, evil);
  await waitForBodies(bob, [evil], 'the markup message');
  await waitForBodies(alice, [evil], 'the markup message');
  for (const who of [alice, bob]) {
    const injected = await who.page.$$eval('#timeline script, #timeline img, #timeline b', (n) => n.length);
    assert.equal(injected, 0, `${who.name}: no element came from the message`);
    assert.equal(await who.page.evaluate(() => window.__xss), undefined, `${who.name}: nothing ran`);
    const last = (await timeline(who)).at(-1);
    assert.equal(last.body, evil);
  }
  // Give an onerror handler time to fire if an <img> had been made.
  await new Promise((r) => setTimeout(r, 300));
  assert.deepEqual(dialogs, []);
  await shot(bob, 'bob-markup.png');
});

test('older history comes in on scrolling up', async () => {
  // Carol fills a room with 120 messages through the JavaScript client, in Bob's browser.
  await bob.page.evaluate(async (url) => {
    const { ChatClient } = await import('/chat-engine.js');
    const carol = await ChatClient.connect({ url, token: 'dev:carol' });
    await carol.join('archive');
    for (let i = 1; i <= 120; i++) await carol.send('archive', `archive #${i}`);
    carol.close();
  }, wsUrl);
  await joinRoom(bob, 'archive');
  const first = await timeline(bob);
  assert.equal(first.length, 50, 'the latest page first');
  assert.equal(first[0].body, 'archive #71');
  for (let i = 0; i < 10; i++) {
    const n = (await timeline(bob)).length;
    if (n === 120) break;
    await bob.page.evaluate(() => {
      document.getElementById('scroller').scrollTop = 0;
    });
    await bob.page.waitForFunction((n) => document.querySelectorAll('#timeline li').length > n, n, { timeout: 10_000 });
  }
  const all = await timeline(bob);
  assert.deepEqual(all.map((m) => m.body), Array.from({ length: 120 }, (_, i) => `archive #${i + 1}`));
  await bob.page.waitForFunction(() => document.getElementById('history-state').dataset.more === 'false');
  await shot(bob, 'bob-archive.png');
});

test('after a server restart without its store, the page starts the rooms afresh', async () => {
  // Bob's proxy now leads to a new, empty server: his connection drops and comes back there.
  const fresh = await startServer();
  try {
    proxy.retarget(fresh.port);
    proxy.cut();
    await bob.page.waitForSelector('#conn[data-state="online"]');
    await open(bob, 'general');
    // The room was reset (the new server knows nobody): the page joined it again, and empty.
    await bob.page.waitForFunction(() => document.getElementById('history-state').textContent === 'No messages yet: say hello.');
    assert.deepEqual(await timeline(bob), []);
    await send(bob, 'Anyone here after the restart?');
    await waitForMark(bob, 'Anyone here after the restart?', 'sent');
    const seen = await timeline(bob);
    assert.deepEqual(seen.map((m) => [m.seq, m.body]), [['1', 'Anyone here after the restart?']]);
    await shot(bob, 'bob-after-restart.png');
  } finally {
    await bob.context.close();
    await fresh.stop();
  }
});

test('no page errors on either side', async () => {
  await shot(alice, 'alice-final.png');
  assert.deepEqual(problems, []);
  assert.deepEqual(dialogs, []);
});
