/**
 * The chat page served at `/` by `openchat serve`: a conversation streamed from the server's own
 * POST /v1/chat/completions (same origin, so no CORS), as any OpenAI client would send it.
 *
 * The API key (when the server runs with --api-keys) is typed once into the page, kept in this
 * tab's sessionStorage, and sent as `Authorization: Bearer`. Errors are shown as the API words
 * them (`error.message`, and its `code`), whether they come as the answer's status or as an error
 * event in the middle of a stream. Stop aborts the request: the server sees the connection close
 * and cancels the generation after the current token.
 *
 * Each conversation sends its own random `X-Session-Id`, so that a load balancer in front of
 * several replicas (deploy/) sends every turn to the replica that holds the earlier turns in its
 * KV cache.
 */

interface Message {
  role: 'system' | 'user' | 'assistant';
  content: string;
}

interface ApiErrorBody {
  error?: { message?: string; code?: string | null };
}

interface ChatChunk extends ApiErrorBody {
  choices?: Array<{ delta?: { content?: string }; finish_reason?: string | null }>;
  usage?: { prompt_tokens: number; completion_tokens: number; total_tokens: number } | null;
  model?: string;
}

const KEY_STORAGE = 'openchat-api-key';

function byId<T extends HTMLElement>(id: string): T {
  const el = document.getElementById(id);
  if (!el) throw new Error(`the page has no #${id}`);
  return el as T;
}

const ui = {
  key: byId<HTMLInputElement>('key'),
  system: byId<HTMLTextAreaElement>('system'),
  condition: byId<HTMLSelectElement>('condition'),
  temperature: byId<HTMLInputElement>('temperature'),
  topP: byId<HTMLInputElement>('top_p'),
  maxTokens: byId<HTMLInputElement>('max_tokens'),
  seed: byId<HTMLInputElement>('seed'),
  clear: byId<HTMLButtonElement>('clear'),
  model: byId<HTMLSpanElement>('model'),
  usage: byId<HTMLSpanElement>('usage'),
  messages: byId<HTMLOListElement>('messages'),
  error: byId<HTMLParagraphElement>('error'),
  compose: byId<HTMLFormElement>('compose'),
  input: byId<HTMLTextAreaElement>('input'),
  send: byId<HTMLButtonElement>('send'),
  stop: byId<HTMLButtonElement>('stop'),
};

/** The conversation so far (without the system message, which is read from its field per request). */
const history: Message[] = [];
let running: AbortController | null = null;
let modelName: string | null = null;
let sessionId = newSessionId();

/** 128 random bits in hex (crypto.randomUUID needs a secure context; a page served over plain http is not one). */
function newSessionId(): string {
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, '0')).join('');
}

ui.key.value = sessionStorage.getItem(KEY_STORAGE) ?? '';
ui.key.addEventListener('change', () => {
  sessionStorage.setItem(KEY_STORAGE, ui.key.value.trim());
  void loadModelName();
});

function headers(json: boolean): Record<string, string> {
  const h: Record<string, string> = {};
  if (json) h['Content-Type'] = 'application/json';
  const key = ui.key.value.trim();
  if (key) h['Authorization'] = `Bearer ${key}`;
  return h;
}

function showError(text: string | null): void {
  ui.error.hidden = text === null;
  ui.error.textContent = text ?? '';
}

/** The API's own words for an error body: its message, and its code when it has one. */
function apiErrorText(status: number | null, body: ApiErrorBody | null, fallback: string): string {
  const message = body?.error?.message ?? fallback;
  const code = body?.error?.code;
  return `${status === null ? '' : `${status}: `}${message}${code ? ` (${code})` : ''}`;
}

async function errorOf(res: Response): Promise<string> {
  const text = await res.text();
  let body: ApiErrorBody | null = null;
  try {
    body = JSON.parse(text) as ApiErrorBody;
  } catch {
    // Not JSON (a proxy's page): show the start of it.
  }
  return apiErrorText(res.status, body, text.slice(0, 300) || res.statusText);
}

async function loadModelName(): Promise<void> {
  try {
    const res = await fetch('/v1/models', { headers: headers(false) });
    if (!res.ok) {
      ui.model.textContent = 'model: ?';
      showError(await errorOf(res));
      // Point at the key field, unless the user is busy in another one (focus must not move under their typing).
      if (res.status === 401 && (document.activeElement === null || document.activeElement === document.body)) ui.key.focus();
      return;
    }
    const list = (await res.json()) as { data: Array<{ id: string }> };
    modelName = list.data[0]?.id ?? null;
    ui.model.textContent = `model: ${modelName ?? '?'}`;
    showError(null);
  } catch (err) {
    showError(`cannot reach the server: ${(err as Error).message}`);
  }
}

