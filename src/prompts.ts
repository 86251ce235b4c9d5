/**
 * A prompt before the model: a chat (through the chat template) or raw text to ids, refused when
 * it cannot fit the context; JSON-mode grammars over the same vocabulary. The Generator holds one
 * (generator.ts) and passes its methods on.
 */
import { contextLengthFor, loadConfig } from './model/config.ts';
import type { ModelSource } from './util/files.ts';
import { OpenChatTokenizer, SLICE_CHARS, type ChatMessage } from './tokenizer/index.ts';
import type { Steps } from './tokenizer/steps.ts';
import { TokenVocabulary, UnsupportedVocabularyError, type GrammarConstraint } from './sampling/grammar/constraint.ts';
import type { Grammar } from './sampling/grammar/grammar.ts';
import { GrammarCache, type GrammarSpec } from './sampling/grammar/specs.ts';

/** A prompt before tokenization: a chat (in the model's chat format) or raw text (BOS + text). */
export type PromptSpec =
  | { kind: 'chat'; messages: ChatMessage[]; condition?: string }
  | { kind: 'raw'; text: string };

export class ContextLengthError extends RangeError {
  constructor(
    readonly promptTokens: number,
    readonly maxTokens: number | null,
    readonly contextLength: number,
    /** True when promptTokens is a lower bound (the prompt was refused before it was tokenized). */
    readonly atLeast = false,
  ) {
    const tokens = atLeast ? `at least ${promptTokens} tokens` : `${promptTokens} tokens`;
    super(
      maxTokens === null
        ? `the prompt has ${tokens}, but the context holds ${contextLength}: shorten the prompt`
        : `the prompt (${tokens}) plus max_tokens (${maxTokens}) is ${atLeast ? 'at least ' : ''}${promptTokens + maxTokens} tokens, ` +
            `more than the context length ${contextLength}: shorten the prompt or lower max_tokens`,
    );
    this.name = 'ContextLengthError';
  }
}

/**
 * Prompt building and the context check, from the tokenizer and config.json
 * alone (no GPU, no weights): a CLI can refuse a prompt that does not fit
 * before spending half a minute loading a 7B model.
 */
/** What compiles a spec elsewhere (src/sampling/grammar/compile_worker.ts's GrammarCompiler). */
export interface GrammarCompilerLike {
  compile(spec: GrammarSpec): Promise<Grammar>;
}

export class Prompts {
  /** Compiled grammars by spec, and every token's bytes: built on first use. */
  private grammars: GrammarCache | undefined;
  private compiler: GrammarCompilerLike | undefined;
  private bytesTable: (Uint8Array | null)[] | undefined;

  private constructor(
    readonly tokenizer: OpenChatTokenizer,
    readonly contextLength: number,
  ) {}

  static async load(modelDir: string, contextLength?: number, files?: ModelSource): Promise<Prompts> {
    const config = await loadConfig(modelDir, files);
    const tokenizer = await OpenChatTokenizer.load(modelDir, files);
    if (tokenizer.vocabSize > config.vocab_size) {
      throw new Error(
        `${modelDir}: the tokenizer has ${tokenizer.vocabSize} tokens but the model's vocab_size is ${config.vocab_size}; ` +
          'they belong to different models',
      );
    }
    return new Prompts(tokenizer, contextLengthFor(config, contextLength));
  }

  /** A chat as OpenChat's server builds it: role prefixes and end-of-turn as special tokens, content as plain text. */
  encodeChat(messages: ChatMessage[], condition?: string): number[] {
    return this.tokenizer.encodeChat(messages, { condition, addGenerationPrompt: true });
  }

  /** Raw text, no template: BOS then the text (special-token strings are plain text). */
  encodeRaw(text: string): number[] {
    return this.tokenizer.encode(text, { addBos: true });
  }

