// Types of chat-engine.js, the JavaScript client of chat-engine (protocol v1).

/** A WebSocket constructor: the browser's, Node 22's, or one from a package such as `ws`. */
export interface WebSocketLike {
  new (url: string): {
    binaryType: string;
    onopen: ((event: unknown) => void) | null;
    onmessage: ((event: { data: unknown }) => void) | null;
    onclose: ((event: { code?: number; reason?: string }) => void) | null;
    onerror: ((event: unknown) => void) | null;
    send(data: string): void;
    close(code?: number, reason?: string): void;
  };
}

export interface ChatClientOptions {
  /** `ws://host:port/ws` (or `wss://`). */
  url: string;
  /** Credentials for `hello`; the demo server takes `dev:<user>`. */
  token: string;
  /** The WebSocket implementation; default `globalThis.WebSocket` (Node 20 has none: pass `ws`). */
  WebSocket?: WebSocketLike;
  /** First reconnect delay in ms (default 100); each step doubles, with jitter (half to all of it). */
  backoffMin?: number;
  /** Longest reconnect delay in ms (default 10,000). */
  backoffMax?: number;
  /** How long opening a connection and its `hello` may take, in ms (default 10,000). */
  connectTimeout?: number;
  /** How long a request waits for its reply, reconnections included, in ms (default 60,000). */
  requestTimeout?: number;
  /** How many requests may wait for a reply or a connection (default 1,000); beyond, `queue_full`. */
  queueLimit?: number;
  /**
   * The liveness interval in ms, when shorter than the server's `heartbeat_ms`: after this
   * long without a frame the client pings, after three times this long it reconnects.
   */
  heartbeatMs?: number;
}

/** A message, handed over exactly once per (room, seq), in seq order per room. */
export interface Message {
  room: string;
  seq: number;
  from: string;
  /** The client message id it was sent with (match your own sends by it). */
  cid: string;
  body: string;
  /** Milliseconds since the Unix epoch, set by the server. */
  ts: number;
  meta?: Record<string, unknown>;
}

/** A room as the server reports it for this user (`hello`, `join`). */
export interface RoomState {
  room: string;
  /** The room's log identity: a new epoch means the log was reset. */
  epoch: string;
  /** The latest seq (0 for an empty room). */
  seq: number;
  /** This user's cumulative read cursor. */
  read: number;
  /** This user's cumulative delivered cursor. */
  delivered: number;
}

export interface ReceiptEvent {
  room: string;
  user: string;
  delivered?: number;
  read?: number;
}

export interface TypingEvent {
  room: string;
  user: string;
  active: boolean;
}

export interface PresenceEvent {
  user: string;
  status: 'online' | 'offline';
  /** null for a user who never connected. */
  last_seen: number | null;
}

export interface MemberEvent {
  room: string;
  user: string;
  action: 'join' | 'leave';
}

/**
 * A room's log was reset on the server (new epoch; e.g. it restarted without its store),
 * or this user is no longer in it (`epoch` null): drop what you hold of it and reload.
 */
export interface ResetEvent {
  room: string;
  epoch: string | null;
  /** The room's latest seq under the new epoch (0 when not a member). */
  seq: number;
}

export type ConnectionState = 'idle' | 'connecting' | 'online' | 'reconnecting' | 'closed';

/**
 * The connection changed state. `connecting`: before the first session (attempt n);
 * `online`: a session is open; `reconnecting`: a session was lost, the client tries again
 * in `retryIn` ms; `closed`: stopped for good (closed, or the token refused).
 */
export interface StateEvent {
  state: ConnectionState;
  attempt?: number;
  /** Why the last connection ended or failed. */
  reason?: string | null;
  retryIn?: number;
  /** With `online`: who the server says we are, and every room of the user. */
  user?: string;
  session?: string | null;
  rooms?: RoomState[];
}

/** An `error` the server sent without a request id (nothing to reject). */
export interface ErrorEvent {
  code: string;
  message: string;
}

export interface ChatEvents {
  message: Message;
  receipt: ReceiptEvent;
  typing: TypingEvent;
  presence: PresenceEvent;
  member: MemberEvent;
  reset: ResetEvent;
  state: StateEvent;
  error: ErrorEvent;
}

export interface SendAck {
  /** The room (the direct room for a send `to` a user). */
  room: string;
  seq: number;
  ts: number;
  cid: string;
  /** Whether it had been stored already (a retry with the same cid). */
  dup: boolean;
}

export interface SendOptions {
  /** Reusing a cid makes the send a retry of the earlier one (stored once). Default: random. */
  cid?: string;
  /** A JSON object the server stores and forwards untouched (at most 4 KiB). */
  meta?: Record<string, unknown>;
}

