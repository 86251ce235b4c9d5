import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GgufFile, type GgufValue } from '../util/gguf.ts';
import { gv, writeGguf } from '../util/gguf_writer.ts';
import { Rng } from '../util/rng.ts';
import { freshSeed } from '../util/testing.ts';
import { TOKEN_TYPE, ggufTokenizerFiles, openChat35GgufTokenizerMetadata, tokenizerFromGguf, writeOpenChat35VocabGguf } from './gguf.ts';
import { OPENCHAT_35_CHAT_TEMPLATE } from './openchat35.ts';
import { OpenChatTokenizer, type ChatMessage } from './tokenizer.ts';

const VOCAB_DIR = fileURLToPath(new URL('../../../shared/peer/llama-vocab/', import.meta.url));
const VOCABS = ['ggml-vocab-llama-spm.gguf', 'ggml-vocab-phi-3.gguf'];
const haveVocab = VOCABS.every((v) => existsSync(join(VOCAB_DIR, v)) && existsSync(join(VOCAB_DIR, `${v}.inp`)));
if (!haveVocab) console.log(`tokenizer/gguf.test: ${VOCAB_DIR} is absent; skipping the llama.cpp tokenizer test vectors`);

const dir = mkdtempSync(join(tmpdir(), 'gguf-tok-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
let fileNo = 0;
const tmp = () => join(dir, `v-${fileNo++}.gguf`);

/** test-tokenizer-0.cpp's reading of the .inp / .out pair. */
function readCases(gguf: string): Array<{ text: string; ids: number[] }> {
  const raw = readFileSync(`${gguf}.inp`, 'utf8');
  const sep = '\n__ggml_vocab_test__\n';
  const inputs: string[] = [];
  for (let pos = 0; pos < raw.length; ) {
    const next = raw.indexOf(sep, pos);
    if (next < 0) {
      inputs.push(raw.slice(pos));
      break;
    }
    inputs.push(raw.slice(pos, next));
    pos = next + sep.length;
  }
  const outputs = readFileSync(`${gguf}.out`, 'utf8').split('\n');
  if (outputs.at(-1) === '') outputs.pop();
  if (outputs.length !== inputs.length) throw new Error(`${gguf}: ${inputs.length} inputs but ${outputs.length} outputs`);
  return inputs.map((text, i) => ({ text, ids: outputs[i]!.trim() === '' ? [] : outputs[i]!.trim().split(/\s+/).map(Number) }));
}

/**
 * llama.cpp's SentencePiece tokenizing written plainly (llm_tokenizer_spm, with parse_special
 * false and add_space_prefix): user-defined pieces split out of the text first; each stretch
 * of text gets " " before it, spaces become "▁", then the best-scored adjacent pair is merged
 * until none is a piece, and what is no piece is spelled in byte tokens. Quadratic; for tests.
 */
function spmReference(file: GgufFile, text: string): number[] {
  const pieces = file.getStrings('tokenizer.ggml.tokens');
  const scores = file.getNumbers('tokenizer.ggml.scores');
  const types = file.getNumbers('tokenizer.ggml.token_type');
  const id = new Map<string, number>();
  pieces.forEach((p, i) => id.set(p, i));
  const userDefined = pieces.filter((_, i) => types[i] === TOKEN_TYPE.userDefined).sort((a, b) => b.length - a.length);
  const out: number[] = [];
  const fragments: Array<string | number> = text === '' ? [] : [text];
  for (const u of userDefined) {
    for (let f = 0; f < fragments.length; f++) {
      const s = fragments[f]!;
      if (typeof s !== 'string') continue;
      const at = s.indexOf(u);
      if (at < 0) continue;
      const parts: Array<string | number> = [s.slice(0, at), id.get(u)!, s.slice(at + u.length)].filter((x) => x !== '');
      fragments.splice(f, 1, ...parts);
    }
  }
  for (const frag of fragments) {
    if (typeof frag === 'number') {
      out.push(frag);
      continue;
    }
    const syms = Array.from((' ' + frag).replaceAll(' ', '▁'));
    for (;;) {
      let best = -1;
      let bestScore = -Infinity;
      for (let i = 0; i + 1 < syms.length; i++) {
        const t = id.get(syms[i]! + syms[i + 1]!);
        if (t !== undefined && scores[t]! > bestScore) {
          best = i;
          bestScore = scores[t]!;
        }
      }
      if (best < 0) break;
      syms.splice(best, 2, syms[best]! + syms[best + 1]!);
    }
    for (const s of syms) {
      const t = id.get(s);
      if (t !== undefined) out.push(t);
      else for (const b of new TextEncoder().encode(s)) out.push(id.get(`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`)!);
    }
  }
  return out;
}

/** Random text from a mix of alphabets, spaces (runs of them), digits, code and emoji. */
function randomText(rng: Rng): string {
  const parts = [' ', '  ', '    ', '\n', '\t', 'the', 'Hello', 'ing', 'ation', '3', '42', '1999', 'é', 'ü', 'Äpfel', 'нещо', '中文', '日本語', '🦙', '😶‍🌫️', '✅', 'def f(x):', '{"a": [1, 2]}', '<b>', '</s>', '<s>', '__', '...', '!!!', "'", 'ÿ', '\u00a0', '\u200b', 'x'];
  let s = '';
  const n = rng.int(0, 14);
  for (let i = 0; i < n; i++) s += parts[rng.int(0, parts.length)];
  return s;
}

describe.skipIf(!haveVocab)("llama.cpp's tokenizer test vectors", () => {
  for (const name of VOCABS) {
    describe(name, () => {
      const path = join(VOCAB_DIR, name);
      let file: GgufFile;
      let tok: OpenChatTokenizer;
      beforeAll(async () => {
        file = await GgufFile.open(path);
        const t0 = performance.now();
        tok = tokenizerFromGguf(file);
        console.log(`tokenizer/gguf.test: ${name}: tokenizer built in ${(performance.now() - t0).toFixed(0)} ms`);
      });
      afterAll(async () => {
        tok.close();
        file.close();
      });

      it('gives the ids llama.cpp gives on every case (no BOS, special tokens not parsed)', async () => {
        const cases = readCases(path);
        expect(cases.length).toBeGreaterThan(30);
        for (const c of cases) expect(tok.encode(c.text), JSON.stringify(c.text)).toEqual(c.ids);
      });

      it('decodes every case back to its text', async () => {
        for (const c of readCases(path)) expect(tok.decode(tok.encode(c.text)), JSON.stringify(c.text)).toBe(c.text);
      });

      it('agrees with a plain SentencePiece reference on random text', async () => {
        const seed = freshSeed();
        const rng = new Rng(seed);
        for (let i = 0; i < 150; i++) {
          const s = randomText(rng);
          expect(tok.encode(s), `seed ${seed}: ${JSON.stringify(s)}`).toEqual(spmReference(file, s));
        }
      });

      it('has the ids and stop tokens of the metadata', async () => {
        expect(tok.bosId).toBe(file.getNumber('tokenizer.ggml.bos_token_id'));
        expect(tok.eosId).toBe(file.getNumber('tokenizer.ggml.eos_token_id'));
        expect(tok.stopIds).toContain(tok.eosId);
        expect(tok.vocabSize).toBe(file.getStrings('tokenizer.ggml.tokens').length);
        expect(tok.encode('Hello', { addBos: true })[0]).toBe(tok.bosId);
        const template = file.optionalString('tokenizer.chat_template');
        expect(tok.chatTemplate).toBe(template ?? OPENCHAT_35_CHAT_TEMPLATE);
      });
    });
  }

  it('phi-3: control tokens are text unless special tokens are parsed; its user-defined </s> is always a token', async () => {
    const file = await GgufFile.open(join(VOCAB_DIR, 'ggml-vocab-phi-3.gguf'));
    const tok = tokenizerFromGguf(file);
    try {
      const end = 32007; // <|end|>, control
      expect(tok.idToToken(end)).toBe('<|end|>');
      expect(tok.encode('a<|end|>b')).not.toContain(end);
      expect(tok.encode('a<|end|>b', { parseSpecial: true })).toContain(end);
      expect(tok.encode('a</s>b')).toContain(2);
      expect(tok.encode('a</s>b')).toEqual(spmReference(file, 'a</s>b'));
      expect(tok.decode(tok.encode('a<|end|>b', { parseSpecial: true }), { skipSpecial: true })).not.toContain('<|end|>');
    } finally {
      tok.close();
      file.close();
    }
  });
});

describe('an OpenChat 3.5 GGUF vocabulary written by the writer', () => {
  let builtin: OpenChatTokenizer;
  let tok: OpenChatTokenizer;
  let file: GgufFile;
  beforeAll(async () => {
    const path = tmp();
    await writeOpenChat35VocabGguf(path);
    file = await GgufFile.open(path);
    tok = tokenizerFromGguf(file);
    builtin = await OpenChatTokenizer.load();
  });
  afterAll(async () => {
    tok.close();
    builtin.close();
    file.close();
  });

  const STRINGS = [
    'Hello', ' Hello', 'Hello world', 'GPT4 Correct User: Hello', 'How are you today?', '  two spaces', '   three', 'trailing ',
    '\n', '\n\n', '\t\tindent', 'a\nb\n\nc', '1234567890', '3.14159', '2026-12-07', '१२३', 'Äpfel', 'naïve café', 'нещо на Български',
    '中文字符测试', '日本語のテキスト', '한국어', 'مرحبا', '🦙🦙', '😶‍🌫️ emoji', '✅ done', 'def quicksort(a):\n    return sorted(a)',
    'const x = { a: [1, 2, 3] };', '#include <stdio.h>', 'SELECT * FROM t WHERE id = 1;', '<|end_of_turn|>', '<s> and </s>',
    'ÿþ', '\u0000', '\u00a0nbsp', 'zero\u200bwidth', '    ', 'x'.repeat(300), 'supercalifragilisticexpialidocious', "I've been 'told",
  ];

  it('encodes plain text to the built-in tokenizer\'s ids', async () => {
    for (const s of STRINGS) expect(tok.encode(s), JSON.stringify(s)).toEqual(builtin.encode(s));
  });

  it('encodes random text to the built-in tokenizer\'s ids', async () => {
    const seed = freshSeed();
    const rng = new Rng(seed);
    for (let i = 0; i < 200; i++) {
      const s = randomText(rng);
      expect(tok.encode(s), `seed ${seed}: ${JSON.stringify(s)}`).toEqual(builtin.encode(s));
      expect(tok.encode(s, { parseSpecial: true }), `seed ${seed}: ${JSON.stringify(s)}`).toEqual(builtin.encode(s, { parseSpecial: true }));
    }
  });

  it('has the OpenChat ids, turn format and stop tokens', async () => {
    expect(tok.vocabSize).toBe(32002);
    expect([tok.bosId, tok.eosId, tok.eotId]).toEqual([1, 2, 32000]);
    expect(tok.idToToken(32001)).toBe('<|pad_0|>');
    expect(tok.stopIds).toContain(32000);
    expect(tok.stopIds).toContain(2);
    expect(tok.chatTemplate).toBe(OPENCHAT_35_CHAT_TEMPLATE);
    // The model card's prompt.
    expect(tok.encode('GPT4 Correct User: Hello<|end_of_turn|>GPT4 Correct Assistant:', { addBos: true, parseSpecial: true })).toEqual([
      1, 420, 6316, 28781, 3198, 3123, 1247, 28747, 22557, 32000, 420, 6316, 28781, 3198, 3123, 21631, 28747,
    ]);
  });

  it('encodes chats as the built-in tokenizer does (encodeChat and the jinja template)', async () => {
    const chats: ChatMessage[][] = [
      [{ role: 'user', content: 'Hello' }],
      [
        { role: 'system', content: 'You are terse.' },
        { role: 'user', content: 'Write quicksort in C++.' },
        { role: 'assistant', content: 'void qs(int* a, int n);' },
        { role: 'user', content: 'Now 中文 and 🦙, with <|end_of_turn|> inside.' },
      ],
    ];
    for (const m of chats) {
      expect(tok.encodeChat(m)).toEqual(builtin.encodeChat(m));
      expect(tok.encodeChat(m, { condition: 'code' })).toEqual(builtin.encodeChat(m, { condition: 'code' }));
      expect(tok.applyChatTemplate(m)).toEqual(builtin.applyChatTemplate(m));
    }
  });

  it('decodes back to the text', async () => {
    for (const s of STRINGS) expect(tok.decode(tok.encode(s)), JSON.stringify(s)).toBe(s);
  });
});

describe('GGUF vocabularies refused', () => {
  const write = async (change: (m: Array<[string, GgufValue]>) => Array<[string, GgufValue]>): Promise<GgufFile> => {
    const path = tmp();
    await writeGguf(path, { metadata: change(await openChat35GgufTokenizerMetadata()) });
    return await GgufFile.open(path);
  };
  const set = (m: Array<[string, GgufValue]>, key: string, v: GgufValue) => m.map(([k, x]): [string, GgufValue] => [k, k === key ? v : x]);

  it('a tokenizer model other than llama, named with the file', async () => {
    const f = await write((m) => set(m, 'tokenizer.ggml.model', gv.string('gpt2')));
    expect(() => ggufTokenizerFiles(f)).toThrow(new RegExp(`^${f.path.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: tokenizer.ggml.model is 'gpt2'; this engine reads only SentencePiece`));
    f.close();
  });

  it('no tokenizer, scores or types of the wrong length, ids out of range', async () => {
    const none = await write((m) => m.filter(([k]) => k !== 'tokenizer.ggml.model'));
    expect(() => ggufTokenizerFiles(none)).toThrow(/no tokenizer in the file/);
    none.close();
    const scores = await write((m) => set(m, 'tokenizer.ggml.scores', gv.numbers('f32', [0, 1])));
    expect(() => ggufTokenizerFiles(scores)).toThrow(/tokenizer.ggml.scores has 2 entries for 32002 tokens/);
    scores.close();
    const types = await write((m) => set(m, 'tokenizer.ggml.token_type', gv.numbers('i32', new Int32Array(32002).fill(9))));
    expect(() => ggufTokenizerFiles(types)).toThrow(/token_type\[0\] is 9/);
    types.close();
    const eos = await write((m) => set(m, 'tokenizer.ggml.eos_token_id', gv.u32(40000)));
    expect(() => ggufTokenizerFiles(eos)).toThrow(/eos_token_id is 40000, not an id of its 32002 tokens/);
    eos.close();
    const tokens = await write((m) => set(m, 'tokenizer.ggml.tokens', gv.numbers('u8', [1])));
    expect(() => ggufTokenizerFiles(tokens)).toThrow(/'tokenizer.ggml.tokens' is an array of u8, expected an array of strings/);
    tokens.close();
  });
});
