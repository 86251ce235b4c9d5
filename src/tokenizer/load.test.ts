/**
 * OpenChatTokenizer.load on broken model folders: every file it reads that is
 * there but wrong is an error naming the file and what is wrong, never ignored.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildOpenChat35TokenizerJson, openChat35TokenizerConfig } from './openchat35.ts';
import { OpenChatTokenizer } from './tokenizer.ts';

let root: string;
let tokenizerJson: Awaited<ReturnType<typeof buildOpenChat35TokenizerJson>>;
beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), 'openchat-tokload-'));
  tokenizerJson = await buildOpenChat35TokenizerJson();
});
afterAll(() => rmSync(root, { recursive: true, force: true }));

/** A folder holding exactly `files` (name -> text). */
function folder(name: string, files: Record<string, string>): string {
  const d = join(root, name);
  rmSync(d, { recursive: true, force: true });
  mkdirSync(d, { recursive: true });
  for (const [f, text] of Object.entries(files)) writeFileSync(join(d, f), text);
  return d;
}

describe('OpenChatTokenizer.load on broken folders', () => {
  it('a tokenizer.json that is valid JSON but no tokenizer names the file and the missing sections (was: must contain a "decoder" property)', async () => {
    const d = folder('not-a-tokenizer', { 'tokenizer.json': JSON.stringify({ version: '1.0', model: { type: 'BPE' } }) });
    await expect(OpenChatTokenizer.load(d)).rejects.toThrow(
      new RegExp(`^${join(d, 'tokenizer.json')}: not a Hugging Face tokenizer.json \\(no "normalizer", "pre_tokenizer", "post_processor", "decoder";`),
    );
    const arr = folder('array', { 'tokenizer.json': '[1, 2]' });
    await expect(OpenChatTokenizer.load(arr)).rejects.toThrow(`${join(arr, 'tokenizer.json')}: must contain a JSON object`);
    const noModel = folder('null-model', { 'tokenizer.json': JSON.stringify({ ...tokenizerJson, model: null }) });
    await expect(OpenChatTokenizer.load(noModel)).rejects.toThrow(/tokenizer\.json: not a Hugging Face tokenizer\.json \("model" must be an object/);
  });

  it('a tokenizer.json the library cannot build still names the file', async () => {
    const d = folder('bad-model', { 'tokenizer.json': JSON.stringify({ ...tokenizerJson, model: { type: 'NoSuchModel' } }) });
    await expect(OpenChatTokenizer.load(d)).rejects.toThrow(new RegExp(`^${join(d, 'tokenizer.json')}: cannot build a tokenizer from it \\(`));
  });

  it('a corrupt generation_config.json is an error naming it, with or without a tokenizer.json (was: ignored without one)', async () => {
    const alone = folder('gen-corrupt', { 'generation_config.json': '{"eos_token_id": 32000,' });
    await expect(OpenChatTokenizer.load(alone)).rejects.toThrow(`cannot read ${join(alone, 'generation_config.json')}`);
    const withTok = folder('gen-wrong-type', {
      'tokenizer.json': JSON.stringify(tokenizerJson),
      'tokenizer_config.json': JSON.stringify(openChat35TokenizerConfig()),
      'generation_config.json': JSON.stringify({ eos_token_id: ['32000'] }),
    });
    await expect(OpenChatTokenizer.load(withTok)).rejects.toThrow(
      `${join(withTok, 'generation_config.json')}: "eos_token_id" must be a token id or a list of them; got ["32000"]`,
    );
    const list = folder('gen-list', { 'generation_config.json': '[]' });
    await expect(OpenChatTokenizer.load(list)).rejects.toThrow(`${join(list, 'generation_config.json')}: must contain a JSON object`);
  });

  it("a valid generation_config.json adds its eos ids to the built-in tokenizer's stop ids too", async () => {
    const d = folder('gen-ok', { 'generation_config.json': JSON.stringify({ eos_token_id: [2, 7], do_sample: true }) });
    const tok = await OpenChatTokenizer.load(d);
    expect(tok.source).toBe('built-in OpenChat 3.5 tokenizer');
    expect([...tok.stopIds].sort((a, b) => a - b)).toEqual([2, 7, 32000]);
    const none = folder('gen-none', { 'generation_config.json': JSON.stringify({ do_sample: true }) });
    expect((await OpenChatTokenizer.load(none)).stopIds).toEqual((await OpenChatTokenizer.load()).stopIds);
  });

  it('a corrupt tokenizer_config.json names the file', async () => {
    const d = folder('config-corrupt', { 'tokenizer.json': JSON.stringify(tokenizerJson), 'tokenizer_config.json': '{' });
    await expect(OpenChatTokenizer.load(d)).rejects.toThrow(`cannot read ${join(d, 'tokenizer_config.json')}`);
  });
});
