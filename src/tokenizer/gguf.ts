/**
 * The tokenizer a GGUF file carries in its metadata, as the Hugging Face tokenizer.json the rest
 * of the project reads (openchat35.ts builds the same layout for the built-in tokenizer), so a
 * GGUF model tokenizes through the same code path as a checkpoint folder.
 *
 * A GGUF vocabulary of model `llama` is SentencePiece BPE: pieces in id order, a score each, a
 * type each. llama.cpp tokenizes it (llm_tokenizer_spm, src/llama-vocab.cpp) by starting from the
 * text's characters and repeatedly merging the adjacent pair whose concatenation is a piece of
 * the highest score (the leftmost pair on a tie), then spelling any character that is no piece
 * in its UTF-8 bytes (<0xNN>). Hugging Face's BPE merges the pair of the lowest rank in a merge
 * list (the leftmost on a tie), so the list below holds every split of every piece into two
 * pieces, ranked by the piece's score, highest first: the same merges, in the same order.
 *
 * Where the two could part: pieces of equal score. Llama's whitespace runs ("▁▁" .. 16 of them)
 * all score -1e9; llama.cpp then grows the leftmost run one "▁" at a time, which ranking the
 * longer run first reproduces. Two different splits of one piece competing for the same
 * characters would be ranked by split here and by position there; no vocabulary tested has such
 * a case.
 *
 * Token types: control (3) and unknown (2) become special added tokens, recognized in text only
 * when special tokens are parsed; user-defined ones (4) become non-special added tokens, which
 * llama.cpp splits out of any text (its parse_special=false still matches them), as Hugging Face
 * does; bytes (6) stay pieces for byte fallback; unused ones (5) stay pieces but no merge makes
 * them.
 */
import type { GgufFile } from '../util/gguf.ts';
import type { GgufValue } from '../util/gguf.ts';
import { gv, writeGguf } from '../util/gguf_writer.ts';
import { OPENCHAT_35_CHAT_TEMPLATE, END_OF_TURN, type AddedTokenJson, type TokenizerFiles, type TokenizerJson } from './openchat35.ts';
import { OpenChatTokenizer } from './tokenizer.ts';

/** llama.cpp's token types (llama_token_type; 0 is "undefined", read as normal). */
export const TOKEN_TYPE = { normal: 1, unknown: 2, control: 3, userDefined: 4, unused: 5, byte: 6 } as const;