export interface HistoryQuery {
  /** Messages before this seq (older). */
  before?: number;
  /** Messages after this seq (newer). */
  after?: number;
  /** At most this many (server default 50, cap 500). */
  limit?: number;
}

export interface HistoryPage {
  room: string;
  /** Ascending by seq. */
  messages: Message[];
  /** Whether more exist beyond the page in its direction. */
  more: boolean;
}

export interface MemberInfo extends PresenceEvent {
  read: number;
  delivered: number;
}

export type ErrorCode =
  | 'bad_request'
  | 'unauthorized'
  | 'forbidden'
  | 'not_found'
  | 'too_large'
  | 'rate_limited'
  | 'unavailable'
  | 'internal'
  | 'closed'
  | 'timeout'
  | 'queue_full'
  | 'connect'
  | 'protocol'
  | (string & {});

/** Why a call failed: the server's protocol code, or the client's own. */
export class ChatError extends Error {
  constructor(code: ErrorCode, message: string);
  readonly code: ErrorCode;
}

/**
 * A chat-engine client: reconnects by itself with backoff and jitter, resumes every room,
 * hands each message over once and in order, fills gaps from history, and retries what
 * was not answered after a reconnect (sends keep their cid, so they are stored once).
 *
 * Every request waits for the server's reply; while offline it waits in a bounded queue
 * and goes out after the reconnect.
 */
export class ChatClient {
  constructor(options: ChatClientOptions);
  /** Connects and waits for the first session; rejects (`connect`, `unauthorized`) if it fails. */
  static connect(options: ChatClientOptions): Promise<ChatClient>;
  /** Connects in the background; requests wait meanwhile. Idempotent; returns the client. */
  start(): this;

  readonly state: ConnectionState;
  readonly connected: boolean;
  /** The user the server authenticated (once online). */
  readonly user: string | null;
  readonly session: string | null;
  /** Requests waiting for a reply or a connection. */
  readonly queued: number;

  /** Listens to an event; returns a function that removes the listener. */
  on<K extends keyof ChatEvents>(type: K, listener: (event: ChatEvents[K]) => void): () => void;
  off<K extends keyof ChatEvents>(type: K, listener: (event: ChatEvents[K]) => void): void;
  once<K extends keyof ChatEvents>(type: K, listener: (event: ChatEvents[K]) => void): () => void;

  /** Sends `body` to `room`; resolves once the message is stored. */
  send(room: string, body: string, options?: SendOptions): Promise<SendAck>;
  /** Sends `body` to `user` in the direct room (made if needed; both become members). */
  sendTo(user: string, body: string, options?: SendOptions): Promise<SendAck>;
  sendMessage(message: ({ room: string; to?: never } | { to: string; room?: never }) & { body: string } & SendOptions): Promise<SendAck>;
  /** Joins `room` (made if it does not exist). */
  join(room: string): Promise<RoomState>;
  leave(room: string): Promise<void>;
  /** The latest page, or one before/after a seq. */
  history(room: string, query?: HistoryQuery): Promise<HistoryPage>;
  members(room: string): Promise<MemberInfo[]>;
  presence(users: string[]): Promise<PresenceEvent[]>;
  /** Marks `room` read up to `seq` (and delivered up to there). */
  markRead(room: string, seq: number): Promise<void>;
  markDelivered(room: string, seq: number): Promise<void>;
  /** Sent only while online (a late typing indicator is worth nothing); returns whether it was. */
  typing(room: string, active?: boolean): boolean;
  ping(): Promise<void>;
  /** Closes the connection and stops; waiting requests fail with `closed`. */
  close(): void;
}

/**
 * The room bookkeeping the client runs on (pure logic, no I/O): each (room, seq) once and
 * in order, messages ahead of a gap held back, the `history` request that fills the gap.
 */
export class RoomTracker {
  resumePoints(): Record<string, { epoch: string; seq: number }>;
  epochUnknown(room: string): boolean;
  last(room: string): number | null;
  offer(message: Message): { deliver: Message[]; fill: { room: string; after: number; limit: number } | null };
  fillDone(room: string): { room: string; after: number; limit: number } | null;
  fillAbandoned(room: string): void;
  onHello(rooms: RoomState[]): { resets: ResetEvent[]; fills: { room: string; after: number; limit: number }[] };
  onJoin(state: RoomState): ResetEvent | null;
  onJoinedElsewhere(room: string): void;
  onLeft(room: string): void;
}

/** A fresh random client message id. */
export function newCid(): string;
/** The direct room of two users: `dm:` + both ids in byte order joined by `:`. */
export function directRoom(a: string, b: string): string;
/** The other user of a direct room as seen by `me`, or null. */
export function directPeer(room: string, me: string): string | null;
