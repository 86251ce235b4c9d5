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
 *
 * Both are written in steps (steps.ts): the encoders ask for each slice of text to be tokenized,
 * and the caller runs that inline (`encode`, `encodeChat`, `finish`) or in a worker thread
 * (`finishAsync`, worker.ts), which is how the server keeps a long prompt off its event loop.
 */
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
import { runSteps, runStepsAsync, type EncodeRequest, type Steps } from './steps.ts';
import { EncoderWorker } from './worker.ts';
import { diskFiles, type ModelSource } from '../util/files.ts';
import { GgufFile, isGgufPath } from '../util/gguf.ts';
import { tokenizerFromGguf } from './gguf.ts';

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
  /** Longest slice of text encoded in one step (see `encodeSteps`); default SLICE_CHARS. For tests. */
  sliceChars?: number;
}

/**
 * Plain text longer than this is encoded slice by slice (when the tokenizer allows exact
 * slicing), so that one step of `encodeSteps` stays short: about 20 ms on one core.
 */
export const SLICE_CHARS = 4096;

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
function pickChatTemplate(config: TokenizerConfigJson, templateFile: string | undefined): string | undefined {
  const t = config.chat_template;
  if (typeof t === 'string') return t;
  if (Array.isArray(t)) return (t.find((x) => x.name === 'default') ?? t[0])?.template;
  if (t && typeof t === 'object') return t['default'] ?? Object.values(t)[0];
  // Newer checkpoints keep the template in its own file.
  return templateFile;
}

/**
 * Whether a tokenizer.json is a SentencePiece-style BPE in Hugging Face's legacy Llama layout
 * (Mistral's and OpenChat 3.5's): no pre-tokenizer, a normalizer that prepends "▁" and turns
 * every " " into "▁" (one character for one), and no piece holding "▁" anywhere but at its start
 * (runs of "▁" aside). For such a tokenizer two facts hold, and `OpenChatTokenizer` uses them:
 *
 *  - A token covers a contiguous run of the normalized text, exactly as many UTF-16 code units
 *    as its piece has (byte-fallback tokens cover less: a byte of one character). The normalized
 *    text is one longer than the text. So a text of n code units has at least ceil(n / L)
 *    tokens, L the longest piece: a bound from the length alone, before any tokenizing.
 *  - Cut a text before a space that follows a non-space: a token spanning the cut would hold
 *    "x▁" with x not "▁", and no piece does. BPE merges only into pieces, so both sides are
 *    tokenized as they would be alone. The right side, encoded alone without its first space,
 *    is normalized to "▁" + the rest: the same characters as in the whole text. So encoding
 *    the slices one by one gives the ids of the whole text.
 */
function isLegacyLlamaBpe(json: TokenizerJson, pieces: Iterable<string>, addedNonSpecial: number): boolean {
  const model = json.model as { type?: unknown };
  if (model.type !== 'BPE' || (json.pre_tokenizer ?? null) !== null || addedNonSpecial > 0) return false;
  const n = json.normalizer as { type?: string; normalizers?: Array<Record<string, unknown>> } | null | undefined;
  const steps = n?.type === 'Sequence' ? (n.normalizers ?? []) : [];
  const [prepend, replace] = steps;
  const ok =
    steps.length === 2 &&
    prepend?.['type'] === 'Prepend' &&
    prepend['prepend'] === '▁' &&
    replace?.['type'] === 'Replace' &&
    (replace['pattern'] as { String?: unknown } | undefined)?.String === ' ' &&
    replace['content'] === '▁';
  if (!ok) return false;
  for (const piece of pieces) {
    if (piece.indexOf('▁', 1) > 0 && !/^▁+$/.test(piece)) return false;
  }
  return true;
}