/** The tokenizer.json and tokenizer_config.json objects equivalent to `file`'s vocabulary. */
export function ggufTokenizerFiles(file: GgufFile): TokenizerFiles {
  const where = file.path;
  const model = file.optionalString('tokenizer.ggml.model');
  if (model === undefined) throw new Error(`${where}: no tokenizer in the file (no tokenizer.ggml.model); this engine needs the vocabulary in the GGUF file`);
  if (model !== 'llama') {
    throw new Error(`${where}: tokenizer.ggml.model is '${model}'; this engine reads only SentencePiece vocabularies ('llama': Llama, Mistral, OpenChat)`);
  }
  const pieces = file.getStrings('tokenizer.ggml.tokens');
  const n = pieces.length;
  if (n === 0) throw new Error(`${where}: tokenizer.ggml.tokens is empty`);
  const scores = file.optionalNumbers('tokenizer.ggml.scores') ?? new Float32Array(n);
  const types = file.optionalNumbers('tokenizer.ggml.token_type') ?? new Int32Array(n).fill(TOKEN_TYPE.normal);
  if (scores.length !== n) throw new Error(`${where}: tokenizer.ggml.scores has ${scores.length} entries for ${n} tokens`);
  if (types.length !== n) throw new Error(`${where}: tokenizer.ggml.token_type has ${types.length} entries for ${n} tokens`);
  for (let i = 0; i < n; i++) {
    const t = types[i]!;
    if (!Number.isInteger(t) || t < 0 || t > 6) throw new Error(`${where}: tokenizer.ggml.token_type[${i}] is ${t}, not a llama.cpp token type (0..6)`);
    if (!Number.isFinite(scores[i]!)) throw new Error(`${where}: tokenizer.ggml.scores[${i}] is ${scores[i]}, not a finite score`);
  }
  const tokenId = (key: string, fallback: number | null): number | null => {
    const id = file.optionalNumber(key) ?? fallback;
    if (id !== null && !(Number.isInteger(id) && id >= 0 && id < n)) throw new Error(`${where}: ${key} is ${id}, not an id of its ${n} tokens`);
    return id;
  };
  // llama.cpp's defaults for a SentencePiece vocabulary.
  const bos = tokenId('tokenizer.ggml.bos_token_id', 1)!;
  const eos = tokenId('tokenizer.ggml.eos_token_id', 2)!;
  const unk = tokenId('tokenizer.ggml.unknown_token_id', 0);
  const pad = tokenId('tokenizer.ggml.padding_token_id', null);
  const addSpacePrefix = file.optionalBool('tokenizer.ggml.add_space_prefix') ?? true;

  // Later ids win a piece that appears twice, as in llama.cpp's token_to_id.
  const vocab = new Map<string, number>();
  pieces.forEach((p, id) => vocab.set(p, id));

  const added: AddedTokenJson[] = [];
  for (let id = 0; id < n; id++) {
    const t = types[id]!;
    if (pieces[id]!.length === 0) continue;
    if (t === TOKEN_TYPE.control || t === TOKEN_TYPE.unknown || t === TOKEN_TYPE.userDefined) {
      // normalized: false -> matched in the raw text, as llama.cpp matches them before escaping spaces.
      added.push({ id, content: pieces[id]!, single_word: false, lstrip: false, rstrip: false, normalized: false, special: t !== TOKEN_TYPE.userDefined });
    }
  }

  const merges = spmMerges(pieces, scores, types, vocab);
  const hasBytes = Array.from(types).some((t) => t === TOKEN_TYPE.byte);
  const vocabJson: Record<string, number> = {};
  for (const [p, id] of vocab) vocabJson[p] = id;

  const decoders: Array<Record<string, unknown>> = [
    { type: 'Replace', pattern: { String: '▁' }, content: ' ' },
    { type: 'ByteFallback' },
    { type: 'Fuse' },
  ];
  // The space SentencePiece puts before the text is not the text's.
  if (addSpacePrefix) decoders.push({ type: 'Strip', content: ' ', start: 1, stop: 0 });
  const normalizers: Array<Record<string, unknown>> = [{ type: 'Replace', pattern: { String: ' ' }, content: '▁' }];
  if (addSpacePrefix) normalizers.unshift({ type: 'Prepend', prepend: '▁' });

  const tokenizerJson: TokenizerJson = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: added,
    normalizer: { type: 'Sequence', normalizers },
    pre_tokenizer: null,
    post_processor: null,
    decoder: { type: 'Sequence', decoders },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: unk === null ? null : pieces[unk]!,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: true,
      byte_fallback: hasBytes,
      ignore_merges: false,
      vocab: vocabJson,
      merges,
    },
  };
  const chatTemplate = file.optionalString('tokenizer.chat_template') ?? OPENCHAT_35_CHAT_TEMPLATE;
  return {
    tokenizerJson,
    tokenizerConfig: {
      tokenizer_class: 'LlamaTokenizer',
      bos_token: pieces[bos]!,
      eos_token: pieces[eos]!,
      unk_token: unk === null ? null : pieces[unk]!,
      pad_token: pad === null ? null : pieces[pad]!,
      add_bos_token: file.optionalBool('tokenizer.ggml.add_bos_token') ?? true,
      add_eos_token: file.optionalBool('tokenizer.ggml.add_eos_token') ?? false,
      clean_up_tokenization_spaces: false,
      chat_template: chatTemplate,
    },
  };
}

/**
 * Every split of every mergeable piece into two pieces, ranked as llama.cpp's SentencePiece
 * tokenizer would merge them: by the piece's score, highest first; a longer piece first on a
 * tie (see the header), then the lower id. Byte and unused pieces are never merge results.
 */
function spmMerges(pieces: readonly string[], scores: ArrayLike<number>, types: ArrayLike<number>, vocab: Map<string, number>): Array<[string, string]> {
  const made: Array<{ id: number; chars: number; splits: Array<[string, string]> }> = [];
  for (let id = 0; id < pieces.length; id++) {
    const t = types[id]!;
    if (t === TOKEN_TYPE.byte || t === TOKEN_TYPE.unused || vocab.get(pieces[id]!) !== id) continue;
    // Code points, as both tokenizers split the text into characters, not UTF-16 units.
    const cps = Array.from(pieces[id]!);
    if (cps.length < 2) continue;
    const splits: Array<[string, string]> = [];
    for (let k = cps.length - 1; k >= 1; k--) {
      const left = cps.slice(0, k).join('');
      const right = cps.slice(k).join('');
      if (vocab.has(left) && vocab.has(right)) splits.push([left, right]);
    }
    if (splits.length > 0) made.push({ id, chars: cps.length, splits });
  }
  made.sort((a, b) => scores[b.id]! - scores[a.id]! || b.chars - a.chars || a.id - b.id);
  return made.flatMap((m) => m.splits);
}

