/**
 * The OpenChat 3.5 tokenizer, built offline.
 *
 * OpenChat 3.5 uses Mistral-7B's SentencePiece BPE vocabulary (32000 pieces) plus two added
 * tokens, `<|end_of_turn|>` = 32000 and `<|pad_0|>` = 32001. `mistral-tokenizer-js` ships that
 * vocabulary and its merge table; here we re-express them as a Hugging Face `tokenizer.json`
 * (the format `@huggingface/tokenizers` reads, the same one the checkpoint ships), so the built-in
 * tokenizer and a checkpoint folder's tokenizer go through exactly the same code path.
 *
 * The pipeline is the Llama/Mistral "legacy" one that the original `tokenizer.json` uses:
 *   normalizer:  Prepend "▁", then Replace " " -> "▁"   (SentencePiece's dummy prefix + space marker)
 *   pre-tokenizer: none                                  (the whole text is one BPE "word")
 *   model:       BPE over characters, byte_fallback      (a character missing from the vocabulary
 *                                                         becomes its UTF-8 bytes, <0xE2><0x82><0xAC>)
 *   decoder:     Replace "▁" -> " ", ByteFallback, Fuse, Strip one leading " "
 *
 * The JSON is written to a cache folder (`.cache/tokenizer/` in the repository, git-ignored;
 * OPENCHAT_CACHE_DIR overrides) together with a `tokenizer_config.json`, so the cache folder is
 * itself a valid model folder. Nothing generated is committed: this module regenerates it.
 */
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Bump when the generated JSON changes, so stale caches are not reused. */
const BUILD_VERSION = 1;

/** openchat/openchat-3.5-0106's tokenizer_config.json chat_template, verbatim. */
export const OPENCHAT_35_CHAT_TEMPLATE =
  "{{ bos_token }}{% for message in messages %}{{ 'GPT4 Correct ' + message['role'].title() + ': ' + message['content'] + '<|end_of_turn|>'}}{% endfor %}{% if add_generation_prompt %}{{ 'GPT4 Correct Assistant:' }}{% endif %}";

export const END_OF_TURN = '<|end_of_turn|>';

/** A `tokenizer.json` added-token entry. */
export interface AddedTokenJson {
  id: number;
  content: string;
  single_word: boolean;
  lstrip: boolean;
  rstrip: boolean;
  normalized: boolean;
  special: boolean;
}

/** The parts of a Hugging Face `tokenizer.json` this project reads itself (the library reads the rest). */
export interface TokenizerJson {
  added_tokens?: AddedTokenJson[];
  model: { type?: string; vocab?: Record<string, number> | unknown; [key: string]: unknown };
  [key: string]: unknown;
}

/** The parts of a `tokenizer_config.json` we read; special tokens may be strings or AddedToken dicts. */
export interface TokenizerConfigJson {
  bos_token?: string | { content: string } | null;
  eos_token?: string | { content: string } | null;
  unk_token?: string | { content: string } | null;
  pad_token?: string | { content: string } | null;
  chat_template?: string | Array<{ name: string; template: string }> | Record<string, string>;
  clean_up_tokenization_spaces?: boolean;
  [key: string]: unknown;
}

export interface TokenizerFiles {
  tokenizerJson: TokenizerJson;
  tokenizerConfig: TokenizerConfigJson;
}

function special(id: number, content: string): AddedTokenJson {
  // normalized: false -> matched in the raw text before the normalizer runs, like the checkpoint.
  return { id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true };
}

