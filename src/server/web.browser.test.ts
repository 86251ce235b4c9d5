/**
 * The chat page (GET /) in a real browser: headless Chromium (browser.testing.ts) against the
 * server on the bundled tiny model, with an API key. One browser for the file. The page's answer
 * is checked against the Generator run directly with the same prompt and parameters, as
 * server.test.ts checks the API; stop must cancel the generation on the server; a wrong key must
 * show the server's own error. Screenshot: .cache/screenshots/chat.png.
 */
import type { Browser, Page } from 'playwright-core';
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

  async function openPage(): Promise<{ page: Page; errors: string[] }> {
    const page = await browser.newPage({ viewport: { width: 1000, height: 640 } });
    const errors = collectPageErrors(page);
    await page.goto(`${srv.url}/`);
    return { page, errors };
  }

  async function direct(messages: ChatMessage[], condition: string, params: Record<string, unknown>): Promise<{ text: string; completion: number }> {
    let text = '';
    for await (const ev of gen.generate(gen.encodeChat(messages, condition), validateSamplingParams(params))) {
      if (ev.type === 'text') text += ev.text;
      else return { text, completion: ev.usage.completion_tokens };
    }
    throw new Error('no done event');
  }

  it('asks for the key, then streams an answer equal to the generator\'s, with the model name and token counts', async () => {
    const { page, errors } = await openPage();
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
    await page.fill('#input', user);
    await page.click('#send');
    await page.waitForSelector('#messages li.assistant.done');

    const messages: ChatMessage[] = [{ role: 'system', content: 'You are terse.' }, { role: 'user', content: user }];
    const want = await direct(messages, 'Code', { temperature: 0.9, top_p: 0.95, max_tokens: 12, seed: s });
    const shown = await page.$eval('#messages li.assistant', (li) => li.lastChild?.textContent ?? '');
    expect(shown, tag).toBe(want.text);
    const prompt = gen.encodeChat(messages, 'Code').length;
    expect(await page.textContent('#usage')).toBe(`${gen.modelName}: ${prompt} prompt + ${want.completion} completion = ${prompt + want.completion} tokens`);
    await screenshot(page, 'chat');
    expect(errors, errors.join('\n')).toEqual([]);
    await page.close();
  });

  it('stop aborts the request: the server cancels the generation', async () => {
    const { page } = await openPage();
    await page.fill('#key', KEY);
    await page.dispatchEvent('#key', 'change');
    await page.fill('#max_tokens', '900');
    await page.fill('#temperature', '1');
    await page.fill('#input', `a long story ${rng.int(0, 1000)}`);
    await page.click('#send');
    // Some text streamed, then Stop.
    // (Polled from here: a page-side predicate given as a string would be an eval, which the page's CSP refuses.)
    await expect.poll(() => page.$eval('#messages li.assistant', (li) => li.lastChild?.textContent ?? ''), { timeout: 30_000 }).not.toBe('');
    expect(await page.isEnabled('#stop')).toBe(true);
    await page.click('#stop');
    await page.waitForSelector('#messages li.assistant.stopped.done');
    expect(await page.isEnabled('#send')).toBe(true);
    expect(await page.isDisabled('#stop')).toBe(true);
    // The server saw the client leave (status 499 in its log, "cancelled"), well before 900 tokens.
    await expect.poll(() => logs.find((l) => l.includes('POST /v1/chat/completions 499')), { timeout: 10_000 }).toBeDefined();
    const line = logs.find((l) => l.includes('POST /v1/chat/completions 499'))!;
    expect(line).toContain('cancelled');
    expect(Number(/completion_tokens=(\d+)/.exec(line)?.[1])).toBeLessThan(900);
    expect(await page.isHidden('#error')).toBe(true);
    await page.close();
  });

  it('a wrong key shows the server\'s error, and the message can be sent again', async () => {
    const { page } = await openPage();
    await page.fill('#key', 'sk-wrong');
    await page.dispatchEvent('#key', 'change');
    await expect.poll(() => page.textContent('#error'), WAIT).toBe('401: Incorrect API key provided. (invalid_api_key)');
    await page.fill('#input', 'hello');
    await page.click('#send');
    // The refused turn is taken back: its text returns to the input, no message stays.
    await expect.poll(() => page.inputValue('#input'), WAIT).toBe('hello');
    expect(await page.textContent('#error')).toBe('401: Incorrect API key provided. (invalid_api_key)');
    expect(await page.$$('#messages li')).toHaveLength(0);
    await page.close();
  });
});
