/**
 * The chat page, served at `/` (and at `/engine`, where it starts on the tab's engine) by
 * `openchat serve`. It talks to one of two backends (backends.ts): the server's own
 * POST /v1/chat/completions, streamed, as any OpenAI client would send it (same origin, so no
 * CORS), or the engine running in this tab on its own WebGPU (tab_panel.ts loads it).
 *
 * - Answers are Markdown, rendered as they stream (markdown.ts: marked, then DOMPurify; nothing
 *   the model writes becomes markup), at most once an animation frame.
 * - Conversations are kept in the tab's localStorage (conversations.ts), listed on the left,
 *   renamed and deleted there; the current one comes back on reload. Each keeps its own
 *   X-Session-Id, so that a load balancer sends all its turns to the replica holding its KV cache.
 * - After each answer: its tokens/s, time to first token and token counts; copy, regenerate (the
 *   last answer) and edit-and-resend (a user message: the conversation from there is replaced).
 * - Enter sends, Shift+Enter is a new line, Esc stops the answer.
 *
 * The API key (when the server runs with --api-keys) is typed once into the page, kept in this
 * tab's sessionStorage, and sent as `Authorization: Bearer`. Errors are shown as the API words
 * them (`error.message`, and its `code`). A turn that fails before any text came is taken back,
 * its text returned to the input to send again; one that fails midway keeps what came.
 */
import type { ChatMessage, ChatParams } from '../../web/tab_api.ts';
import { HttpError, ServerBackend, TabBackend, type BackendKind, type ChatBackend } from './backends.ts';
import {
  CONVERSATION_PREFIX,
  conversationName,
  currentConversationId,
  deleteConversation,
  listConversations,
  loadConversation,
  newConversation,
  saveConversation,
  setCurrentConversationId,
  type Conversation,
  type StoredMessage,
} from './conversations.ts';
import { copyWithFeedback, renderMarkdown } from './markdown.ts';
import { TabPanel } from './tab_panel.ts';

const KEY_STORAGE = 'openchat-api-key';
const BACKEND_STORAGE = 'openchat-backend';
/** While an answer streams, it is saved at most this often (a reload midway keeps what came). */
const SAVE_EVERY_MS = 1000;

function byId<T extends HTMLElement>(id: string): T {
  const el = document.getElementById(id);
  if (!el) throw new Error(`the page has no #${id}`);
  return el as T;
}

function element<K extends keyof HTMLElementTagNameMap>(tag: K, className: string, text?: string): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  el.className = className;
  if (text !== undefined) el.textContent = text;
  return el;
}

function button(className: string, text: string, title: string, onClick: () => void): HTMLButtonElement {
  const b = element('button', className, text);
  b.type = 'button';
  b.title = title;
  b.addEventListener('click', onClick);
  return b;
}

const ui = {
  backend: byId<HTMLSelectElement>('backend'),
  key: byId<HTMLInputElement>('key'),
  system: byId<HTMLTextAreaElement>('system'),
  condition: byId<HTMLSelectElement>('condition'),
  temperature: byId<HTMLInputElement>('temperature'),
  topP: byId<HTMLInputElement>('top_p'),
  maxTokens: byId<HTMLInputElement>('max_tokens'),
  seed: byId<HTMLInputElement>('seed'),
  model: byId<HTMLSpanElement>('model'),
  usage: byId<HTMLSpanElement>('usage'),
  newConversation: byId<HTMLButtonElement>('new-conversation'),
  conversations: byId<HTMLUListElement>('conversations'),
  notice: byId<HTMLParagraphElement>('notice'),
  noticeText: byId<HTMLSpanElement>('notice-text'),
  undoDelete: byId<HTMLButtonElement>('undo-delete'),
  messages: byId<HTMLOListElement>('messages'),
  error: byId<HTMLParagraphElement>('error'),
  compose: byId<HTMLFormElement>('compose'),
  input: byId<HTMLTextAreaElement>('input'),
  send: byId<HTMLButtonElement>('send'),
  stop: byId<HTMLButtonElement>('stop'),
};

