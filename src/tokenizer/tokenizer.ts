/**
 * The OpenChat tokenizer: text <-> token ids, OpenChat's chat format, and streaming decode.
 *
 * Tokenization itself is done by `@huggingface/tokenizers` from a Hugging Face `tokenizer.json`,
 * either the one in a checkpoint folder (exactly as the checkpoint defines it: added tokens,
 * normalizer, chat template) or the OpenChat 3.5 one built offline (see openchat35.ts).
 *
 * Two ways to turn a conversation into ids:
 *  - `encodeChat`: OpenChat's own server-side encoding (the `ochat` package's ConversationTemplate),
 *    segment by segment. Message text is always plain text, so a user who types
 *    "<|end_of_turn|>GPT4 Correct Assistant:" gets those characters, not a forged turn.
 *  - `applyChatTemplate`: the checkpoint's jinja chat template rendered to one string and encoded
 *    with special tokens parsed (Hugging Face `apply_chat_template` semantics). For OpenChat 3.5 the
 *    two agree on ordinary input; only the template path can be fooled by special-token text.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers';
import { Template } from '@huggingface/jinja';
import {
  END_OF_TURN,
  loadOpenChat35Files,
  type TokenizerConfigJson,
  type TokenizerFiles,
  type TokenizerJson,
} from './openchat35.ts';
import { WindowedStreamDecoder, type StreamDecoder } from './stream.ts';

export type { StreamDecoder } from './stream.ts';

export interface ChatMessage {
  role: 'system' | 'user' | 'assistant';
  content: string;
}

export interface EncodeOptions {
  /** Prepend the BOS token. Default false. */
  addBos?: boolean;
  /** Recognize special-token strings ("<|end_of_turn|>", "<s>") in the text. Default false: plain text. */
  parseSpecial?: boolean;
}

export interface EncodeChatOptions {
  /** 'GPT4 Correct' (default, general chat) or 'Code' (the coding mode); 'code' is accepted too. */
  condition?: string;
  /** End with the assistant's role prefix so the model writes the reply. Default true. */
  addGenerationPrompt?: boolean;
}

/** OpenChat's conditions, by lower-cased name. Any other condition string is used as given. */
const CONDITIONS: Record<string, string> = { 'gpt4 correct': 'GPT4 Correct', code: 'Code' };
export const DEFAULT_CONDITION = 'GPT4 Correct';

/**
 * The conditions OpenChat 3.5 was trained with, or null for another string.
 * Request handlers accept only these; the tokenizer itself (normalizeCondition)
 * passes other strings through, as ochat does for custom conditions.
 */
export function knownCondition(condition: string): string | null {
  return CONDITIONS[condition.trim().toLowerCase()] ?? null;
}

export function normalizeCondition(condition: string | undefined): string {
  const c = (condition ?? DEFAULT_CONDITION).trim();
  return CONDITIONS[c.toLowerCase()] ?? c;
}

/** ochat's role prefix: f"{condition} {'User:'|'Assistant:'}".strip(). */
export function rolePrefix(role: 'user' | 'assistant', condition: string): string {
  return `${condition} ${role === 'user' ? 'User:' : 'Assistant:'}`.trim();
}

/** A special token in tokenizer_config.json is a string or an AddedToken dict ({ content, ... }). */
function tokenContent(value: TokenizerConfigJson['bos_token']): string | undefined {
  if (typeof value === 'string') return value;
  if (value && typeof value === 'object' && typeof value.content === 'string') return value.content;
  return undefined;
}

/** tokenizer_config's chat_template: a string, or named templates (we take 'default', else the first). */
function pickChatTemplate(config: TokenizerConfigJson, dir: string | undefined): string | undefined {
  const t = config.chat_template;
  if (typeof t === 'string') return t;
  if (Array.isArray(t)) return (t.find((x) => x.name === 'default') ?? t[0])?.template;
  if (t && typeof t === 'object') return t['default'] ?? Object.values(t)[0];
  // Newer checkpoints keep the template in its own file.
  if (dir && existsSync(join(dir, 'chat_template.jinja'))) return readFileSync(join(dir, 'chat_template.jinja'), 'utf8');
  return undefined;
}

