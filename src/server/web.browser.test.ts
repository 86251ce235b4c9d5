/**
 * The chat page (GET /) in a real browser: headless Chromium (browser.testing.ts) against the
 * server on the bundled tiny model, with an API key. One browser for the file; each test has its
 * own browser context, so its own storage.
 *
 * With the real server: the page's answer is checked against the Generator run directly with the
 * same prompt and parameters, as server.test.ts checks the API; stop (and Esc) must cancel the
 * generation on the server; a wrong key must show the server's own error; conversations and their
 * X-Session-Ids survive reloads. With canned answers (Playwright routes /v1/chat/completions to a
 * fixed event stream, so the text is known): Markdown renders, and the model's HTML stays inert
 * even with the page's CSP switched off; regenerate and edit-and-resend send what they should;
 * copy copies. With a stand-in for the tab's engine (a module routed at /web/engine.js that keeps
 * the TabEngine contract): the tab panel, its loading and cache, and chatting through it.
 * Screenshot: .cache/screenshots/chat.png.
 */
import type { Browser, BrowserContext, Page, Request } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Generator } from '../generator.ts';
import { validateSamplingParams } from '../sampling/params.ts';
import type { ChatMessage } from '../tokenizer/tokenizer.ts';
import { Rng } from '../util/rng.ts';
import { freshSeed } from '../util/testing.ts';
import { browserSkipReason, collectPageErrors, launchChromium, screenshot } from './browser.testing.ts';
import { startServer, type RunningServer } from './server.ts';

const skip = browserSkipReason();
const seed = freshSeed();
const rng = new Rng(seed);
const tag = `(test seed ${seed})`;
const KEY = `sk-page-${rng.int(0, 2 ** 31)}`;
/** How long to wait for the page to show something (vitest's own 1 s is short on a busy 2-core machine). */
const WAIT = { timeout: 20_000 };

/** What the page stores per conversation (src/server/web/conversations.ts), as far as the tests read it. */
interface StoredConversation {
  id: string;
  title: string | null;
  sessionId: string;
  messages: Array<{ role: 'user' | 'assistant'; content: string; stopped?: boolean; stats?: { completionTokens: number } }>;
}

/** A canned answer as the server streams it: `pieces` as deltas, then the finish and the usage chunks. */
function cannedStream(pieces: string[], usage = { prompt_tokens: 3, completion_tokens: 2 }): string {
  const event = (v: unknown) => `data: ${JSON.stringify(v)}\n\n`;
  const chunk = (delta: object, finish: string | null) => ({ model: 'canned-model', choices: [{ index: 0, delta, finish_reason: finish }] });
  return [
    event(chunk({ role: 'assistant', content: '' }, null)),
    ...pieces.map((p) => event(chunk({ content: p }, null))),
    event(chunk({}, 'stop')),
    event({ model: 'canned-model', choices: [], usage: { ...usage, total_tokens: usage.prompt_tokens + usage.completion_tokens } }),
    'data: [DONE]\n\n',
  ].join('');
}

/** `text` cut into pieces of 1..max characters (rng), so that tags and fences arrive split. */
function split(text: string, max: number): string[] {
  const out: string[] = [];
  for (let i = 0; i < text.length; ) {
    const n = rng.int(1, max);
    out.push(text.slice(i, i + n));
    i += n;
  }
  return out;
}

/**
 * A stand-in for the tab's engine (src/web/tab_api.ts's TabEngine), served at /web/engine.js:
 * what it is asked is kept in window.__engineCalls. A URL containing "hang" loads until cancelled.
 */