function addMessage(role: Message['role'], text: string): HTMLLIElement {
  const li = document.createElement('li');
  li.className = role;
  const label = document.createElement('span');
  label.className = 'role';
  label.textContent = role;
  li.append(label, document.createTextNode(text));
  ui.messages.append(li);
  li.scrollIntoView({ block: 'end' });
  return li;
}

/** A number field's value, or undefined when it is empty (the server's default applies). */
function numberField(input: HTMLInputElement): number | undefined {
  return input.value.trim() === '' ? undefined : Number(input.value);
}

function requestBody(): object {
  const system = ui.system.value.trim();
  const messages: Message[] = system ? [{ role: 'system', content: system }, ...history] : [...history];
  return {
    model: modelName ?? 'openchat_3.5',
    messages,
    stream: true,
    stream_options: { include_usage: true },
    condition: ui.condition.value,
    temperature: numberField(ui.temperature),
    top_p: numberField(ui.topP),
    max_tokens: numberField(ui.maxTokens),
    seed: numberField(ui.seed),
  };
}

/** The `data:` payloads of a server-sent-events body, as they arrive. */
async function* sseData(body: ReadableStream<Uint8Array>, signal: AbortSignal): AsyncGenerator<string> {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  const onAbort = () => void reader.cancel().catch(() => {});
  signal.addEventListener('abort', onAbort);
  let buffered = '';
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return;
      buffered += decoder.decode(value, { stream: true });
      let end: number;
      while ((end = buffered.indexOf('\n\n')) >= 0) {
        const event = buffered.slice(0, end);
        buffered = buffered.slice(end + 2);
        for (const line of event.split('\n')) if (line.startsWith('data: ')) yield line.slice(6);
      }
    }
  } finally {
    signal.removeEventListener('abort', onAbort);
  }
}

function setRunning(on: boolean): void {
  ui.send.disabled = on;
  ui.stop.disabled = !on;
}

async function send(text: string): Promise<void> {
  showError(null);
  history.push({ role: 'user', content: text });
  const asked = addMessage('user', text);
  const li = addMessage('assistant', '');
  li.classList.add('streaming');
  const content = li.lastChild as Text;
  const abort = new AbortController();
  running = abort;
  setRunning(true);
  let answer = '';
  try {
    const res = await fetch('/v1/chat/completions', {
      method: 'POST',
      headers: { ...headers(true), 'X-Session-Id': sessionId },
      body: JSON.stringify(requestBody()),
      signal: abort.signal,
    });
    if (!res.ok || !res.body) {
      // Refused: the turn is taken back, and its text returns to the input to send again.
      showError(await errorOf(res));
      history.pop();
      asked.remove();
      li.remove();
      ui.input.value = text;
      return;
    }
    for await (const data of sseData(res.body, abort.signal)) {
      if (data === '[DONE]') break;
      const chunk = JSON.parse(data) as ChatChunk;
      if (chunk.error) {
        showError(apiErrorText(null, chunk, 'the stream ended with an error'));
        break;
      }
      const piece = chunk.choices?.[0]?.delta?.content;
      if (piece) {
        answer += piece;
        content.data = answer;
        li.scrollIntoView({ block: 'end' });
      }
      if (chunk.usage) {
        const u = chunk.usage;
        ui.usage.textContent = `${chunk.model ?? ''}: ${u.prompt_tokens} prompt + ${u.completion_tokens} completion = ${u.total_tokens} tokens`;
      }
    }
    if (abort.signal.aborted) li.classList.add('stopped');
  } catch (err) {
    if (abort.signal.aborted) li.classList.add('stopped');
    else showError(`the request failed: ${(err as Error).message}`);
  } finally {
    li.classList.remove('streaming');
    li.classList.add('done');
    if (answer) history.push({ role: 'assistant', content: answer });
    running = null;
    setRunning(false);
  }
}

ui.compose.addEventListener('submit', (ev) => {
  ev.preventDefault();
  const text = ui.input.value.trim();
  if (!text || running) return;
  ui.input.value = '';
  void send(text);
});
ui.input.addEventListener('keydown', (ev) => {
  if (ev.key === 'Enter' && !ev.shiftKey) {
    ev.preventDefault();
    ui.compose.requestSubmit();
  }
});
ui.stop.addEventListener('click', () => running?.abort());
ui.clear.addEventListener('click', () => {
  running?.abort();
  history.length = 0;
  sessionId = newSessionId();
  ui.messages.replaceChildren();
  ui.usage.textContent = '';
  showError(null);
});

void loadModelName();