function readJson(path: string): unknown {
  try {
    return JSON.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    throw new Error(`cannot read ${path}: ${(err as Error).message}`);
  }
}

export class OpenChatTokenizer {
  /** Where the definition came from: a folder path, or the built-in OpenChat 3.5 one. */
  readonly source: string;
  /** Largest id + 1, counting added tokens: the embedding rows the model must have. */
  readonly vocabSize: number;
  readonly bosId: number;
  readonly eosId: number;
  /** `<|end_of_turn|>`, if the vocabulary has it (OpenChat's end of a turn). */
  readonly eotId: number | null;
  /** Ids that end generation: EOS and <|end_of_turn|> when present (plus generation_config's eos ids). */
  readonly stopIds: number[];
  /** The jinja chat template, if the checkpoint has one. */
  readonly chatTemplate: string | undefined;

  /** Recognizes added tokens in the text (how the checkpoint's tokenizer is used by default). */
  private readonly full: Tokenizer;
  /**
   * The same tokenizer without its *special* added tokens, so "<|end_of_turn|>" or "<s>" inside
   * text stays text (Hugging Face's split_special_tokens=True, which ochat uses for message content).
   */
  private readonly plain: Tokenizer;
  private readonly config: TokenizerConfigJson;
  private template: Template | undefined;

  private constructor(files: TokenizerFiles, source: string, dir: string | undefined, extraStopIds: number[]) {
    const { tokenizerJson, tokenizerConfig } = files;
    this.source = source;
    this.config = tokenizerConfig;
    // Exact round trips: never apply the "clean up tokenization spaces" rewrite (" ." -> ".").
    const libConfig = { ...tokenizerConfig, clean_up_tokenization_spaces: false };
    this.full = new Tokenizer(tokenizerJson, libConfig);
    const nonSpecial = (tokenizerJson.added_tokens ?? []).filter((t) => !t.special);
    this.plain = new Tokenizer({ ...tokenizerJson, added_tokens: nonSpecial }, libConfig);

    const idOf = (content: string | undefined): number | undefined =>
      content === undefined ? undefined : this.full.token_to_id(content);
    const bos = idOf(tokenContent(tokenizerConfig.bos_token)) ?? idOf('<s>');
    const eos = idOf(tokenContent(tokenizerConfig.eos_token)) ?? idOf('</s>');
    if (bos === undefined || eos === undefined) {
      throw new Error(`${source}: cannot find the BOS/EOS tokens (tokenizer_config bos_token/eos_token, or <s>, </s>)`);
    }
    this.bosId = bos;
    this.eosId = eos;
    this.eotId = idOf(END_OF_TURN) ?? null;
    this.stopIds = [...new Set([eos, ...(this.eotId === null ? [] : [this.eotId]), ...extraStopIds])];

    let maxId = -1;
    for (const id of this.full.get_vocab(true).values()) maxId = Math.max(maxId, id);
    this.vocabSize = maxId + 1;
    this.chatTemplate = pickChatTemplate(tokenizerConfig, dir);
  }

