// A TCP proxy between a client and the server that a test can cut, stall, or make drop
// everything the server says, and point at another server (a restart).
import net from 'node:net';

export class FaultProxy {
  /** @param {number} targetPort */
  constructor(targetPort) {
    this.targetPort = targetPort;
    /** Open pairs of sockets. */
    this.pairs = new Set();
    /** 'pass' | 'refuse' (new connections are closed at once) */
    this.mode = 'pass';
    this.accepted = 0;
    /** When set, server text frames it returns true for are dropped (and kept here). */
    this.dropText = null;
    this.dropped = [];
    /** When set, server text frames it returns true for are passed on twice. */
    this.twiceText = null;
    this.server = net.createServer((client) => this._accept(client));
  }

  /** Listens on a free port; resolves with it. */
  listen() {
    return new Promise((resolve) => {
      this.server.listen(0, '127.0.0.1', () => {
        this.port = this.server.address().port;
        resolve(this.port);
      });
    });
  }

  get url() {
    return `ws://127.0.0.1:${this.port}/ws`;
  }

  _accept(client) {
    this.accepted += 1;
    if (this.mode === 'refuse') {
      client.destroy();
      return;
    }
    const upstream = net.connect(this.targetPort, '127.0.0.1');
    const pair = { client, upstream, down: 'pass', up: 'pass' };
    this.pairs.add(pair);
    const drop = () => {
      client.destroy();
      upstream.destroy();
      this.pairs.delete(pair);
    };
    client.on('data', (chunk) => {
      if (pair.up === 'pass') upstream.write(chunk);
    });
    // What the server says is read frame by frame (after the HTTP upgrade), so that a test
    // can drop single WebSocket messages.
    let head = true;
    let buffered = Buffer.alloc(0);
    upstream.on('data', (chunk) => {
      if (pair.down !== 'pass') return;
      buffered = Buffer.concat([buffered, chunk]);
      if (head) {
        const end = buffered.indexOf('\r\n\r\n');
        if (end < 0) return;
        client.write(buffered.subarray(0, end + 4));
        buffered = buffered.subarray(end + 4);
        head = false;
      }
      for (;;) {
        const frame = nextFrame(buffered);
        if (!frame) return;
        buffered = buffered.subarray(frame.length);
        if (this.dropText && frame.text !== null && this.dropText(frame.text)) {
          this.dropped.push(frame.text);
          continue;
        }
        client.write(frame.bytes);
        if (this.twiceText && frame.text !== null && this.twiceText(frame.text)) client.write(frame.bytes);
      }
    });
    client.on('error', drop).on('close', drop);
    upstream.on('error', drop).on('close', drop);
  }

  /** Cuts every open connection (both sides see a reset). */
  cut() {
    const n = this.pairs.size;
    for (const pair of [...this.pairs]) {
      pair.client.resetAndDestroy?.() ?? pair.client.destroy();
      pair.upstream.destroy();
      this.pairs.delete(pair);
    }
    return n;
  }

  /** From now on, what the server says on the open connections is dropped. */
  blackholeDown() {
    for (const pair of this.pairs) pair.down = 'drop';
  }

  /** Open connections go quiet both ways, without closing (a half-open connection). */
  stall() {
    for (const pair of this.pairs) {
      pair.down = 'drop';
      pair.up = 'drop';
    }
  }

  /** New connections go to `port` (a restarted server). */
  retarget(port) {
    this.targetPort = port;
  }

  close() {
    this.cut();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

/** The first complete WebSocket frame (unmasked, as a server sends) of `buf`, or null. */
function nextFrame(buf) {
  if (buf.length < 2) return null;
  const opcode = buf[0] & 0x0f;
  let len = buf[1] & 0x7f;
  let offset = 2;
  if (len === 126) {
    if (buf.length < 4) return null;
    len = buf.readUInt16BE(2);
    offset = 4;
  } else if (len === 127) {
    if (buf.length < 10) return null;
    len = Number(buf.readBigUInt64BE(2));
    offset = 10;
  }
  if (buf[1] & 0x80) offset += 4; // masked (a server never masks)
  if (buf.length < offset + len) return null;
  const bytes = buf.subarray(0, offset + len);
  const text = opcode === 1 && buf[0] & 0x80 ? bytes.subarray(offset).toString('utf8') : null;
  return { bytes, text, length: offset + len };
}
