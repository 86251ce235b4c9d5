/**
 * OpenAI's endpoints: POST /v1/chat/completions and POST /v1/completions, one writer for both
 * (an OpenAiShape is what differs between their answers), and GET /v1/models, /v1/models/{name}.
 * server.ts has checked the method and Content-Type by the time a handler runs.
 */
import { randomUUID } from 'node:crypto';
import type { FinishReason, TokenLogprobs } from '../../generator.ts';
import { ApiError } from '../errors.ts';
import type { Exchange, ServerParts } from '../exchange.ts';
import { HeldText, type ChoiceResult, type ReplyFormat } from '../generation.ts';
import { sendJson } from '../http.ts';
import { chatLogprobs, legacyLogprobs, type TokenTexts } from '../logprobs.ts';
import { parseChatRequest, parseCompletionRequest, type GenerationJob } from '../requests.ts';
import { parseToolCalls, type ToolCall } from '../structured.ts';

/** POST /v1/chat/completions */
export async function chatCompletions(server: ServerParts, ex: Exchange): Promise<void> {
  const job = await parseChatRequest(await ex.readJson(), server.names, server.generator);
  await server.generations.reply(job, ex, () => openAiFormat(CHAT_COMPLETION, job, server));
}

/** POST /v1/completions */
export async function completions(server: ServerParts, ex: Exchange): Promise<void> {
  const job = await parseCompletionRequest(await ex.readJson(), server.names, server.generator);
  await server.generations.reply(job, ex, () => openAiFormat(TEXT_COMPLETION, job, server));
}

/** GET /v1/models: every accepted name, the served one first, then the LoRA adapters. */
export function listModels(server: ServerParts, ex: Exchange): void {
  const { names } = server;
  sendJson(ex.res, 200, { object: 'list', data: [...names.all, ...names.adapters].map((id) => modelObject(server, id)) });
}

/** GET /v1/models/{name}, `id` the name as decoded from the path. */
export function getModel(server: ServerParts, ex: Exchange, id: string): void {
  if (!server.names.accepts(id)) {
    throw new ApiError(404, `The model '${id.slice(0, 80)}' does not exist`, 'invalid_request_error', 'model', 'model_not_found');
  }
  sendJson(ex.res, 200, modelObject(server, id));
}

function modelObject(server: ServerParts, id: string): object {
  const { names } = server;
  const base = { id, object: 'model', created: server.created, owned_by: 'openchat-webgpu', max_model_len: server.generator.contextLength };
  // An adapter is listed as vLLM lists one, with its base model as `parent`; `root` is its
  // name where vLLM gives its path (a server does not show its file system).
  const adapter = names.adapterFor(id);
  return adapter === undefined ? { ...base, root: names.served } : { ...base, id: adapter, root: adapter, parent: names.served };
}

// ---------------------------------------------------------------------------
// One writer, two shapes

/** What a stream has sent of a choice's tokens so far (the completions layout's text offsets). */
interface LogprobsSent {
  chars: number;
  tokens: number;
}

/**
 * What differs between the two endpoints' answers; `openAiFormat` writes both, streamed or
 * not, from this. `logprobs` is the shape's layout of some tokens' log-probabilities (null
 * when not asked for); `call` a tool call the answer made (chat only: completions have no tools).
 */
interface OpenAiShape {
  idPrefix: string;
  object: string;
  chunkObject: string;
  /** A finished choice in a non-streamed answer, without its index. */
  choice(r: ChoiceResult, logprobs: object | null, calls: ToolCall[] | null): object;
  /** A chunk's choice for the start of a choice (chat: the role), or null for none. */
  startChoice(index: number): object | null;
  textChoice(index: number, text: string, logprobs: object | null): object;
  /** The answer's complete tool calls, streamed as one delta (chat). */
  toolCallChoice(index: number, calls: ToolCall[], logprobs: object | null): object;
  finishChoice(index: number, finishReason: FinishReason | 'tool_calls', logprobs: object | null): object;
  /** These tokens' log-probabilities in the shape's layout; `sent` is updated for the next chunk. */
  logprobs(texts: TokenTexts, tokens: TokenLogprobs[], sent: LogprobsSent): object;
}