async function readJson(path: string, files: ModelSource): Promise<unknown> {
  try {
    return JSON.parse(await files.readText(path));
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
  /**
   * For a legacy Llama-style BPE (see isLegacyLlamaBpe): the longest piece in UTF-16 code units,
   * which bounds the text one token can cover. Null for other tokenizers: no bound, no slicing.
   */
  private readonly maxPieceChars: number | null;
  /** Tokenizes for `finishAsync` off the event loop; started on first use. */
  private readonly worker: EncoderWorker;
  /** Ids of special added tokens (never text). */
  private readonly specialIds: Set<number>;
  /** The decoder maps SentencePiece's "▁" to a space and <0xNN> to a byte (what tokenBytes assumes). */
  readonly sentencePieceDecoder: boolean;

  /** `templateFile`: the folder's chat_template.jinja, which newer checkpoints keep beside tokenizer_config.json. */
  private constructor(tokenizerFiles: TokenizerFiles, source: string, extraStopIds: number[], templateFile?: string) {
    const { tokenizerJson, tokenizerConfig } = tokenizerFiles;
    this.source = source;
    this.config = tokenizerConfig;
    // Exact round trips: never apply the "clean up tokenization spaces" rewrite (" ." -> ".").
    const libConfig = { ...tokenizerConfig, clean_up_tokenization_spaces: false };
    this.full = new Tokenizer(tokenizerJson, libConfig);
    const nonSpecial = (tokenizerJson.added_tokens ?? []).filter((t) => !t.special);
    this.plain = new Tokenizer({ ...tokenizerJson, added_tokens: nonSpecial }, libConfig);
    this.worker = new EncoderWorker(tokenizerJson, libConfig);

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
    let maxPiece = 1;
    const vocab = this.full.get_vocab(true);
    for (const [piece, id] of vocab) {
      maxId = Math.max(maxId, id);
      maxPiece = Math.max(maxPiece, piece.length);
    }
    this.vocabSize = maxId + 1;
    this.maxPieceChars = isLegacyLlamaBpe(tokenizerJson, vocab.keys(), nonSpecial.length) ? maxPiece : null;
    this.chatTemplate = pickChatTemplate(tokenizerConfig, templateFile);
    this.specialIds = new Set((tokenizerJson.added_tokens ?? []).filter((t) => t.special).map((t) => t.id));
    const decoder = JSON.stringify((tokenizerJson as { decoder?: unknown }).decoder ?? null);
    this.sentencePieceDecoder = decoder.includes('\u2581');
  }

  /**
   * Every id's text as the decoder concatenates it, in UTF-8 bytes: SentencePiece's "▁" is a
   * space, "<0xNN>" is the byte NN; null for special tokens (never text) and unused ids. For
   * constrained decoding, which must know what each token adds to the output. (The decoder also
   * drops one leading space of the whole output; a constraint that allows leading whitespace
   * needs nothing more.)
   */
  tokenBytes(): (Uint8Array | null)[] {
    if (!this.sentencePieceDecoder) {
      throw new Error(`${this.source}: constrained decoding needs a SentencePiece-style vocabulary (\u2581 for spaces, <0xNN> byte fallback)`);
    }
    const encoder = new TextEncoder();
    const out: (Uint8Array | null)[] = [];
    for (let id = 0; id < this.vocabSize; id++) {
      const piece = this.specialIds.has(id) ? undefined : this.full.id_to_token(id);
      if (piece === undefined) {
        out.push(null);
        continue;
      }
      const byte = /^<0x([0-9A-Fa-f]{2})>$/.exec(piece);
      out.push(byte ? Uint8Array.of(parseInt(byte[1]!, 16)) : encoder.encode(piece.replaceAll('\u2581', ' ')));
    }
    return out;
  }

  /**
   * A tokenizer from tokenizer.json and tokenizer_config.json objects made elsewhere (a GGUF
   * file's vocabulary, src/tokenizer/gguf.ts); `source` names where they came from in messages.
   */
  static fromFiles(tokenizerFiles: TokenizerFiles, source: string, extraStopIds: readonly number[] = []): OpenChatTokenizer {
    return new OpenChatTokenizer(tokenizerFiles, source, [...extraStopIds]);
  }

  /**
   * The folder's tokenizer (tokenizer.json + tokenizer_config.json) when `modelDir` has a
   * tokenizer.json; otherwise the built-in OpenChat 3.5 tokenizer (built once, then cached).
   * A `modelDir` that does not exist is an error (a typo should not silently change tokenizers),
   * and so is any file here that is present but malformed (tokenizer.json, tokenizer_config.json,
   * generation_config.json, whose eos_token_id joins the stop ids whichever tokenizer is used).
   * The files are read from `files` (the disk unless given); the built-in tokenizer is cached on
   * disk, so a folder read from elsewhere (a browser tab) must have its own tokenizer.json.
   */
  static async load(modelDir?: string, files: ModelSource = diskFiles): Promise<OpenChatTokenizer> {
    if (modelDir === undefined) return new OpenChatTokenizer(await loadOpenChat35Files(), 'built-in OpenChat 3.5 tokenizer', []);
    if (isGgufPath(modelDir)) {
      // A GGUF file carries its vocabulary, special tokens and chat template (tokenizer/gguf.ts).
      const gguf = await GgufFile.open(resolve(modelDir), files);
      try {
        return tokenizerFromGguf(gguf);
      } finally {
        gguf.close();
      }
    }
    const dir = resolve(modelDir);
    if (!(await files.exists(dir))) throw new Error(`model folder not found: ${dir}`);
    const object = async (path: string): Promise<Record<string, unknown>> => {
      const v = await readJson(path, files);
      if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error(`${path}: must contain a JSON object`);
      return v as Record<string, unknown>;
    };

    // generation_config.json's eos_token_id (a number or a list) is what HF generate stops on,
    // whichever tokenizer is used; a file that is there but unreadable is an error, not ignored.
    const genPath = join(dir, 'generation_config.json');
    const extra: number[] = [];
    if (await files.exists(genPath)) {
      const eos = (await object(genPath)).eos_token_id;
      for (const id of eos === undefined || eos === null ? [] : [eos].flat()) {
        if (typeof id !== 'number' || !Number.isInteger(id) || id < 0) {
          throw new Error(`${genPath}: "eos_token_id" must be a token id or a list of them; got ${JSON.stringify(eos)}`);
        }
        extra.push(id);
      }
    }

    const jsonPath = join(dir, 'tokenizer.json');
    if (!(await files.exists(jsonPath))) {
      if (files !== diskFiles) throw new Error(`${dir}: no tokenizer.json; the checkpoint's tokenizer.json (and tokenizer_config.json) must be there too`);
      return new OpenChatTokenizer(await loadOpenChat35Files(), 'built-in OpenChat 3.5 tokenizer', extra);
    }
    const tokenizerJson = await object(jsonPath);
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
    const tokenizerConfig = (await files.exists(configPath)) ? await object(configPath) : {};
    const templatePath = join(dir, 'chat_template.jinja');
    const templateFile = (await files.exists(templatePath)) ? await files.readText(templatePath) : undefined;
    try {
      return new OpenChatTokenizer(
        // Checked above for the sections the library reads; their contents are the library's to judge.
        { tokenizerJson: { added_tokens: [], ...tokenizerJson } as unknown as TokenizerJson, tokenizerConfig: tokenizerConfig as TokenizerConfigJson },
        dir,
        extra,
        templateFile,
      );
    } catch (err) {
      const message = (err as Error).message;
      throw new Error(message.startsWith(dir) ? message : `${jsonPath}: cannot build a tokenizer from it (${message})`);
    }
  }

  encode(text: string, opts: EncodeOptions = {}): number[] {
    return this.finish(this.encodeSteps(text, opts));
  }

  /** Runs encoding steps (encodeSteps, encodeChatSteps, or a caller's built on them) here and now. */
  finish<T>(steps: Steps<T>): T {
    return runSteps(steps, (req) => this.encodeNow(req));
  }

  /**
   * Runs encoding steps with the tokenizing in a worker thread, so the event loop goes on
   * meanwhile (the server). Stops with the signal's reason when it aborts.
   */
  finishAsync<T>(steps: Steps<T>, signal?: AbortSignal): Promise<T> {
    return runStepsAsync(steps, (req) => this.worker.encode(req), signal);
  }

  /** Stops the tokenizer's worker thread, if one was started (it is also unreferenced while idle). */
  close(): void {
    this.worker.close();
  }

  private encodeNow(req: EncodeRequest): number[] {
    return (req.parseSpecial ? this.full : this.plain).encode(req.text, { add_special_tokens: false }).ids;
  }

  /**
   * `encode` in steps: a request per slice of at most `sliceChars` characters. Plain text is cut
   * only where the tokenizer provably tokenizes both sides as the whole (isLegacyLlamaBpe: before
   * a space that follows a non-space), so the ids are exactly those of `encode` in one go; text
   * that cannot be cut (another tokenizer, special tokens parsed, no space for a long stretch)
   * is one request.
   */
  *encodeSteps(text: string, opts: EncodeOptions = {}): Steps<number[]> {
    const ids: number[] = opts.addBos ? [this.bosId] : [];
    if (text.length === 0) return ids;
    const parseSpecial = opts.parseSpecial ?? false;
    const sliceable = !parseSpecial && this.maxPieceChars !== null;
    const limit = Math.max(1, opts.sliceChars ?? SLICE_CHARS);
    let start = 0;
    for (;;) {
      const cut = sliceable ? findCut(text, start, limit) : -1;
      // A slice after a cut starts after the cut's space: the normalizer's "▁" stands for it.
      const slice = text.slice(start, cut < 0 ? text.length : cut);
      append(ids, yield { text: slice, parseSpecial });
      if (cut < 0) return ids;
      start = cut + 1;
    }
  }

  /**
   * A lower bound on `encode(text).length` from the text's length alone (see isLegacyLlamaBpe),
   * so that a text that cannot fit a context is refused without tokenizing it. 0 for a
   * tokenizer of another kind (nothing is known without tokenizing).
   */
  minTokens(text: string, opts: { addBos?: boolean } = {}): number {
    const bos = opts.addBos ? 1 : 0;
    if (this.maxPieceChars === null || text.length === 0) return bos;
    return bos + Math.ceil(text.length / this.maxPieceChars);
  }

  /** A lower bound on `encodeChat(messages, opts).length`, from the messages' lengths alone. */
  minChatTokens(messages: ChatMessage[], opts: EncodeChatOptions = {}): number {
    if (this.eotId === null) {
      // The template path renders one string (cheap) and encodes it with special tokens parsed;
      // a special token's text is a piece too, so the same bound holds.
      return this.maxPieceChars === null
        ? 0
        : this.minTokens(this.renderChatTemplate(messages, { addGenerationPrompt: opts.addGenerationPrompt ?? true }));
    }
    // BOS; the joined system text; every turn's content (role prefixes and <|end_of_turn|> only add).
    const system = messages.filter((m) => m.role === 'system').map((m) => m.content.trim()).filter(Boolean);
    let bound = 1 + this.minTokens(system.join('\n'));
    for (const m of messages) if (m.role !== 'system') bound += this.minTokens(m.content);
    return bound;
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
    return this.finish(this.encodeChatSteps(messages, opts));
  }

  /** `encodeChat` in steps: a request per slice of every segment (see encodeSteps). */
  *encodeChatSteps(messages: ChatMessage[], opts: EncodeChatOptions = {}): Steps<number[]> {
    const addGenerationPrompt = opts.addGenerationPrompt ?? true;
    if (this.eotId === null) {
      if (this.chatTemplate === undefined) {
        throw new Error(
          `${this.source}: no OpenChat turn format (no ${END_OF_TURN} token) and no chat_template; cannot encode a chat`,
        );
      }
      return yield* this.encodeSteps(this.renderChatTemplate(messages, { addGenerationPrompt }), { parseSpecial: true });
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

    // Segments are appended element by element: `ids.push(...segment)` passes every id as an
    // argument and overflows the stack at about 120,000 of them.
    const ids: number[] = [this.bosId];
    if (systemTexts.length > 0) {
      append(ids, yield* this.encodeSteps(systemTexts.join('\n')));
      ids.push(eot);
    }

    // ochat appends an empty assistant turn when the last one is not the assistant's, and leaves
    // the last turn without <|end_of_turn|>.
    if (addGenerationPrompt && turns.at(-1)?.role !== 'assistant') turns.push({ role: 'assistant', content: '' });
    for (let i = 0; i < turns.length; i++) {
      const m = turns[i]!;
      append(ids, this.encode(rolePrefix(m.role as 'user' | 'assistant', condition)));
      append(ids, yield* this.encodeSteps(m.content));
      const open = addGenerationPrompt && i === turns.length - 1;
      if (!open) ids.push(eot);
    }
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

/** Appends `more` to `ids` without spreading it into arguments (no stack limit on its length). */
function append(ids: number[], more: readonly number[]): void {
  for (const id of more) ids.push(id);
}

/**
 * Where to cut `text` for the next slice starting at `start` (see isLegacyLlamaBpe): a position
 * c > start with a space at c, a non-space before it, and something after it; the last one within
 * `limit` characters, else the first one beyond; -1 when the rest fits in one slice or has none.
 */
function findCut(text: string, start: number, limit: number): number {
  if (text.length - start <= limit) return -1;
  const canCut = (c: number) => text.charCodeAt(c) === 32 && text.charCodeAt(c - 1) !== 32;
  const last = text.length - 2;
  for (let c = Math.min(start + limit, last); c > start; c--) if (canCut(c)) return c;
  for (let c = start + limit + 1; c <= last; c++) if (canCut(c)) return c;
  return -1;
}
