/**
 * The chat page's conversations, kept in the tab's localStorage so that they survive reloads.
 *
 * One key per conversation (`openchat-conversation:<id>`, a JSON Conversation) rather than one
 * key for the list: two tabs of the page then each write only the conversations they change, and
 * neither overwrites the other's. The current conversation's id is kept under
 * `openchat-current-conversation` (in sessionStorage and localStorage: currentConversationId). localStorage is synchronous and small (about 5 MB an origin),
 * which suits text; a full storage is reported, not hidden (StorageFullError).
 */

export const CONVERSATION_PREFIX = 'openchat-conversation:';
export const CURRENT_KEY = 'openchat-current-conversation';
const VERSION = 1;

/** What an answer took, as measured for it (ChatEvent's done event). */
export interface AnswerStats {
  promptTokens: number;
  completionTokens: number;
  timeToFirstTokenMs: number;
  /** Completion tokens after the first, per second of decoding. */
  tokensPerSecond: number;
  finishReason: string;
}

export interface StoredMessage {
  role: 'user' | 'assistant';
  content: string;
  /** Answers: their measurements, when the answer ended with them (a stopped server stream has none). */
  stats?: AnswerStats;
  /** Answers: stopped by the user before the model finished. */
  stopped?: boolean;
  /** Answers: the error that ended it midway (what came before it is kept). */
  error?: string;
  /** Answers: which backend gave it, and its model. */
  backend?: 'server' | 'tab';
  model?: string;
}

export interface Conversation {
  version: number;
  id: string;
  /** The name the user gave it; null: named after its first message. */
  title: string | null;
  /**
   * Sent as X-Session-Id with each of its turns, so that a load balancer in front of several
   * replicas (deploy/) sends every turn to the replica that holds the earlier turns in its KV cache.
   */
  sessionId: string;
  createdAt: number;
  updatedAt: number;
  messages: StoredMessage[];
}

/** localStorage refused a write (its quota is spent). */
export class StorageFullError extends Error {}

/** 128 random bits in hex (crypto.randomUUID needs a secure context; a page served over plain http is not one). */
export function randomId(): string {
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, '0')).join('');
}

export function newConversation(): Conversation {
  const now = Date.now();
  return { version: VERSION, id: randomId(), title: null, sessionId: randomId(), createdAt: now, updatedAt: now, messages: [] };
}

/** The name shown for a conversation: its own, else its first message's first line. */
export function conversationName(c: Conversation): string {
  if (c.title) return c.title;
  const first = c.messages.find((m) => m.role === 'user')?.content.trim().split('\n')[0] ?? '';
  if (!first) return 'New conversation';
  return first.length > 48 ? `${first.slice(0, 47)}…` : first;
}

function isMessage(v: unknown): v is StoredMessage {
  const m = v as StoredMessage;
  return typeof m === 'object' && m !== null && (m.role === 'user' || m.role === 'assistant') && typeof m.content === 'string';
}

/** A stored conversation, or null when the text is not one (another version, or damaged). */
export function parseConversation(text: string | null): Conversation | null {
  if (text === null) return null;
  let v: Conversation;
  try {
    v = JSON.parse(text) as Conversation;
  } catch {
    return null;
  }
  if (typeof v !== 'object' || v === null || v.version !== VERSION || typeof v.id !== 'string' || typeof v.sessionId !== 'string') return null;
  if (!Array.isArray(v.messages) || !v.messages.every(isMessage)) return null;
  return v;
}

export function loadConversation(id: string): Conversation | null {
  return parseConversation(localStorage.getItem(CONVERSATION_PREFIX + id));
}

/** Every stored conversation, the most recently changed first. */
export function listConversations(): Conversation[] {
  const list: Conversation[] = [];
  for (let i = 0; i < localStorage.length; i++) {
    const key = localStorage.key(i);
    if (!key?.startsWith(CONVERSATION_PREFIX)) continue;
    const c = parseConversation(localStorage.getItem(key));
    if (c) list.push(c);
  }
  return list.sort((a, b) => b.updatedAt - a.updatedAt);
}

function write(key: string, value: string): void {
  try {
    localStorage.setItem(key, value);
  } catch (err) {
    if (err instanceof DOMException && err.name === 'QuotaExceededError') {
      throw new StorageFullError("the tab's storage is full, so this conversation is not saved: delete old conversations to make room");
    }
    throw err;
  }
}

/**
 * Stores `c` (an empty conversation is not kept: it appears in the list once it has a message).
 * `touch`: its messages changed, so it moves to the top of the list (a rename does not move it).
 */
export function saveConversation(c: Conversation, touch = true): void {
  if (c.messages.length === 0) {
    localStorage.removeItem(CONVERSATION_PREFIX + c.id);
    return;
  }
  if (touch) c.updatedAt = Date.now();
  write(CONVERSATION_PREFIX + c.id, JSON.stringify(c));
}

export function deleteConversation(id: string): void {
  localStorage.removeItem(CONVERSATION_PREFIX + id);
}

/**
 * The conversation to show on load: this tab's own (sessionStorage survives its reloads, so two
 * tabs each come back to theirs), else the last one any tab showed (a new tab).
 */
export function currentConversationId(): string | null {
  return sessionStorage.getItem(CURRENT_KEY) ?? localStorage.getItem(CURRENT_KEY);
}

export function setCurrentConversationId(id: string): void {
  sessionStorage.setItem(CURRENT_KEY, id);
  write(CURRENT_KEY, id);
}