/**
 * The tokenizer of a GGUF file's vocabulary. Generation stops on its EOS, on <|end_of_turn|>
 * when it has one, on the file's end-of-turn / end-of-message ids, and on `extraStopIds`.
 */
export function tokenizerFromGguf(file: GgufFile, extraStopIds: readonly number[] = []): OpenChatTokenizer {
  const files = ggufTokenizerFiles(file);
  const stops = [...extraStopIds];
  for (const key of ['tokenizer.ggml.eot_token_id', 'tokenizer.ggml.eom_token_id']) {
    const id = file.optionalNumber(key);
    if (id !== undefined) stops.push(id);
  }
  return OpenChatTokenizer.fromFiles(files, file.path, stops);
}

/**
 * The tokenizer metadata llama.cpp's converter writes for OpenChat 3.5 (Mistral's 32000 pieces,
 * then <|end_of_turn|> = 32000 and <|pad_0|> = 32001 as control tokens), made from the vocabulary
 * and merges that mistral-tokenizer-js ships: each piece's score is minus the rank of the first
 * merge that makes it (SentencePiece's scores order the merges the same way). For tests and
 * scripts that write GGUF models.
 */
export async function openChat35GgufTokenizerMetadata(): Promise<Array<[string, GgufValue]>> {
  const { default: mistral } = await import('mistral-tokenizer-js');
  const pieces = [...mistral.vocabById, END_OF_TURN, '<|pad_0|>'];
  const firstRank = new Map<string, number>();
  let rank = 0;
  // The Map's insertion order is the merge order (its values are priorities in that order).
  for (const pair of [...mistral.merges.entries()].sort((a, b) => a[1] - b[1]).map(([p]) => p)) {
    const piece = pair.replace(' ', '');
    if (!firstRank.has(piece)) firstRank.set(piece, rank);
    rank++;
  }
  const scores = new Float32Array(pieces.length);
  const types = new Int32Array(pieces.length);
  pieces.forEach((p, id) => {
    if (id === 0) types[id] = TOKEN_TYPE.unknown;
    else if (id <= 2 || id >= 32000) types[id] = TOKEN_TYPE.control;
    else if (/^<0x[0-9A-F]{2}>$/.test(p)) types[id] = TOKEN_TYPE.byte;
    else types[id] = TOKEN_TYPE.normal;
    const r = firstRank.get(p);
    scores[id] = types[id] === TOKEN_TYPE.normal ? (r === undefined ? 0 : -r) : types[id] === TOKEN_TYPE.control && id >= 32000 ? -1000 : 0;
  });
  return [
    ['tokenizer.ggml.model', gv.string('llama')],
    ['tokenizer.ggml.tokens', gv.strings(pieces)],
    ['tokenizer.ggml.scores', gv.numbers('f32', scores)],
    ['tokenizer.ggml.token_type', gv.numbers('i32', types)],
    ['tokenizer.ggml.bos_token_id', gv.u32(1)],
    ['tokenizer.ggml.eos_token_id', gv.u32(2)],
    ['tokenizer.ggml.unknown_token_id', gv.u32(0)],
    ['tokenizer.ggml.add_bos_token', gv.bool(true)],
    ['tokenizer.ggml.add_eos_token', gv.bool(false)],
    ['tokenizer.chat_template', gv.string(OPENCHAT_35_CHAT_TEMPLATE)],
  ];
}

/** Writes a vocabulary-only GGUF file of OpenChat 3.5's tokenizer (llama.cpp's ggml-vocab-*.gguf layout). */
export async function writeOpenChat35VocabGguf(path: string): Promise<void> {
  await writeGguf(path, {
    metadata: [['general.architecture', gv.string('llama')], ['general.name', gv.string('openchat-3.5 vocabulary')], ...(await openChat35GgufTokenizerMetadata())],
  });
}