/** The conversation shown. A new one is saved (and listed) once it has a message. */
let conv: Conversation = loadConversation(currentConversationId() ?? '') ?? newConversation();
/** The answer being generated, and the conversation it belongs to. */
let running: { controller: AbortController; conv: Conversation } | null = null;
/** Deleted conversations: an answer still streaming into one must not save it back. */
const discarded = new WeakSet<Conversation>();
/** The last deleted conversation, for Undo. */
let lastDeleted: Conversation | null = null;

/** Shows an error in one line (null hides it). */
function showError(text: string | null): void {
  ui.error.hidden = text === null;
  ui.error.textContent = text === null ? '' : text.replace(/\s*\n\s*/g, ' ');
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** Saves `c`, saying so when the tab's storage refuses it. */
function persist(c: Conversation, touch = true): void {
  if (discarded.has(c)) return;
  try {
    saveConversation(c, touch);
  } catch (err) {
    showError(errorText(err));
  }
}

function makeCurrent(c: Conversation): void {
  conv = c;
  try {
    setCurrentConversationId(c.id);
  } catch (err) {
    showError(errorText(err));
  }
}

// --- backends ---------------------------------------------------------------------------------

const server = new ServerBackend(() => ui.key.value.trim());
const panel = new TabPanel({ showError, changed: () => showModel(), apiKey: () => ui.key.value.trim() });
const tab = new TabBackend(() => panel.engine(), () => panel.busy());

function backendKind(): BackendKind {
  return ui.backend.value === 'tab' ? 'tab' : 'server';
}

function backend(): ChatBackend {
  return backendKind() === 'tab' ? tab : server;
}

function showModel(): void {
  const b = backend();
  const name = b.modelName();
  ui.model.textContent = `model: ${name ?? (b.kind === 'tab' ? 'none loaded in this tab' : '?')}`;
}

async function loadServerModel(): Promise<void> {
  try {
    await server.fetchModelName();
    if (backendKind() === 'server') showError(null);
  } catch (err) {
    if (backendKind() !== 'server') return;
    showError(errorText(err));
    // Point at the key field, unless the user is busy in another one (focus must not move under their typing).
    if (err instanceof HttpError && err.status === 401 && (document.activeElement === null || document.activeElement === document.body)) ui.key.focus();
  } finally {
    showModel();
  }
}

function applyBackend(): void {
  const onTab = backendKind() === 'tab';
  panel.show(onTab);
  showError(null);
  showModel();
  if (!onTab) void loadServerModel();
}

/** A number field's value, or undefined when it is empty (the backend's default applies). */
function numberField(input: HTMLInputElement): number | undefined {
  return input.value.trim() === '' ? undefined : Number(input.value);
}

function params(): ChatParams {
  return {
    condition: ui.condition.value,
    temperature: numberField(ui.temperature),
    top_p: numberField(ui.topP),
    max_tokens: numberField(ui.maxTokens),
    seed: numberField(ui.seed),
  };
}

/** What the model is asked: the system message (read from its field per request), then the turns. Empty answers (stopped before any text) are left out. */
function requestMessages(messages: StoredMessage[]): ChatMessage[] {
  const system = ui.system.value.trim();
  const turns = messages.filter((m) => m.role === 'user' || m.content !== '').map((m) => ({ role: m.role, content: m.content }));
  return system ? [{ role: 'system', content: system }, ...turns] : turns;
}

// --- messages ---------------------------------------------------------------------------------

function formatMs(ms: number): string {
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(2)} s`;
}

function statsText(m: StoredMessage): string {
  const parts: string[] = [];
  if (m.stats) {
    const s = m.stats;
    parts.push(`${Number.isFinite(s.tokensPerSecond) ? s.tokensPerSecond.toFixed(1) : '–'} tokens/s`);
    parts.push(`first token ${formatMs(s.timeToFirstTokenMs)}`);
    parts.push(`${s.promptTokens} prompt + ${s.completionTokens} completion tokens`);
    if (s.finishReason === 'length') parts.push('max_tokens reached');
  }
  if (m.stopped) parts.push('stopped');
  if (m.error) parts.push(`ended by an error: ${m.error}`);
  if (m.model) parts.push(`${m.model}${m.backend === 'tab' ? ' (this tab)' : ''}`);
  return parts.join(' · ');
}

/** One message's item. `streaming`: the answer being generated (no actions until it ends). */
function messageItem(m: StoredMessage, index: number, streaming: boolean): HTMLLIElement {
  const li = element('li', m.role);
  li.dataset.index = String(index);
  const content = element('div', 'content');
  if (m.role === 'assistant') renderMarkdown(content, m.content);
  else content.textContent = m.content;
  li.append(element('span', 'role', m.role), content);
  if (streaming) {
    li.classList.add('streaming');
    return li;
  }
  const actions = element('span', 'actions');
  if (m.role === 'assistant') {
    li.classList.add('done');
    if (m.stopped) li.classList.add('stopped');
    const copy: HTMLButtonElement = button('copy', 'Copy', 'Copy this answer (its Markdown)', () => void copyWithFeedback(copy, m.content));
    actions.append(copy);
    if (index === conv.messages.length - 1) {
      const again = button('regenerate', 'Regenerate', 'Answer this again (replaces this answer)', () => void runTurn({ kind: 'regenerate' }));
      again.disabled = running !== null;
      actions.append(again);
    }
  } else {
    const edit = button('edit', 'Edit', 'Edit this message and send it again (replaces the conversation from here)', () => startEdit(li, index));
    edit.disabled = running !== null;
    actions.append(edit);
  }
  const meta = element('div', 'meta');
  meta.append(element('span', 'stats', m.role === 'assistant' ? statsText(m) : ''), actions);
  li.append(meta);
  return li;
}

function renderMessages(): void {
  const streamingAt = running?.conv === conv ? conv.messages.length - 1 : -1;
  ui.messages.replaceChildren(...conv.messages.map((m, i) => messageItem(m, i, i === streamingAt)));
  ui.messages.scrollTop = ui.messages.scrollHeight;
}

/** Whether the list is scrolled to (near) its end, so that new text should keep it there. */
function atBottom(): boolean {
  const m = ui.messages;
  return m.scrollHeight - m.scrollTop - m.clientHeight < 48;
}

/**
 * Re-renders a streaming answer's Markdown at most once an animation frame (a hidden tab renders
 * none until shown; flush() renders the end). The answer's element is looked up at each frame:
 * the list may have been redrawn since, or show another conversation.
 */
function streamingRenderer(c: Conversation): { update(text: string): void; flush(): void } {
  let pending: string | null = null;
  let frame = 0;
  const render = () => {
    frame = 0;
    const target = c === conv ? ui.messages.querySelector<HTMLElement>(':scope > li.streaming > .content') : null;
    if (pending === null || target === null) return;
    const follow = atBottom();
    renderMarkdown(target, pending);
    pending = null;
    if (follow) ui.messages.scrollTop = ui.messages.scrollHeight;
  };
  return {
    update(text) {
      pending = text;
      if (frame === 0) frame = requestAnimationFrame(render);
    },
    flush() {
      if (frame !== 0) cancelAnimationFrame(frame);
      render();
    },
  };
}

/** Edit-and-resend: the message becomes a text box; sending it replaces the conversation from there. */
function startEdit(li: HTMLLIElement, index: number): void {
  if (running) return;
  const m = conv.messages[index];
  if (!m) return;
  const area = element('textarea', 'edit-input');
  area.value = m.content;
  area.rows = Math.min(12, Math.max(2, m.content.split('\n').length));
  const submit = () => {
    const text = area.value.trim();
    if (!text) return;
    const refused = backend().refusal();
    if (refused) {
      showError(refused);
      return;
    }
    void runTurn({ kind: 'edit', index, text });
  };
  const box = element('div', 'editing');
  const row = element('div', 'row');
  row.append(button('resend', 'Send', 'Send this instead (the conversation from here is replaced)', submit), button('cancel-edit', 'Cancel', 'Keep the message as it was', renderMessages));
  box.append(area, row);
  area.addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      submit();
    } else if (ev.key === 'Escape') {
      ev.preventDefault();
      ev.stopPropagation();
      renderMessages();
    }
  });
  li.querySelector('.content')?.replaceWith(box);
  li.querySelector('.meta')?.remove();
  area.focus();
}

// --- a turn -----------------------------------------------------------------------------------

type Turn = { kind: 'send'; text: string } | { kind: 'regenerate' } | { kind: 'edit'; index: number; text: string };

function setRunning(on: boolean): void {
  ui.send.disabled = on;
  ui.stop.disabled = !on;
  ui.backend.disabled = on;
  panel.setChatting(on && backendKind() === 'tab');
  for (const b of ui.messages.querySelectorAll<HTMLButtonElement>('button.regenerate, button.edit')) b.disabled = on;
}

async function runTurn(turn: Turn): Promise<void> {
  if (running) return;
  const b = backend();
  const refused = b.refusal();
  if (refused) {
    showError(refused);
    return;
  }
  showError(null);
  const c = conv;
  const before = c.messages.slice();
  if (turn.kind === 'regenerate') {
    if (!c.messages.some((m) => m.role === 'user')) return;
    while (c.messages.at(-1)?.role === 'assistant') c.messages.pop();
  } else {
    if (turn.kind === 'edit') c.messages.splice(turn.index);
    c.messages.push({ role: 'user', content: turn.text });
  }
  const messages = requestMessages(c.messages);
  // Stopped until it ends: a reload midway shows what came as a stopped answer.
  const answer: StoredMessage = { role: 'assistant', content: '', stopped: true, backend: b.kind };
  c.messages.push(answer);
  const abort = new AbortController();
  running = { controller: abort, conv: c };
  persist(c);
  renderMessages();
  renderList();
  setRunning(true);
  const renderer = streamingRenderer(c);
  let error: string | null = null;
  let savedAt = performance.now();
  let stats: StoredMessage['stats'];
  try {
    for await (const ev of b.chat({ messages, params: params(), sessionId: c.sessionId, signal: abort.signal })) {
      if (ev.type === 'text') {
        answer.content += ev.text;
        renderer.update(answer.content);
        if (performance.now() - savedAt > SAVE_EVERY_MS) {
          persist(c);
          savedAt = performance.now();
        }
      } else {
        stats = {
          promptTokens: ev.usage.prompt_tokens,
          completionTokens: ev.usage.completion_tokens,
          timeToFirstTokenMs: ev.timeToFirstTokenMs,
          tokensPerSecond: ev.decodeTokensPerSecond,
          finishReason: ev.finishReason,
        };
      }
    }
  } catch (err) {
    if (!abort.signal.aborted) error = errorText(err);
  }
  renderer.flush();
  running = null;
  setRunning(false);

  if (error !== null && answer.content === '') {
    // Nothing came: the turn is taken back, and its text returns to the input to send again.
    c.messages.splice(0, c.messages.length, ...before);
    if (turn.kind !== 'regenerate' && ui.input.value.trim() === '') ui.input.value = turn.text;
  } else {
    answer.stopped = abort.signal.aborted || stats?.finishReason === 'cancelled';
    if (!answer.stopped) delete answer.stopped;
    if (stats) answer.stats = stats;
    if (error !== null) answer.error = error;
    const model = b.modelName();
    if (model) answer.model = model;
    if (stats && c === conv) {
      const total = stats.promptTokens + stats.completionTokens;
      ui.usage.textContent = `${model ?? ''}: ${stats.promptTokens} prompt + ${stats.completionTokens} completion = ${total} tokens`;
    }
  }
  persist(c);
  if (c === conv) renderMessages();
  renderList();
  if (error !== null) showError(error);
}

// --- conversations ----------------------------------------------------------------------------

function renderList(): void {
  const list = listConversations();
  ui.conversations.replaceChildren(...list.map(conversationItem));
}

function conversationItem(c: Conversation): HTMLLIElement {
  const li = element('li', c.id === conv.id ? 'current' : '');
  li.dataset.id = c.id;
  const open = button('open', conversationName(c), `Open this conversation (${c.messages.length} messages)`, () => switchTo(c.id));
  const rename = button('rename', '✎', 'Rename this conversation', () => startRename(li, c));
  const del = button('delete', '✕', 'Delete this conversation', () => remove(c.id));
  // Their text is a symbol: screen readers read the words instead.
  rename.setAttribute('aria-label', rename.title);
  del.setAttribute('aria-label', del.title);
  li.append(open, rename, del);
  return li;
}

function startRename(li: HTMLLIElement, c: Conversation): void {
  const input = element('input', 'rename-input');
  input.value = conversationName(c);
  input.setAttribute('aria-label', 'New name');
  let finished = false;
  const finish = (commit: boolean) => {
    if (finished) return;
    finished = true;
    if (commit) {
      // The current conversation is the object the page (and a streaming answer) holds: rename that one.
      const target = c.id === conv.id ? conv : loadConversation(c.id);
      if (target) {
        target.title = input.value.trim() || null;
        persist(target, false);
      }
    }
    renderList();
  };
  input.addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter') {
      ev.preventDefault();
      finish(true);
    } else if (ev.key === 'Escape') {
      ev.preventDefault();
      ev.stopPropagation();
      finish(false);
    }
  });
  input.addEventListener('blur', () => finish(true));
  li.querySelector('.open')?.replaceWith(input);
  input.focus();
  input.select();
}

function show(c: Conversation): void {
  makeCurrent(c);
  ui.usage.textContent = '';
  showError(null);
  renderMessages();
  renderList();
  ui.input.focus();
}

function switchTo(id: string): void {
  if (id === conv.id) return;
  const c = loadConversation(id);
  if (!c) {
    renderList();
    return;
  }
  running?.controller.abort();
  show(c);
}

function startNew(): void {
  running?.controller.abort();
  show(newConversation());
}

function remove(id: string): void {
  const c = id === conv.id ? conv : loadConversation(id);
  if (!c) return;
  if (running?.conv === c) running.controller.abort();
  discarded.add(c);
  deleteConversation(id);
  lastDeleted = c;
  ui.noticeText.textContent = `Deleted “${conversationName(c)}”.`;
  ui.notice.hidden = false;
  if (c === conv) show(newConversation());
  else renderList();
}

ui.undoDelete.addEventListener('click', () => {
  const c = lastDeleted;
  lastDeleted = null;
  ui.notice.hidden = true;
  if (!c) return;
  discarded.delete(c);
  persist(c, false);
  if (conv.messages.length === 0) show(c);
  else renderList();
});

// Another tab of the page changed the conversations: follow it (not while an answer streams here).
window.addEventListener('storage', (ev) => {
  if (ev.key !== null && !ev.key.startsWith(CONVERSATION_PREFIX)) return;
  renderList();
  if (!running && (ev.key === null || ev.key === CONVERSATION_PREFIX + conv.id)) {
    const c = loadConversation(conv.id);
    if (c) {
      conv = c;
      renderMessages();
    }
  }
});

// --- wiring -----------------------------------------------------------------------------------

ui.key.value = sessionStorage.getItem(KEY_STORAGE) ?? '';
ui.key.addEventListener('change', () => {
  sessionStorage.setItem(KEY_STORAGE, ui.key.value.trim());
  void loadServerModel();
});

ui.compose.addEventListener('submit', (ev) => {
  ev.preventDefault();
  const text = ui.input.value.trim();
  if (!text || running) return;
  const refused = backend().refusal();
  if (refused) {
    showError(refused);
    return;
  }
  ui.input.value = '';
  void runTurn({ kind: 'send', text });
});
ui.input.addEventListener('keydown', (ev) => {
  // isComposing: Enter that ends an input method's composition (Japanese, Chinese) is not a send.
  if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
    ev.preventDefault();
    ui.compose.requestSubmit();
  }
});
document.addEventListener('keydown', (ev) => {
  if (ev.key === 'Escape' && running) {
    ev.preventDefault();
    running.controller.abort();
  }
});
ui.stop.addEventListener('click', () => running?.controller.abort());
// Leaving (or reloading) while an answer streams keeps what came, as a stopped answer.
window.addEventListener('pagehide', () => {
  if (running) persist(running.conv);
});
ui.newConversation.addEventListener('click', startNew);

ui.backend.addEventListener('change', () => {
  try {
    localStorage.setItem(BACKEND_STORAGE, ui.backend.value);
  } catch {
    // A full storage only costs remembering the choice.
  }
  applyBackend();
});

// The page at /engine starts on the tab's engine; at / on the backend chosen last.
const onEnginePath = location.pathname.replace(/\/+$/, '') === '/engine';
ui.backend.value = onEnginePath || localStorage.getItem(BACKEND_STORAGE) === 'tab' ? 'tab' : 'server';
makeCurrent(conv);
renderMessages();
renderList();
applyBackend();