const STUB_ENGINE = `
const calls = (window.__engineCalls = []);
let model = null;
let cache = [
  { key: 'k-weights', url: '/engine/served/model.safetensors', bytes: 3 * 2 ** 20, etag: '"e1"', storedAt: 0 },
  { key: 'k-config', url: '/engine/served/config.json', bytes: 2048, etag: '"e2"', storedAt: 0 },
];
export const engine = {
  async adapter() { return 'Stub adapter (test)'; },
  async load(origin, opts = {}) {
    calls.push(['load', origin.kind, origin.url ?? null]);
    const total = 4 * 2 ** 20;
    opts.onProgress?.({ bytesDone: total / 2, bytesTotal: total, bytesPerSecond: 2 ** 20, bytesFromCache: 0, tensorsDone: 1, tensorsTotal: 2 });
    if (origin.kind === 'url' && origin.url.includes('hang')) {
      await new Promise((_, reject) => opts.signal.addEventListener('abort', () => reject(new DOMException('the load was cancelled', 'AbortError'))));
    }
    model = { name: 'stub-model', bytes: total, bytesFromCache: 2 ** 20, seconds: 1.5, contextLength: 512 };
    return model;
  },
  loaded() { return model; },
  async *chat(messages, params, signal) {
    calls.push(['chat', messages, params]);
    for (const piece of ['Hello ', 'from **the** ', 'tab.']) {
      await new Promise((r) => setTimeout(r, 5));
      yield { type: 'text', text: piece };
    }
    yield { type: 'done', finishReason: signal?.aborted ? 'cancelled' : 'stop', usage: { prompt_tokens: 7, completion_tokens: 3 }, timeToFirstTokenMs: 12, decodeTokensPerSecond: 40 };
  },
  async cached() { return cache; },
  async deleteCached(key) { calls.push(['delete', key ?? null]); cache = key === undefined ? [] : cache.filter((f) => f.key !== key); },
  async storage() { return { usage: 3 * 2 ** 20, quota: 2 ** 30, persisted: true }; },
};
`;