  /**
   * A structured-output constraint over this vocabulary (a JSON schema, regex, choice, GBNF
   * grammar or tool calls), compiled once per spec (by the compiler set with compileGrammarsWith,
   * if any) and cached. Rejects with
   * SchemaError, RegexError or GrammarError for what it cannot enforce.
   */
  grammar(spec: GrammarSpec): Promise<GrammarConstraint> {
    if (!this.grammars) {
      let vocab: TokenVocabulary | undefined;
      this.grammars = new GrammarCache(() => (vocab ??= new TokenVocabulary(this.tokenBytes())), this.tokenizer.stopIds, 16, this.compiler);
    }
    return this.grammars.getAsync(spec);
  }

  /**
   * Compiles grammars with `compiler` from now on (the server's worker thread, so no compile runs
   * on its event loop); undefined: on the calling thread, as the CLI and the tab do. The cache
   * starts over.
   */
  compileGrammarsWith(compiler: GrammarCompilerLike | undefined): void {
    this.compiler = compiler;
    this.grammars = undefined;
  }

  /**
   * Each token's text as UTF-8 bytes (null for special tokens), built once: see
   * OpenChatTokenizer.tokenBytes. Throws UnsupportedVocabularyError for a vocabulary that is not
   * SentencePiece's (a grammar cannot know what its tokens write).
   */
  tokenBytes(): (Uint8Array | null)[] {
    if (!this.tokenizer.sentencePieceDecoder) {
      throw new UnsupportedVocabularyError(`structured output (JSON mode, regex, grammars, tools) needs a SentencePiece vocabulary ("\u2581" spaces, <0xNN> bytes); ${this.tokenizer.source} is not one`);
    }
    return (this.bytesTable ??= this.tokenizer.tokenBytes());
  }

  /** A token's text as UTF-8 bytes for display (log-probabilities); a special token's is its name. */
  tokenDisplayBytes(id: number): Uint8Array {
    const encoder = new TextEncoder();
    if (!this.tokenizer.sentencePieceDecoder) return encoder.encode(this.tokenizer.decode([id])); // the decoder's own text
    return this.tokenBytes()[id] ?? encoder.encode(this.tokenizer.idToToken(id) ?? '');
  }

  /** Throws ContextLengthError unless prompt + max_tokens fits the context. */
  checkContext(promptTokens: number, maxTokens: number | null, atLeast = false): void {
    if (promptTokens >= this.contextLength || (maxTokens !== null && promptTokens + maxTokens > this.contextLength)) {
      throw new ContextLengthError(promptTokens, maxTokens, this.contextLength, atLeast);
    }
  }

  /**
   * The prompt's ids, if it fits the context with `maxTokens`; otherwise ContextLengthError.
   * A long prompt (over SLICE_CHARS characters) whose length alone shows that it cannot fit
   * (OpenChatTokenizer.minChatTokens) is refused before it is tokenized, so an oversized
   * prompt costs nothing.
   */
  fit(spec: PromptSpec, maxTokens: number | null): number[] {
    return this.tokenizer.finish(this.fitSteps(spec, maxTokens));
  }

  /** `fit`, tokenizing in a worker thread so the event loop goes on (the server), until `signal` aborts. */
  fitAsync(spec: PromptSpec, maxTokens: number | null, signal?: AbortSignal): Promise<number[]> {
    return this.tokenizer.finishAsync(this.fitSteps(spec, maxTokens), signal);
  }

  private *fitSteps(spec: PromptSpec, maxTokens: number | null): Steps<number[]> {
    // A short prompt costs less to tokenize than a refusal that can only say "at least N tokens".
    const chars = spec.kind === 'chat' ? spec.messages.reduce((sum, m) => sum + m.content.length, 0) : spec.text.length;
    if (chars > SLICE_CHARS) {
      const bound =
        spec.kind === 'chat' ? this.tokenizer.minChatTokens(spec.messages) : this.tokenizer.minTokens(spec.text, { addBos: true });
      this.checkContext(bound, maxTokens, true);
    }
    const ids =
      spec.kind === 'chat'
        ? yield* this.tokenizer.encodeChatSteps(spec.messages, { condition: spec.condition, addGenerationPrompt: true })
        : yield* this.tokenizer.encodeSteps(spec.text, { addBos: true });
    this.checkContext(ids.length, maxTokens);
    return ids;
  }
}
