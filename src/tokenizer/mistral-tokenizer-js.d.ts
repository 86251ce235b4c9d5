// Types for the parts of `mistral-tokenizer-js` (plain JavaScript, no bundled types) that we use:
// the decoded Mistral vocabulary and merge table, and its own reference encoder/decoder.
declare module 'mistral-tokenizer-js' {
  interface MistralTokenizer {
    /** Token string by id (32000 entries): '<unk>', '<s>', '</s>', '<0x00>'..'<0xFF>', '▁▁', '▁t', ... */
    vocabById: string[];
    vocabByString: Map<string, number>;
    /** 'left right' -> priority; a lower priority merges first (insertion order is the merge rank order). */
    merges: Map<string, number>;
    /** Defaults: addBos = true, addPrecedingSpace = true (SentencePiece's dummy prefix). */
    encode(text: string, addBos?: boolean, addPrecedingSpace?: boolean, logPerformance?: boolean): number[];
    decode(ids: number[], addBos?: boolean, addPrecedingSpace?: boolean): string;
  }
  const mistralTokenizer: MistralTokenizer;
  export default mistralTokenizer;
}