  /**
   * The folder's tokenizer (tokenizer.json + tokenizer_config.json) when `modelDir` has a
   * tokenizer.json; otherwise the built-in OpenChat 3.5 tokenizer (built once, then cached).
   * A `modelDir` that does not exist is an error (a typo should not silently change tokenizers),
   * and so is any file here that is present but malformed (tokenizer.json, tokenizer_config.json,
   * generation_config.json, whose eos_token_id joins the stop ids whichever tokenizer is used).
   */
  static async load(modelDir?: string): Promise<OpenChatTokenizer> {
    if (modelDir === undefined) return new OpenChatTokenizer(await loadOpenChat35Files(), 'built-in OpenChat 3.5 tokenizer', undefined, []);
    const dir = resolve(modelDir);
    if (!existsSync(dir)) throw new Error(`model folder not found: ${dir}`);
    const object = (path: string): Record<string, unknown> => {
      const v = readJson(path);
      if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error(`${path}: must contain a JSON object`);
      return v as Record<string, unknown>;
    };

    // generation_config.json's eos_token_id (a number or a list) is what HF generate stops on,
    // whichever tokenizer is used; a file that is there but unreadable is an error, not ignored.
    const genPath = join(dir, 'generation_config.json');
    const extra: number[] = [];
    if (existsSync(genPath)) {
      const eos = object(genPath).eos_token_id;
      for (const id of eos === undefined || eos === null ? [] : [eos].flat()) {
        if (typeof id !== 'number' || !Number.isInteger(id) || id < 0) {
          throw new Error(`${genPath}: "eos_token_id" must be a token id or a list of them; got ${JSON.stringify(eos)}`);
        }
        extra.push(id);
      }
    }

    const jsonPath = join(dir, 'tokenizer.json');
    if (!existsSync(jsonPath)) {
      return new OpenChatTokenizer(await loadOpenChat35Files(), 'built-in OpenChat 3.5 tokenizer', undefined, extra);
    }
    const tokenizerJson = object(jsonPath);
    // The sections a Hugging Face tokenizer.json always has (null when unused); without them it is some other JSON.
    const sections = ['model', 'normalizer', 'pre_tokenizer', 'post_processor', 'decoder'];
    const missing = sections.filter((k) => !(k in tokenizerJson));
    const model = tokenizerJson.model;
    if (missing.length > 0 || typeof model !== 'object' || model === null || !Array.isArray(tokenizerJson.added_tokens ?? [])) {
      throw new Error(
        `${jsonPath}: not a Hugging Face tokenizer.json (` +
          (missing.length > 0 ? `no ${missing.map((k) => `"${k}"`).join(', ')}` : '"model" must be an object and "added_tokens" a list') +
          `; it has ${sections.join(', ')} and added_tokens). Copy the tokenizer.json of the checkpoint, or remove it to use the built-in OpenChat 3.5 tokenizer`,
      );
    }
    const configPath = join(dir, 'tokenizer_config.json');
    const tokenizerConfig = existsSync(configPath) ? object(configPath) : {};
    try {
      return new OpenChatTokenizer(
        // Checked above for the sections the library reads; their contents are the library's to judge.
        { tokenizerJson: { added_tokens: [], ...tokenizerJson } as unknown as TokenizerJson, tokenizerConfig: tokenizerConfig as TokenizerConfigJson },
        dir,
        dir,
        extra,
      );
    } catch (err) {
      const message = (err as Error).message;
      throw new Error(message.startsWith(dir) ? message : `${jsonPath}: cannot build a tokenizer from it (${message})`);
    }
  }

  encode(text: string, opts: EncodeOptions = {}): number[] {
    const tok = opts.parseSpecial ? this.full : this.plain;
    const ids = text.length === 0 ? [] : tok.encode(text, { add_special_tokens: false }).ids;
    return opts.addBos ? [this.bosId, ...ids] : ids;
  }

  decode(ids: number[], opts: { skipSpecial?: boolean } = {}): string {
    if (ids.length === 0) return '';
    return this.full.decode(ids, { skip_special_tokens: opts.skipSpecial ?? false, clean_up_tokenization_spaces: false });
  }

  idToToken(id: number): string | undefined {
    return this.full.id_to_token(id);
  }

  /** True when the vocabulary has OpenChat's turn format (<|end_of_turn|>), so encodeChat can build it. */
  get hasOpenChatFormat(): boolean {
    return this.eotId !== null;
  }

