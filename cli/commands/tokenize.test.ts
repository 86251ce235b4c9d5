// Runs the real CLI (`node cli/openchat.mjs tokenize ...`) as a child process.
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import mistral from 'mistral-tokenizer-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildOpenChat35TokenizerJson, openChat35TokenizerConfig } from '../../src/tokenizer/openchat35.ts';
import { OpenChatTokenizer } from '../../src/tokenizer/tokenizer.ts';

const repoRoot = fileURLToPath(new URL('../../', import.meta.url));
const run = promisify(execFile);

interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

async function openchat(...args: string[]): Promise<CliResult> {
  try {
    const { stdout, stderr } = await run('node', ['cli/openchat.mjs', 'tokenize', ...args], {
      cwd: repoRoot,
      env: { ...process.env, XDG_RUNTIME_DIR: process.env.XDG_RUNTIME_DIR ?? '/tmp' },
    });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { code: e.code ?? -1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
  }
}

/** The JSON lines of stdout. */
const lines = (r: CliResult): unknown[] => r.stdout.trim().split('\n').map((l) => JSON.parse(l) as unknown);

const reference = (s: string): number[] => mistral.encode(s, false, true);

describe('openchat tokenize', () => {
  let tok: OpenChatTokenizer;
  let dir: string;
  beforeAll(async () => {
    tok = await OpenChatTokenizer.load();
    dir = mkdtempSync(join(tmpdir(), 'openchat-cli-tok-'));
    const json = await buildOpenChat35TokenizerJson();
    json.added_tokens = [
      ...(json.added_tokens ?? []),
      { id: 32002, content: '<|tool|>', single_word: false, lstrip: false, rstrip: false, normalized: false, special: true },
    ];
    writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify(json));
    writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify(openChat35TokenizerConfig()));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('prints ids for plain text, the model card prompts, chat and code modes, a system message and a folder', async () => {
    const text = 'Hello world! 镇🦙 <|end_of_turn|>\n\tcode()';
    const [plain, card, chat, code, system, folder, folderSpecial] = await Promise.all([
      openchat(text),
      openchat('--bos', '--special', '--tokens', 'GPT4 Correct User: Hello<|end_of_turn|>GPT4 Correct Assistant:'),
      openchat('--chat', 'Hello'),
      openchat('--condition', 'code', 'Implement quicksort using C++'),
      openchat('--system', 'Be brief.', '--tokens', 'Hi'),
      openchat('--model', dir, 'a<|tool|>b'),
      openchat('--model', dir, '--special', 'a<|tool|>b'),
    ]);
    for (const r of [plain, card, chat, code, system, folder, folderSpecial]) expect(r.code, r.stderr).toBe(0);

    // Plain text is plain: special-token strings stay text, no BOS.
    expect(lines(plain)).toEqual([reference(text)]);

    const cardIds = [1, 420, 6316, 28781, 3198, 3123, 1247, 28747, 22557, 32000, 420, 6316, 28781, 3198, 3123, 21631, 28747];
    const [ids, tokens] = lines(card) as [number[], string[]];
    expect(ids).toEqual(cardIds);
    expect(tokens).toEqual(cardIds.map((id) => tok.idToToken(id)));
    expect(tokens.slice(0, 3)).toEqual(['<s>', '▁G', 'PT']);

    expect(lines(chat)).toEqual([cardIds]);
    expect(lines(code)).toEqual([[1, 7596, 1247, 28747, 26256, 2936, 7653, 1413, 334, 1680, 32000, 7596, 21631, 28747]]);

    const [sysIds, sysTokens] = lines(system) as [number[], string[]];
    expect(sysIds).toEqual([1, ...reference('Be brief.'), 32000, ...tok.encodeChat([{ role: 'user', content: 'Hi' }]).slice(1)]);
    expect(sysTokens).toHaveLength(sysIds.length);

    // The folder's added token is recognized only with --special; plain text keeps it as text.
    expect(lines(folder)).toEqual([reference('a<|tool|>b')]);
    expect(lines(folderSpecial)).toEqual([[...reference('a'), 32002, ...reference('b')]]);
  });

  it('fails clearly on a missing model folder', async () => {
    const r = await openchat('--model', join(dir, 'nope'), 'x');
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/openchat: model folder not found/);
    expect(r.stdout).toBe('');
  });
});
