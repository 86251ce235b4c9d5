/**
 * Log-probabilities in the two layouts the OpenAI clients read. The values are the model's own
 * log_softmax at each step (src/sampling/logprobs.ts), before temperature and penalties.
 *
 *   chat:         {content: [{token, logprob, bytes, top_logprobs: [{token, logprob, bytes}]}]}
 *   completions:  {tokens, token_logprobs, top_logprobs: [{token: logprob}], text_offset}
 *
 * A token's `token` is its text (SentencePiece's "▁" as a space; a byte-fallback token that is
 * part of a longer UTF-8 character shows as U+FFFD, and `bytes` has the exact bytes, as OpenAI
 * does); a special token shows as its name ("<|end_of_turn|>") with that name's bytes.
 */
import type { TokenLogprobs } from '../generator.ts';

/** Token texts and bytes for display (the Generator). */
export interface TokenTexts {
  tokenDisplayBytes(id: number): Uint8Array;
}

export interface ChatLogprob {
  token: string;
  logprob: number;
  bytes: number[];
  top_logprobs: Array<{ token: string; logprob: number; bytes: number[] }>;
}

const decoder = new TextDecoder();

function display(texts: TokenTexts, id: number): { token: string; bytes: number[] } {
  const b = texts.tokenDisplayBytes(id);
  return { token: decoder.decode(b), bytes: [...b] };
}

/** Chat layout: one entry per token. */
export function chatLogprobs(texts: TokenTexts, tokens: TokenLogprobs[]): ChatLogprob[] {
  return tokens.map((t) => ({
    ...display(texts, t.id),
    logprob: t.logprob,
    top_logprobs: t.top.map((a) => ({ ...display(texts, a.id), logprob: a.logprob })),
  }));
}

export interface LegacyLogprobs {
  tokens: string[];
  token_logprobs: number[];
  top_logprobs: Array<Record<string, number>>;
  text_offset: number[];
}

/**
 * Completions layout. `offset` is where these tokens' text starts in the completion (for a
 * stream, what was sent before); `first` drops the leading space of the completion's very first
 * token, as the decoder does, so the tokens concatenate to the text.
 */
export function legacyLogprobs(texts: TokenTexts, tokens: TokenLogprobs[], offset: number, first: boolean): LegacyLogprobs {
  const out: LegacyLogprobs = { tokens: [], token_logprobs: [], top_logprobs: [], text_offset: [] };
  let at = offset;
  tokens.forEach((t, i) => {
    let { token } = display(texts, t.id);
    if (first && i === 0 && token.startsWith(' ')) token = token.slice(1);
    out.tokens.push(token);
    out.token_logprobs.push(t.logprob);
    const top: Record<string, number> = {};
    for (const a of t.top) {
      const name = display(texts, a.id).token;
      if (!(name in top)) top[name] = a.logprob; // two ids with the same text: the likelier one
    }
    out.top_logprobs.push(top);
    out.text_offset.push(at);
    at += token.length;
  });
  return out;
}