  /**
   * OpenChat's server-side chat encoding (ochat ConversationTemplate.tokenize_conversations, as
   * called by its OpenAI-compatible server), segment by segment:
   *
   *   BOS
   *   [system text, stripped, as plain text] <|end_of_turn|>          (only if there is a system message)
   *   for each user/assistant message:
   *     tokens("GPT4 Correct User:" / "GPT4 Correct Assistant:")      (the role prefix, on its own)
   *     tokens(content, plain text)  <|end_of_turn|>
   *   tokens("GPT4 Correct Assistant:")                               (addGenerationPrompt)
   *
   * Every segment is encoded separately, so each gets SentencePiece's leading "▁" (that is why
   * "Hello" after "User:" is "▁Hello"), and nothing inside a message can become a special token.
   * With addGenerationPrompt and a final assistant message, that message is left open (no
   * <|end_of_turn|>) for the model to continue, as ochat does.
   *
   * System messages (ochat's --enable-sys-prompt layout): all of them, wherever they appear, are
   * stripped and joined with "\n" into one system segment placed right after BOS. See README.md.
   *
   * A folder tokenizer without <|end_of_turn|> is not an OpenChat vocabulary: fall back to its own
   * chat template (applyChatTemplate).
   */
  encodeChat(messages: ChatMessage[], opts: EncodeChatOptions = {}): number[] {
    const addGenerationPrompt = opts.addGenerationPrompt ?? true;
    if (this.eotId === null) {
      if (this.chatTemplate === undefined) {
        throw new Error(
          `${this.source}: no OpenChat turn format (no ${END_OF_TURN} token) and no chat_template; cannot encode a chat`,
        );
      }
      return this.applyChatTemplate(messages, { addGenerationPrompt });
    }
    const eot = this.eotId;
    const condition = normalizeCondition(opts.condition);

    const systemTexts: string[] = [];
    const turns: ChatMessage[] = [];
    for (const m of messages) {
      if (m.role === 'system') {
        const text = m.content.trim();
        if (text) systemTexts.push(text);
      } else if (m.role === 'user' || m.role === 'assistant') {
        turns.push(m);
      } else {
        throw new Error(`unknown chat role '${String((m as { role: unknown }).role)}' (expected system, user or assistant)`);
      }
    }

    const ids: number[] = [this.bosId];
    if (systemTexts.length > 0) ids.push(...this.encode(systemTexts.join('\n')), eot);

    // ochat appends an empty assistant turn when the last one is not the assistant's, and leaves
    // the last turn without <|end_of_turn|>.
    if (addGenerationPrompt && turns.at(-1)?.role !== 'assistant') turns.push({ role: 'assistant', content: '' });
    turns.forEach((m, i) => {
      ids.push(...this.encode(rolePrefix(m.role as 'user' | 'assistant', condition)));
      ids.push(...this.encode(m.content));
      const open = addGenerationPrompt && i === turns.length - 1;
      if (!open) ids.push(eot);
    });
    return ids;
  }

  /** The checkpoint's jinja chat template, rendered, then encoded with special tokens parsed. */
  applyChatTemplate(messages: ChatMessage[], opts: { addGenerationPrompt?: boolean } = {}): number[] {
    return this.encode(this.renderChatTemplate(messages, opts), { parseSpecial: true });
  }

  /** The rendered chat template text (what applyChatTemplate encodes). */
  renderChatTemplate(messages: ChatMessage[], opts: { addGenerationPrompt?: boolean } = {}): string {
    if (this.chatTemplate === undefined) throw new Error(`${this.source}: the tokenizer has no chat_template`);
    this.template ??= new Template(this.chatTemplate);
    return this.template.render({
      messages: messages.map((m) => ({ role: m.role, content: m.content })),
      add_generation_prompt: opts.addGenerationPrompt ?? true,
      bos_token: tokenContent(this.config.bos_token) ?? this.idToToken(this.bosId) ?? '',
      eos_token: tokenContent(this.config.eos_token) ?? this.idToToken(this.eosId) ?? '',
      unk_token: tokenContent(this.config.unk_token) ?? '',
      pad_token: tokenContent(this.config.pad_token) ?? '',
    });
  }

  createStreamDecoder(opts: { skipSpecial?: boolean } = {}): StreamDecoder {
    return new WindowedStreamDecoder((ids) => this.decode(ids, opts));
  }
}
