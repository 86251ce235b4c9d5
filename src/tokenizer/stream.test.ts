import { beforeAll, describe, expect, it } from 'vitest';
import { Rng } from '../util/rng.ts';
import { freshSeed } from '../util/testing.ts';
import { OpenChatTokenizer } from './tokenizer.ts';

let tok: OpenChatTokenizer;
beforeAll(async () => {
  tok = await OpenChatTokenizer.load();
});

/** SentencePiece byte tokens <0x00>..<0xFF> are ids 3..258 in the Mistral vocabulary. */
const byteId = (b: number): number => {
  const id = 3 + b;
  expect(tok.idToToken(id)).toBe(`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`);
  return id;
};

/**
 * Streams `ids` through one decoder and checks, after every push, that the text emitted so far is a
 * prefix of the full decode of the ids pushed so far, that it never ends inside a character, and
 * that emitted + flush() equals the full decode at every prefix (using a fresh decoder per prefix).
 */
function checkStreaming(ids: number[], skipSpecial: boolean, label: string): void {
  const dec = tok.createStreamDecoder({ skipSpecial });
  let emitted = '';
  for (let k = 1; k <= ids.length; k++) {
    const piece = dec.push(ids[k - 1]!);
    emitted += piece;
    const full = tok.decode(ids.slice(0, k), { skipSpecial });
    expect(full.startsWith(emitted), `${label}: after ${k} ids, ${JSON.stringify(emitted)} is not a prefix of ${JSON.stringify(full)}`).toBe(true);
    expect(/[\uD800-\uDBFF]$/.test(emitted), `${label}: emitted half a surrogate pair`).toBe(false);

    const fresh = tok.createStreamDecoder({ skipSpecial });
    let all = '';
    for (const id of ids.slice(0, k)) all += fresh.push(id);
    all += fresh.flush();
    expect(all, `${label}: prefix of ${k} ids`).toBe(full);
  }
  expect(emitted + dec.flush(), label).toBe(tok.decode(ids, { skipSpecial }));
}

describe('StreamDecoder', () => {
  it('holds back byte-fallback tokens until the UTF-8 character is complete', () => {
    const ids = [...tok.encode('a'), byteId(0xe2), byteId(0x82), byteId(0xac)];
    const dec = tok.createStreamDecoder();
    expect(ids.map((id) => dec.push(id))).toEqual(['a', '', '', '€']);
    expect(dec.flush()).toBe('');
    // A four-byte emoji that is not in the vocabulary: 🦙 = F0 9F A6 99.
    const llama = tok.encode('🦙 ok');
    const d2 = tok.createStreamDecoder();
    const pieces = llama.map((id) => d2.push(id));
    expect(pieces.slice(0, 5)).toEqual(['', '', '', '', '🦙']); // '▁' alone decodes to '' (leading space)
    expect(pieces.join('') + d2.flush()).toBe('🦙 ok');
  });

  it('applies the leading-space rule like the full decode', () => {
    const ids = tok.encode('Hello world');
    const dec = tok.createStreamDecoder();
    expect(ids.map((id) => dec.push(id))).toEqual(['Hello', ' world']);
    // Mid-stream tokens keep their space: generation continues after an assistant prefix.
    const spaced = tok.encode('  two spaces');
    const d2 = tok.createStreamDecoder();
    expect(spaced.map((id) => d2.push(id)).join('') + d2.flush()).toBe(tok.decode(spaced));
  });

  it('flush() emits an incomplete byte sequence the way the full decode does', () => {
    const ids = [...tok.encode('x'), byteId(0xe2), byteId(0x82)];
    const dec = tok.createStreamDecoder();
    expect(ids.map((id) => dec.push(id)).join('')).toBe('x');
    expect(dec.flush()).toBe(tok.decode(ids).slice(1));
    expect(dec.flush()).toBe('');
  });

  it('equals the full decode at every prefix on emoji, CJK and byte-fallback text', () => {
    const texts = [
      '🦙Ꙋ 镇 € 👨‍👩‍👧‍👦 こんにちは 你好，世界！ 🏳️‍🌈',
      'def f():\n\treturn "ünïcödé" # 𓀀𐍈\n',
      '  leading spaces and trailing  ',
    ];
    for (const t of texts) {
      const ids = tok.encode(t);
      checkStreaming(ids, false, JSON.stringify(t));
      const chat = [...ids, tok.eotId!, ...tok.encode(t)];
      checkStreaming(chat, false, `chat ${JSON.stringify(t)}`);
      checkStreaming(chat, true, `chat skipSpecial ${JSON.stringify(t)}`);
    }
  });

  it('equals the full decode at every prefix on random ids (including broken byte sequences)', () => {
    const seed = freshSeed();
    const rng = new Rng(seed);
    for (let trial = 0; trial < 12; trial++) {
      const n = rng.int(1, 30);
      const ids: number[] = [];
      for (let i = 0; i < n; i++) {
        const r = rng.next();
        if (r < 0.45) {
          // Byte tokens: mostly the bytes of real multi-byte characters, sometimes stray bytes.
          if (rng.next() < 0.7) {
            const ch = String.fromCodePoint([0x20ac, 0x1f999, 0xa64a, 0x9547, 0xe9, 0x13000][rng.int(0, 6)]!);
            for (const b of new TextEncoder().encode(ch)) ids.push(3 + b);
          } else {
            ids.push(3 + rng.int(0x80, 0x100));
          }
        } else if (r < 0.5) {
          ids.push([0, 1, 2, 32000, 32001][rng.int(0, 5)]!);
        } else {
          ids.push(rng.int(259, 32000));
        }
      }
      checkStreaming(ids, false, `seed ${seed} trial ${trial}`);
      checkStreaming(ids, true, `seed ${seed} trial ${trial} skipSpecial`);
    }
  });
});
