/** The tokenizer's public API: import from here. */
export {
  OpenChatTokenizer,
  SLICE_CHARS,
  DEFAULT_CONDITION,
  normalizeCondition,
  knownCondition,
  rolePrefix,
  type ChatMessage,
  type EncodeOptions,
  type EncodeChatOptions,
  type StreamDecoder,
} from './tokenizer.ts';
export { OPENCHAT_35_CHAT_TEMPLATE, END_OF_TURN, builtinCacheDir } from './openchat35.ts';