describe.skipIf(skip !== null)('the chat page in Chromium', () => {
  let gen: Generator;
  let srv: RunningServer;
  let browser: Browser;
  const logs: string[] = [];

  beforeAll(async () => {
    gen = await Generator.load();
    srv = await startServer({ generator: gen, port: 0, apiKeys: [KEY], log: (l) => logs.push(l) });
    browser = await launchChromium();
  });

  afterAll(async () => {
    await browser?.close();
    await srv?.close();
    gen?.close();
  });

  interface Opened {
    page: Page;
    context: BrowserContext;
    errors: string[];
    /** The chat requests the page made, as sent. */
    requests: Array<{ body: { messages: ChatMessage[] } & Record<string, unknown>; sessionId: string | undefined }>;
  }

  /** A page in a fresh context; `key`: the API key already typed in (kept in sessionStorage, as the page keeps it). */
  async function openPage(opts: { key?: boolean; path?: string; bypassCSP?: boolean; before?: (page: Page) => Promise<void> } = {}): Promise<Opened> {
    const context = await browser.newContext({ viewport: { width: 1100, height: 700 }, bypassCSP: opts.bypassCSP ?? false });
    const page = await context.newPage();
    const errors = collectPageErrors(page);
    const requests: Opened['requests'] = [];
    page.on('request', (r: Request) => {
      if (r.method() === 'POST' && new URL(r.url()).pathname === '/v1/chat/completions') {
        requests.push({ body: r.postDataJSON() as Opened['requests'][number]['body'], sessionId: r.headers()['x-session-id'] });
      }
    });
    if (opts.key) await page.addInitScript((key) => sessionStorage.setItem('openchat-api-key', key), KEY);
    await opts.before?.(page);
    await page.goto(`${srv.url}${opts.path ?? '/'}`);
    if (opts.key) await expect.poll(() => page.textContent('#model'), WAIT).toBe(`model: ${gen.modelName}`);
    return { page, context, errors, requests };
  }

  /** Answers every chat request with the next of `answers` (as a canned stream), so the text is known. */
  async function cannedAnswers(page: Page, answers: Array<string | string[]>): Promise<void> {
    let i = 0;
    await page.route('**/v1/chat/completions', async (route) => {
      const answer = answers[Math.min(i++, answers.length - 1)]!;
      await route.fulfill({ status: 200, headers: { 'Content-Type': 'text/event-stream' }, body: cannedStream(typeof answer === 'string' ? [answer] : answer) });
    });
  }

  /** The current conversation as the page stored it. */
  async function stored(page: Page): Promise<StoredConversation | null> {
    return page.evaluate(() => {
      const id = localStorage.getItem('openchat-current-conversation');
      const text = id === null ? null : localStorage.getItem(`openchat-conversation:${id}`);
      return text === null ? null : (JSON.parse(text) as StoredConversation);
    });
  }

  /** The text of each element `selector` matches, without the whitespace around it (rendered Markdown ends its paragraphs with a newline). */
  async function texts(page: Page, selector: string): Promise<string[]> {
    return (await page.locator(selector).allTextContents()).map((t) => t.trim());
  }

  async function send(page: Page, text: string, doneCount: number): Promise<void> {
    await page.fill('#input', text);
    await page.click('#send');
    await expect.poll(() => page.locator('#messages li.assistant.done').count(), WAIT).toBe(doneCount);
  }

  async function direct(messages: ChatMessage[], condition: string, params: Record<string, unknown>): Promise<{ text: string; completion: number }> {
    let text = '';
    for await (const ev of gen.generate(gen.encodeChat(messages, condition), validateSamplingParams(params))) {
      if (ev.type === 'text') text += ev.text;
      else return { text, completion: ev.usage.completion_tokens };
    }
    throw new Error('no done event');
  }

  it('asks for the key, then streams an answer equal to the generator\'s, with the model name, token counts and speed', async () => {
    const { page, context, errors } = await openPage();
    // Without a key the page shows the server's 401, in the API's words.
    await expect.poll(() => page.textContent('#error'), WAIT).toContain("You didn't provide an API key");
    await page.fill('#key', KEY);
    await page.dispatchEvent('#key', 'change');
    await expect.poll(() => page.textContent('#model'), WAIT).toBe(`model: ${gen.modelName}`);
    expect(await page.isHidden('#error')).toBe(true);

    const s = rng.int(0, 2 ** 31);
    const user = `tell me about the sea ${rng.int(0, 1000)}`;
    await page.fill('#system', 'You are terse.');
    await page.selectOption('#condition', 'Code');
    await page.fill('#temperature', '0.9');
    await page.fill('#top_p', '0.95');
    await page.fill('#max_tokens', '12');
    await page.fill('#seed', String(s));
    await send(page, user, 1);

    const messages: ChatMessage[] = [{ role: 'system', content: 'You are terse.' }, { role: 'user', content: user }];
    const want = await direct(messages, 'Code', { temperature: 0.9, top_p: 0.95, max_tokens: 12, seed: s });
    // The tiny model's noise may hold Markdown syntax, so the answer is compared as the page keeps it.
    const conv = await stored(page);
    expect(conv?.messages.map((m) => m.role)).toEqual(['user', 'assistant']);
    expect(conv?.messages[0]!.content).toBe(user);
    expect(conv?.messages[1]!.content, tag).toBe(want.text);
    const prompt = gen.encodeChat(messages, 'Code').length;
    expect(await page.textContent('#usage')).toBe(`${gen.modelName}: ${prompt} prompt + ${want.completion} completion = ${prompt + want.completion} tokens`);
    const stats = await page.textContent('#messages li.assistant .stats');
    expect(stats).toContain('tokens/s');
    expect(stats).toContain('first token');
    expect(stats).toContain(`${prompt} prompt + ${want.completion} completion tokens`);
    expect(await page.textContent('#messages li.user .content')).toBe(user);
    await screenshot(page, 'chat');
    expect(errors, errors.join('\n')).toEqual([]);
    await context.close();
  });

  it('stop aborts the request: the server cancels the generation', async () => {
    const { page, context } = await openPage({ key: true });
    await page.fill('#max_tokens', '900');
    await page.fill('#temperature', '1');
    await page.fill('#input', `a long story ${rng.int(0, 1000)}`);
    await page.click('#send');
    // Some text streamed, then Stop.
    // (Polled from here: a page-side predicate given as a string would be an eval, which the page's CSP refuses.)
    await expect.poll(() => page.textContent('#messages li.assistant .content'), { timeout: 30_000 }).not.toBe('');
    expect(await page.isEnabled('#stop')).toBe(true);
    const before = logs.filter((l) => l.includes('POST /v1/chat/completions 499')).length;
    await page.click('#stop');
    await page.waitForSelector('#messages li.assistant.stopped.done');
    expect(await page.isEnabled('#send')).toBe(true);
    expect(await page.isDisabled('#stop')).toBe(true);
    // The server saw the client leave (status 499 in its log, "cancelled"), well before 900 tokens.
    await expect.poll(() => logs.filter((l) => l.includes('POST /v1/chat/completions 499')).length, { timeout: 10_000 }).toBe(before + 1);
    const line = logs.filter((l) => l.includes('POST /v1/chat/completions 499')).at(-1)!;
    expect(line).toContain('cancelled');
    expect(Number(/completion_tokens=(\d+)/.exec(line)?.[1])).toBeLessThan(900);
    expect(await page.isHidden('#error')).toBe(true);
    expect((await stored(page))?.messages[1]?.stopped).toBe(true);
    await context.close();
  });

  it('a wrong key shows the server\'s error, and the message can be sent again', async () => {
    const { page, context } = await openPage();
    await page.fill('#key', 'sk-wrong');
    await page.dispatchEvent('#key', 'change');
    await expect.poll(() => page.textContent('#error'), WAIT).toBe('401: Incorrect API key provided. (invalid_api_key)');
    await page.fill('#input', 'hello');
    await page.click('#send');
    // The refused turn is taken back: its text returns to the input, no message stays.
    await expect.poll(() => page.inputValue('#input'), WAIT).toBe('hello');
    expect(await page.textContent('#error')).toBe('401: Incorrect API key provided. (invalid_api_key)');
    expect(await page.$$('#messages li')).toHaveLength(0);
    expect(await stored(page)).toBeNull();
    expect(await page.$$('#conversations li')).toHaveLength(0);
    await context.close();
  });

  it('renders an answer\'s Markdown as it streams, and the model\'s HTML stays inert even without the CSP', async () => {
    // Without the page's CSP an inline script or handler that reached the DOM would run: only the
    // renderer stands between the model's text and the page here.
    const { page, context, errors } = await openPage({ key: true, bypassCSP: true });
    const markdown = [
      'Here is **bold** and `inline code`.',
      '',
      '<script>document.title = "pwned"; window.__pwned = "script";</script>',
      '<img src=x onerror="window.__pwned = \'img\'">',
      '<iframe src="javascript:parent.__pwned=\'iframe\'"></iframe>',
      '',
      '[a link](javascript:window.__pwned=\'link\') and ![an image](/x.png) and <b onclick="window.__pwned=1">html</b>',
      '',
      '```js',
      'const lt = 1 < 2 && "<script>";',
      '```',
      '',
      '- one',
      '- two',
    ].join('\n');
    await cannedAnswers(page, [split(markdown, 9)]);
    await send(page, 'show me markdown', 1);
    const answer = page.locator('#messages li.assistant .content');
    expect(await answer.locator('strong').textContent()).toBe('bold');
    expect(await answer.locator('pre code').textContent()).toBe('const lt = 1 < 2 && "<script>";\n');
    expect(await answer.locator('li').allTextContents()).toEqual(['one', 'two']);
    expect(await answer.locator('.copy-code').count()).toBe(1);
    // Nothing executable or fetching reached the page; the model's tags are shown as text.
    expect(await page.locator('#messages script, #messages img, #messages iframe, #messages [onerror], #messages [onclick], #messages b').count()).toBe(0);
    expect(await page.locator('#messages a[href^="javascript:"]').count()).toBe(0);
    expect(await answer.locator('a', { hasText: 'a link' }).count()).toBe(1);
    // An image is a link to it, not a fetch the model's text can trigger.
    const image = answer.locator('a', { hasText: 'image: an image' });
    expect(await image.getAttribute('href')).toBe('/x.png');
    expect(await image.getAttribute('rel')).toBe('noopener noreferrer');
    await screenshot(page, 'chat-markdown');
    const text = (await answer.textContent()) ?? '';
    expect(text).toContain('<script>document.title = "pwned"');
    expect(text).toContain('<img src=x onerror=');
    expect(await page.title()).toBe('openchat-webgpu');
    expect(await page.evaluate(() => (globalThis as unknown as { __pwned?: unknown }).__pwned)).toBeUndefined();
    // The stored answer is the model's text as it came; a reload renders it the same way.
    expect((await stored(page))?.messages[1]?.content).toBe(markdown);
    await page.reload();
    await expect.poll(() => answer.locator('strong').textContent(), WAIT).toBe('bold');
    expect(await page.locator('#messages script, #messages img, #messages [onerror]').count()).toBe(0);
    expect(await page.evaluate(() => (globalThis as unknown as { __pwned?: unknown }).__pwned)).toBeUndefined();
    // The stats come from the page's own measurement and the stream's usage.
    const stats = await page.textContent('#messages li.assistant .stats');
    expect(stats).toContain('tokens/s');
    expect(stats).toContain('first token');
    expect(stats).toContain('3 prompt + 2 completion tokens');
    expect(errors, errors.join('\n')).toEqual([]);
    await context.close();
  });

  it('keeps conversations across reloads, each with its own session id; renames and deletes them', async () => {
    const { page, context, errors, requests } = await openPage({ key: true });
    await page.fill('#max_tokens', '4');
    const first = `first conversation ${rng.int(0, 1000)}`;
    await send(page, first, 1);
    await send(page, 'and a second turn', 2);
    const a = (await stored(page))!;
    expect(a.messages.map((m) => m.role)).toEqual(['user', 'assistant', 'user', 'assistant']);
    expect(requests.map((r) => r.sessionId)).toEqual([a.sessionId, a.sessionId]);
    expect(await page.textContent(`#conversations li[data-id="${a.id}"]`)).toContain(first);

    // Renamed inline; the name and the messages come back after a reload.
    const name = `renamed ${rng.int(0, 1000)}`;
    await page.click(`#conversations li[data-id="${a.id}"] button.rename`);
    await page.fill('#conversations .rename-input', name);
    await page.press('#conversations .rename-input', 'Enter');
    await expect.poll(() => page.textContent(`#conversations li[data-id="${a.id}"] button.open`), WAIT).toBe(name);
    await page.reload();
    await expect.poll(() => page.locator('#messages li').count(), WAIT).toBe(4);
    expect(await page.locator('#messages li.user .content').allTextContents()).toEqual([first, 'and a second turn']);
    expect(await page.getAttribute('#conversations li.current', 'data-id')).toBe(a.id);
    expect(await page.textContent('#conversations li.current button.open')).toBe(name);
    expect((await stored(page))?.messages).toEqual(a.messages);

    // A new conversation gets its own session id; the first keeps its own when it goes on.
    await page.click('#new-conversation');
    expect(await page.locator('#messages li').count()).toBe(0);
    await send(page, 'another one', 1);
    const b = (await stored(page))!;
    expect(b.id).not.toBe(a.id);
    expect(b.sessionId).not.toBe(a.sessionId);
    expect(requests.at(-1)?.sessionId).toBe(b.sessionId);
    expect(await page.locator('#conversations li').count()).toBe(2);
    await page.click(`#conversations li[data-id="${a.id}"] button.open`);
    await expect.poll(() => page.locator('#messages li').count(), WAIT).toBe(4);
    await send(page, 'a third turn', 3);
    expect(requests.at(-1)?.sessionId).toBe(a.sessionId);
    expect(requests.at(-1)?.body.messages.map((m) => m.role)).toEqual(['user', 'assistant', 'user', 'assistant', 'user']);

    // Deleting the current one shows a new, empty conversation; the deletion survives a reload.
    await page.click(`#conversations li[data-id="${a.id}"] button.delete`);
    await expect.poll(() => page.locator('#conversations li').count(), WAIT).toBe(1);
    expect(await page.locator('#messages li').count()).toBe(0);
    await page.reload();
    await expect.poll(() => page.locator('#conversations li').count(), WAIT).toBe(1);
    expect(await page.getAttribute('#conversations li', 'data-id')).toBe(b.id);
    expect(await page.evaluate((id) => localStorage.getItem(`openchat-conversation:${id}`), a.id)).toBeNull();
    expect(errors, errors.join('\n')).toEqual([]);
    await context.close();
  });

  it('regenerate replaces the last answer; edit-and-resend replaces the conversation from the edited message', async () => {
    const { page, context, errors, requests } = await openPage({ key: true });
    await cannedAnswers(page, ['answer one', 'answer two', 'answer three', 'answer four']);
    await send(page, 'question one', 1);
    await send(page, 'question two', 2);
    // Only the last answer can be regenerated.
    expect(await page.locator('#messages li.assistant .regenerate').count()).toBe(1);
    expect(await page.locator('#messages li.assistant').last().locator('.regenerate').count()).toBe(1);

    await page.click('#messages li.assistant .regenerate');
    await expect.poll(() => texts(page, '#messages li.assistant .content'), WAIT).toEqual(['answer one', 'answer three']);
    expect(requests[2]!.body.messages).toEqual([
      { role: 'user', content: 'question one' },
      { role: 'assistant', content: 'answer one' },
      { role: 'user', content: 'question two' },
    ]);
    expect(await page.locator('#messages li').count()).toBe(4);

    // Editing the first message drops everything after it.
    await page.locator('#messages li.user').first().locator('button.edit').click();
    await page.fill('#messages .edit-input', 'question one, edited');
    await page.press('#messages .edit-input', 'Enter');
    await expect.poll(() => page.locator('#messages li.assistant.done').count(), WAIT).toBe(1);
    expect(await texts(page, '#messages li .content')).toEqual(['question one, edited', 'answer four']);
    expect(requests[3]!.body.messages).toEqual([{ role: 'user', content: 'question one, edited' }]);
    expect((await stored(page))?.messages.map((m) => m.content)).toEqual(['question one, edited', 'answer four']);
    // Esc in the edit box cancels the edit and keeps the message.
    await page.click('#messages li.user button.edit');
    await page.fill('#messages .edit-input', 'never sent');
    await page.press('#messages .edit-input', 'Escape');
    expect(await texts(page, '#messages li .content')).toEqual(['question one, edited', 'answer four']);
    expect(requests).toHaveLength(4);
    expect(errors, errors.join('\n')).toEqual([]);
    await context.close();
  });

  it('Enter sends, Shift+Enter starts a new line, Esc stops the answer', async () => {
    const { page, context, requests } = await openPage({ key: true });
    await page.fill('#max_tokens', '3');
    await page.click('#input');
    await page.keyboard.type('line one');
    await page.keyboard.press('Shift+Enter');
    await page.keyboard.type('line two');
    expect(await page.inputValue('#input')).toBe('line one\nline two');
    expect(requests).toHaveLength(0);
    await page.keyboard.press('Enter');
    await expect.poll(() => page.locator('#messages li.assistant.done').count(), WAIT).toBe(1);
    expect(await page.textContent('#messages li.user .content')).toBe('line one\nline two');
    expect(await page.inputValue('#input')).toBe('');
    expect(requests[0]?.body.messages.at(-1)).toEqual({ role: 'user', content: 'line one\nline two' });

    await page.fill('#max_tokens', '900');
    await page.fill('#temperature', '1');
    await page.fill('#input', `a long story ${rng.int(0, 1000)}`);
    await page.press('#input', 'Enter');
    await expect.poll(() => page.locator('#messages li.assistant.streaming .content').textContent(), { timeout: 30_000 }).not.toBe('');
    await page.keyboard.press('Escape');
    await page.waitForSelector('#messages li.assistant.stopped.done');
    expect(await page.isEnabled('#send')).toBe(true);
    expect((await stored(page))?.messages[3]?.stopped).toBe(true);
    await context.close();
  });

  it('copies an answer\'s Markdown and a code block\'s code', async () => {
    const { page, context, errors } = await openPage({
      key: true,
      // The stand-in clipboard keeps what was written (headless Chromium's own needs permissions and a focused window).
      before: async (p) => {
        await p.addInitScript(() => {
          const copied: string[] = [];
          Object.defineProperty(globalThis, '__copied', { value: copied });
          Object.defineProperty(navigator, 'clipboard', { value: { writeText: async (t: string) => void copied.push(t) } });
        });
      },
    });
    const answer = 'Run this:\n\n```sh\necho "hi" && ls\n```\n\nDone.';
    await cannedAnswers(page, [answer]);
    await send(page, 'a command please', 1);
    await page.click('#messages li.assistant .copy-code');
    await page.click('#messages li.assistant button.copy');
    const copied = () => page.evaluate(() => (globalThis as unknown as { __copied: string[] }).__copied);
    await expect.poll(copied, WAIT).toEqual(['echo "hi" && ls\n', answer]);
    expect(errors, errors.join('\n')).toEqual([]);
    await context.close();
  });

  it('talks to the engine in the tab: loaded lazily, loads with progress and cancel, lists the cache, streams answers', async () => {
    const engineRequests: string[] = [];
    const { page, context, errors, requests } = await openPage({
      key: true,
      before: async (p) => {
        p.on('request', (r) => {
          if (new URL(r.url()).pathname === '/web/engine.js') engineRequests.push(r.url());
        });
        await p.route('**/web/engine.js', (route) => route.fulfill({ status: 200, headers: { 'Content-Type': 'text/javascript' }, body: STUB_ENGINE }));
      },
    });
    // On the server backend the engine is never fetched, and its panel is hidden.
    expect(await page.inputValue('#backend')).toBe('server');
    expect(await page.isHidden('#tab-panel')).toBe(true);
    expect(engineRequests).toHaveLength(0);

    await page.selectOption('#backend', 'tab');
    await expect.poll(() => page.textContent('#gpu'), WAIT).toContain('Stub adapter (test)');
    expect(await page.isVisible('#tab-panel')).toBe(true);
    expect(engineRequests).toHaveLength(1);
    await expect.poll(() => page.locator('#cached li[data-key]').count(), WAIT).toBe(2);
    expect(await page.textContent('#cached li[data-key="k-weights"]')).toContain('/engine/served/model.safetensors');
    expect(await page.textContent('#storage')).toContain('persisted');

    // Before a model is loaded, sending is refused and the text stays.
    await page.fill('#input', 'hello tab');
    await page.press('#input', 'Enter');
    await expect.poll(() => page.textContent('#error'), WAIT).toContain('no model is loaded in this tab');
    expect(await page.inputValue('#input')).toBe('hello tab');
    expect(await page.locator('#messages li').count()).toBe(0);

    // A load that hangs shows its progress, and is cancelled.
    expect(await page.isDisabled('#cancel-load')).toBe(true);
    await page.fill('#model-url', '/engine/hang/');
    await page.click('#load-url');
    await expect.poll(() => page.textContent('#load-status'), WAIT).toBe('2.0 / 4.0 MiB, 1.0 MiB/s, 1/2 tensors');
    expect(await page.isEnabled('#cancel-load')).toBe(true);
    await page.click('#cancel-load');
    await expect.poll(() => page.textContent('#load-status'), WAIT).toContain('loading cancelled');
    expect(await page.isDisabled('#cancel-load')).toBe(true);
    expect(await page.isHidden('#error')).toBe(true);

    await page.click('#load-bundled');
    await expect.poll(() => page.textContent('#load-status'), WAIT).toBe('stub-model: 4.0 MiB, loaded in 1.5 s, 1.0 MiB from the cache');
    expect(await page.textContent('#model')).toBe('model: stub-model');
    await page.fill('#max_tokens', '5');
    await page.press('#input', 'Enter');
    await expect.poll(() => page.locator('#messages li.assistant.done').count(), WAIT).toBe(1);
    expect(await page.locator('#messages li.assistant .content strong').textContent()).toBe('the');
    const stats = await page.textContent('#messages li.assistant .stats');
    expect(stats).toContain('40.0 tokens/s');
    expect(stats).toContain('first token 12 ms');
    expect(stats).toContain('7 prompt + 3 completion tokens');
    expect(requests).toHaveLength(0);
    await screenshot(page, 'chat-tab');
    const calls = await page.evaluate(() => (globalThis as unknown as { __engineCalls: unknown[][] }).__engineCalls);
    expect(calls.filter((c) => c[0] === 'load').map((c) => c[1])).toEqual(['url', 'bundled']);
    const chat = calls.find((c) => c[0] === 'chat')!;
    expect(chat[1]).toEqual([{ role: 'user', content: 'hello tab' }]);
    expect(chat[2]).toMatchObject({ max_tokens: 5, condition: 'GPT4 Correct' });

    await page.click('#cached li[data-key="k-config"] button.delete');
    await expect.poll(() => page.locator('#cached li[data-key]').count(), WAIT).toBe(1);
    await page.click('#clear-cache');
    await expect.poll(() => page.locator('#cached li[data-key]').count(), WAIT).toBe(0);
    const deletes = (await page.evaluate(() => (globalThis as unknown as { __engineCalls: unknown[][] }).__engineCalls)).filter((c) => c[0] === 'delete');
    expect(deletes).toEqual([['delete', 'k-config'], ['delete', null]]);

    // The choice is remembered.
    await page.reload();
    expect(await page.inputValue('#backend')).toBe('tab');
    await expect.poll(() => page.textContent('#gpu'), WAIT).toContain('Stub adapter (test)');
    expect(errors, errors.join('\n')).toEqual([]);
    await context.close();
  });

  it('starts on the tab\'s engine at /engine', async () => {
    const { page, context, errors } = await openPage({
      path: '/engine',
      before: async (p) => {
        await p.route('**/web/engine.js', (route) => route.fulfill({ status: 200, headers: { 'Content-Type': 'text/javascript' }, body: STUB_ENGINE }));
      },
    });
    expect(await page.inputValue('#backend')).toBe('tab');
    await expect.poll(() => page.textContent('#gpu'), WAIT).toContain('Stub adapter (test)');
    expect(await page.textContent('#model')).toBe('model: none loaded in this tab');
    expect(errors, errors.join('\n')).toEqual([]);
    await context.close();
  });
});