const CHAT_COMPLETION: OpenAiShape = {
  idPrefix: 'chatcmpl-',
  object: 'chat.completion',
  chunkObject: 'chat.completion.chunk',
  choice: (r, logprobs, calls) => ({
    message: calls ? { role: 'assistant', content: null, tool_calls: calls.map(openAiToolCall) } : { role: 'assistant', content: r.text },
    logprobs,
    finish_reason: calls ? 'tool_calls' : r.finishReason,
    seed: r.seed,
  }),
  startChoice: (index) => ({ index, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null }),
  textChoice: (index, content, logprobs) => ({ index, delta: { content }, logprobs, finish_reason: null }),
  toolCallChoice: (index, calls, logprobs) => ({ index, delta: { tool_calls: calls.map((c, k) => ({ index: k, ...openAiToolCall(c) })) }, logprobs, finish_reason: null }),
  finishChoice: (index, finishReason, logprobs) => ({ index, delta: {}, logprobs, finish_reason: finishReason }),
  logprobs: (texts, tokens) => ({ content: chatLogprobs(texts, tokens) }),
};

const TEXT_COMPLETION: OpenAiShape = {
  idPrefix: 'cmpl-',
  object: 'text_completion',
  chunkObject: 'text_completion',
  choice: (r, logprobs) => ({ text: r.text, logprobs, finish_reason: r.finishReason, seed: r.seed }),
  startChoice: () => null,
  textChoice: (index, text, logprobs) => ({ index, text, logprobs, finish_reason: null }),
  toolCallChoice: () => {
    throw new Error('a text completion has no tool calls'); // requests.ts refuses tools there
  },
  finishChoice: (index, finishReason, logprobs) => ({ index, text: '', logprobs, finish_reason: finishReason }),
  logprobs: (texts, tokens, sent) => {
    const out = legacyLogprobs(texts, tokens, sent.chars, sent.tokens === 0);
    sent.chars += out.tokens.join('').length;
    sent.tokens += tokens.length;
    return out;
  },
};

/** The job's answer in `shape`: one completion object, or its chunks as server-sent events. */
function openAiFormat(shape: OpenAiShape, job: GenerationJob, server: ServerParts): ReplyFormat {
  const id = `${shape.idPrefix}${randomUUID().replaceAll('-', '')}`;
  const created = Math.floor(Date.now() / 1000);
  const model = job.model ?? server.names.served;
  const texts: TokenTexts = server.generator;
  return {
    json: (results, usage) => ({
      id,
      object: shape.object,
      created,
      model,
      choices: results.map((r, index) => {
        const calls = job.tools ? parseToolCalls(r.text, job.tools) : null;
        const logprobs = job.options.logprobs ? shape.logprobs(texts, r.logprobs, { chars: 0, tokens: 0 }) : null;
        return { index, ...shape.choice(r, logprobs, calls) };
      }),
      usage,
    }),

    stream: (sse) => {
      const chunk = (choices: object[], extra: object = {}) => ({
        id,
        object: shape.chunkObject,
        created,
        model,
        choices,
        ...(job.includeUsage ? { usage: null } : {}),
        ...extra,
      });
      let sent: LogprobsSent = { chars: 0, tokens: 0 };
      const lp = (tokens: TokenLogprobs[]) => (job.options.logprobs && tokens.length ? shape.logprobs(texts, tokens, sent) : null);
      const sendText = (index: number, text: string, tokens: TokenLogprobs[]) => sse.send(chunk([shape.textChoice(index, text, lp(tokens))]));
      // Made by onStart, which comes before each choice's text.
      let held: HeldText;
      return {
        onStart: (index) => {
          sent = { chars: 0, tokens: 0 };
          held = new HeldText(job.tools, (text, tokens) => sendText(index, text, tokens));
          const start = shape.startChoice(index);
          if (start !== null) sse.send(chunk([start]));
        },
        onText: (_index, text, tokens) => held.push(text, tokens),
        onDone: (index, r) => {
          const called = held.end(r);
          if (called) sse.send(chunk([shape.toolCallChoice(index, called.calls, lp([...called.tokens, ...r.tailLogprobs]))]));
          sse.send(chunk([shape.finishChoice(index, called ? 'tool_calls' : r.finishReason, called ? null : lp(r.tailLogprobs))]));
        },
        end: (_results, usage) => {
          if (job.includeUsage) sse.send(chunk([], { usage }));
        },
      };
    },
  };
}

/** OpenAI's tool call object. */
function openAiToolCall(call: ToolCall): object {
  return { id: call.id, type: 'function', function: { name: call.name, arguments: call.arguments } };
}