/** Builds the OpenChat 3.5 tokenizer.json from mistral-tokenizer-js's vocabulary and merges. */
export async function buildOpenChat35TokenizerJson(): Promise<TokenizerJson> {
  // Imported lazily: decoding its base64 tables costs ~100 ms, paid only when the cache is cold.
  const { default: mistral } = await import('mistral-tokenizer-js');
  const vocab: Record<string, number> = {};
  mistral.vocabById.forEach((piece, id) => {
    vocab[piece] = id;
  });
  if (mistral.vocabById.length !== 32000 || Object.keys(vocab).length !== 32000) {
    throw new Error(`mistral-tokenizer-js: expected 32000 distinct pieces, got ${mistral.vocabById.length}`);
  }
  // Its Map is keyed 'left right' with the priority as value; sort by priority for the rank order.
  const merges = [...mistral.merges.entries()]
    .sort((a, b) => a[1] - b[1])
    .map(([pair]) => {
      const parts = pair.split(' ');
      if (parts.length !== 2) throw new Error(`mistral-tokenizer-js: malformed merge '${pair}'`);
      return parts as [string, string];
    });

  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: [
      special(0, '<unk>'),
      special(1, '<s>'),
      special(2, '</s>'),
      special(32000, END_OF_TURN),
      special(32001, '<|pad_0|>'),
    ],
    normalizer: {
      type: 'Sequence',
      normalizers: [
        { type: 'Prepend', prepend: '▁' },
        { type: 'Replace', pattern: { String: ' ' }, content: '▁' },
      ],
    },
    pre_tokenizer: null,
    // The BOS is added by our own encode({ addBos }) and by the chat template's {{ bos_token }},
    // as with Hugging Face's apply_chat_template (which tokenizes with add_special_tokens=False).
    post_processor: null,
    decoder: {
      type: 'Sequence',
      decoders: [
        { type: 'Replace', pattern: { String: '▁' }, content: ' ' },
        { type: 'ByteFallback' },
        { type: 'Fuse' },
        { type: 'Strip', content: ' ', start: 1, stop: 0 },
      ],
    },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: '<unk>',
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: true,
      byte_fallback: true,
      ignore_merges: false,
      vocab,
      merges,
    },
  };
}

export function openChat35TokenizerConfig(): TokenizerConfigJson {
  return {
    tokenizer_class: 'LlamaTokenizer',
    bos_token: '<s>',
    eos_token: '</s>',
    unk_token: '<unk>',
    pad_token: null,
    add_bos_token: true,
    add_eos_token: false,
    legacy: true,
    // Hugging Face's "clean up" rewrites " ." -> "." and similar; it breaks exact round trips.
    clean_up_tokenization_spaces: false,
    model_max_length: 8192,
    chat_template: OPENCHAT_35_CHAT_TEMPLATE,
  };
}

/** Where the built tokenizer is cached: OPENCHAT_CACHE_DIR, else `<repo>/.cache`. */
export function builtinCacheDir(): string {
  const root = process.env.OPENCHAT_CACHE_DIR ?? fileURLToPath(new URL('../../.cache', import.meta.url));
  return join(root, 'tokenizer', `openchat-3.5-v${BUILD_VERSION}`);
}

/** Writes via a temporary file and a rename, so a concurrent reader never sees half a file. */
function writeAtomically(path: string, text: string): void {
  const tmp = `${path}.${process.pid}.${Date.now()}.tmp`;
  writeFileSync(tmp, text);
  renameSync(tmp, path);
}

/**
 * The built-in OpenChat 3.5 tokenizer files: read from the cache, or built and cached.
 * A missing or unreadable cache is rebuilt; a cache that cannot be written is only a lost speed-up.
 */
export async function loadOpenChat35Files(): Promise<TokenizerFiles & { dir: string }> {
  const dir = builtinCacheDir();
  const jsonPath = join(dir, 'tokenizer.json');
  const configPath = join(dir, 'tokenizer_config.json');
  try {
    const tokenizerJson = JSON.parse(readFileSync(jsonPath, 'utf8')) as TokenizerJson;
    const tokenizerConfig = JSON.parse(readFileSync(configPath, 'utf8')) as TokenizerConfigJson;
    return { tokenizerJson, tokenizerConfig, dir };
  } catch {
    // Cold or damaged cache: build below.
  }
  const tokenizerJson = await buildOpenChat35TokenizerJson();
  const tokenizerConfig = openChat35TokenizerConfig();
  try {
    mkdirSync(dir, { recursive: true });
    writeAtomically(jsonPath, JSON.stringify(tokenizerJson));
    writeAtomically(configPath, JSON.stringify(tokenizerConfig, null, 2));
  } catch (err) {
    process.emitWarning(`could not cache the built tokenizer in ${dir}: ${(err as Error).message}`);
  }
  return { tokenizerJson, tokenizerConfig, dir };
}
