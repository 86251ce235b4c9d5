/**
 * Streaming detokenization: turn generated ids into text one id at a time, such that the pieces
 * concatenate to exactly the full `decode(allIds)`.
 *
 * Decoding one token on its own is wrong in two ways:
 *  - a character outside the vocabulary arrives as several byte tokens (<0xE2><0x82><0xAC> = "€");
 *    each alone decodes to U+FFFD, so emitting eagerly would print garbage, or half a character;
 *  - the decoder strips the leading "▁" only of the first token of the text it is given, so
 *    decoding "▁world" alone gives "world" where the full text has " world".
 *
 * The fix (the one Hugging Face's text-generation-inference uses) is to decode a small window
 * twice: the tokens since `prefixOffset` with and without the tokens not yet emitted (from
 * `readOffset` on). Both decodes see the same first token, so the leading-space rule affects both
 * equally and their difference is exactly the new text. If the new text ends in U+FFFD, a byte
 * sequence is still incomplete: emit nothing and wait for more bytes. Each step costs O(window),
 * not O(everything generated).
 *
 * This relies on the decoder being prefix-stable (decoding more tokens only appends text), true of
 * the SentencePiece-style decoders (Replace, ByteFallback, Fuse, Strip, Metaspace) and ByteLevel.
 */
export interface StreamDecoder {
  /** Adds one id; returns the text it completes (often '', e.g. mid-way through a UTF-8 character). */
  push(id: number): string;
  /** Returns whatever is still held back (an incomplete byte sequence decodes to U+FFFD here). */
  flush(): string;
}

export class WindowedStreamDecoder implements StreamDecoder {
  private readonly ids: number[] = [];
  /** Start of the window: the first token of the text emitted last. */
  private prefixOffset = 0;
  /** Tokens before this index have been emitted. */
  private readOffset = 0;

  /** `decode` must be the tokenizer's full decode (same options for every call). */
  constructor(private readonly decode: (ids: number[]) => string) {}

  push(id: number): string {
    this.ids.push(id);
    const { prefixText, newText } = this.window();
    if (newText.length > prefixText.length && !newText.endsWith('\uFFFD')) {
      return this.advance(newText.slice(prefixText.length));
    }
    return '';
  }

  flush(): string {
    if (this.readOffset === this.ids.length) return '';
    const { prefixText, newText } = this.window();
    return this.advance(newText.slice(prefixText.length));
  }

  private window(): { prefixText: string; newText: string } {
    const prefixText = this.decode(this.ids.slice(this.prefixOffset, this.readOffset));
    const newText = this.decode(this.ids.slice(this.prefixOffset));
    if (!newText.startsWith(prefixText)) {
      // A decoder that rewrites earlier text when more arrives cannot be streamed exactly.
      throw new Error('stream decoder: the tokenizer decoder is not prefix-stable');
    }
    return { prefixText, newText };
  }

  private advance(delta: string): string {
    this.prefixOffset = this.readOffset;
    this.readOffset = this.ids.length;
    return delta;
  }
}
