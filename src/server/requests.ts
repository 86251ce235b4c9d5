/**
 * Request bodies -> generation jobs. Everything a client sends is checked here
 * (types, ranges, model name, template choice) and turned into a prompt (not yet
 * tokenized: the server tokenizes it in a worker thread, after a cheap length check) plus
 * validated sampling parameters and generation options (a JSON-mode or tool-call grammar,
 * compiled here from the request's schema; log-probabilities), or rejected with an ApiError that
 * names the field. Nothing here touches the model, so a bad request costs no GPU time.
 */
import type { GenerateOptions, PromptSpec } from '../generator.ts';
import {
  DEFAULT_SAMPLING,
  SAMPLING_RANGES,
  SamplingParamError,
  validateSamplingParams,
  type SamplingParams,
  type SamplingRanges,
} from '../sampling/params.ts';
import type { ConstraintFactory } from '../sampling/grammar/constraint.ts';
import type { ChatMessage } from '../tokenizer/tokenizer.ts';
import { ApiError, badRequest, wrongType } from './errors.ts';
import type { ModelNames } from './models.ts';
import { knownCondition } from '../tokenizer/index.ts';
import {
  checkAssistantToolCalls,
  checkGuided,
  checkResponseFormat,
  checkToolChoice,
  checkTools,
  renderToolCalls,
  renderToolResult,
  toolConstraint,
  toolsSystemText,
  type GrammarSource,
  type ToolPlan,
} from './structured.ts';

/** Most alternatives per token that `top_logprobs` (chat) or `logprobs` (completions) may ask for. */
export const MAX_TOP_LOGPROBS = 20;

export interface GenerationJob {
  /** The model name as the client gave it (echoed back in responses); null for Workers AI bodies. */
  model: string | null;
  prompt: PromptSpec;
  params: SamplingParams;
  stream: boolean;
  /** stream_options.include_usage: end the stream with a usage chunk. */
  includeUsage: boolean;
  /** Constraint (response_format, tools) and log-probabilities, for Generator.generate. */
  options: GenerateOptions;
  /** Tools on offer (tool_choice not "none"): the answer may be a call. */
  tools: ToolPlan | null;
}

/** Longest prompt or message text accepted, in characters (Workers AI's documented prompt limit). */
export const MAX_TEXT_CHARS = 131072;
export const MAX_MESSAGES = 1024;


// ---------------------------------------------------------------------------
// OpenAI: POST /v1/chat/completions and POST /v1/completions

export async function parseChatRequest(body: Record<string, unknown>, names: ModelNames, grammars: GrammarSource): Promise<GenerationJob> {
  const model = checkModel(body, names);
  rejectUnsupported(body);
  const messages = checkMessages(body['messages']);
  const condition = checkCondition(body['condition']);
  optionalString(body, 'user');
  const stream = optionalBoolean(body, 'stream') ?? false;
  const params = samplingParams(body);
  const { options, tools } = await structuredOutput(body, messages, grammars);
  const logprobs = checkChatLogprobs(body);
  if (logprobs) options.logprobs = logprobs;
  options.adapter = names.adapterFor(model);
  return {
    model,
    prompt: { kind: 'chat', messages, condition },
    params,
    stream,
    includeUsage: checkStreamOptions(body['stream_options']) && stream,
    options,
    tools,
  };
}

/**
 * response_format and tools/tool_choice -> the constraint to decode under; a tool plan also adds
 * the functions' description to the system segment (`messages` is extended in place).
 */
async function structuredOutput(
  body: Record<string, unknown>,
  messages: ChatMessage[],
  grammars: GrammarSource,
  workersAi = false,
): Promise<{ options: GenerateOptions; tools: ToolPlan | null }> {
  const format = await structuredFormat(body, grammars, workersAi);
  const list = checkTools(body['tools']);
  const choice = checkToolChoice(body['tool_choice'], list);
  const parallel = optionalBoolean(body, 'parallel_tool_calls') ?? true;
  const tools = list && choice ? { tools: list, choice, parallel } : null;
  if (tools && format) {
    throw badRequest(`give ${format.param} or tools, not both (a tool call is structured already)`, format.param);
  }
  if (tools) {
    messages.push({ role: 'system', content: toolsSystemText(tools) });
    return { options: { constraint: await toolConstraint(tools, grammars) }, tools };
  }
  return { options: format ? { constraint: format.constraint } : {}, tools: null };
}

/** response_format or one of the guided-decoding fields (not both). */
async function structuredFormat(body: Record<string, unknown>, grammars: GrammarSource, workersAi = false): Promise<{ constraint: ConstraintFactory; param: string } | null> {
  const format = await checkResponseFormat(body['response_format'], grammars, workersAi);
  const guided = await checkGuided(body, grammars);
  if (format && guided) throw badRequest(`give response_format or ${guided.param}, not both`, guided.param);
  return guided ?? (format ? { constraint: format, param: 'response_format' } : null);
}

/** Chat: `logprobs` (a boolean) and `top_logprobs` (0-20, only with logprobs). */
function checkChatLogprobs(body: Record<string, unknown>): { top: number } | null {
  const on = optionalBoolean(body, 'logprobs') ?? false;
  const top = body['top_logprobs'];
  if (top === undefined || top === null) return on ? { top: 0 } : null;
  if (!(typeof top === 'number' && Number.isInteger(top) && top >= 0 && top <= MAX_TOP_LOGPROBS)) {
    throw badRequest(`top_logprobs must be an integer in [0, ${MAX_TOP_LOGPROBS}]; got ${JSON.stringify(top)}`, 'top_logprobs');
  }
  if (!on) throw badRequest('top_logprobs needs logprobs: true', 'top_logprobs');
  return { top };
}

/** Completions: the legacy `logprobs` (an integer 0-20: how many alternatives per token). */
function checkCompletionLogprobs(body: Record<string, unknown>): { top: number } | null {
  const n = body['logprobs'];
  if (n === undefined || n === null || n === false) return null;
  if (!(typeof n === 'number' && Number.isInteger(n) && n >= 0 && n <= MAX_TOP_LOGPROBS)) {
    throw badRequest(`logprobs must be an integer in [0, ${MAX_TOP_LOGPROBS}] (alternatives per token); got ${JSON.stringify(n)}`, 'logprobs');
  }
  return { top: n };
}

export async function parseCompletionRequest(body: Record<string, unknown>, names: ModelNames, grammars: GrammarSource): Promise<GenerationJob> {
  const model = checkModel(body, names);
  rejectUnsupported(body);
  optionalString(body, 'user');
  const stream = optionalBoolean(body, 'stream') ?? false;
  for (const param of ['tools', 'tool_choice']) {
    if (body[param] !== undefined && body[param] !== null) {
      throw badRequest(`${param} belongs to /v1/chat/completions; a text completion has no tools`, param, 'unsupported_parameter');
    }
  }
  const format = await structuredFormat(body, grammars);
  const logprobs = checkCompletionLogprobs(body);
  return {
    model,
    prompt: { kind: 'raw', text: checkPrompt(body['prompt']) },
    params: samplingParams(body),
    stream,
    includeUsage: checkStreamOptions(body['stream_options']) && stream,
    options: { ...(format ? { constraint: format.constraint } : {}), ...(logprobs ? { logprobs } : {}), adapter: names.adapterFor(model) },
    tools: null,
  };
}

function checkModel(body: Record<string, unknown>, names: ModelNames): string {
  const model = body['model'];
  if (model === undefined || model === null) {
    throw badRequest('you must provide a model parameter', 'model', 'missing_required_parameter');
  }
  if (typeof model !== 'string') throw wrongType('model', 'a string', model);
  if (!names.accepts(model)) {
    const shown = model.length > 80 ? `${model.slice(0, 80)}...` : model;
    throw new ApiError(
      404,
      `The model '${shown}' does not exist; this server serves '${names.served}' (also accepted: ${names.all.slice(1).join(', ')})`,
      'invalid_request_error',
      'model',
      'model_not_found',
    );
  }
  return model;
}

/**
 * OpenAI parameters this server cannot honour. Silently ignoring them would hand
 * the client something other than what it asked for, so a non-default value is
 * a 400 (their defaults are accepted, so clients that always send them work).
 */
function rejectUnsupported(body: Record<string, unknown>): void {
  const unsupported = (param: string, isDefault: (v: unknown) => boolean) => {
    const v = body[param];
    if (v !== undefined && v !== null && !isDefault(v)) {
      throw badRequest(`${param} is not supported by this server`, param, 'unsupported_parameter');
    }
  };
  const emptyArray = (v: unknown) => Array.isArray(v) && v.length === 0;
  // An array is an object to typeof: `logit_bias: []` is refused like any other non-map value.
  const emptyObject = (v: unknown) => typeof v === 'object' && v !== null && !Array.isArray(v) && Object.keys(v).length === 0;
  // OpenAI's deprecated names for tools and tool_choice.
  unsupported('functions', emptyArray);
  unsupported('function_call', (v) => v === 'none');
  unsupported('logit_bias', emptyObject);
  unsupported('echo', (v) => v === false);
  unsupported('suffix', (v) => v === '');
  unsupported('best_of', (v) => v === 1);
}

function checkMessages(value: unknown): ChatMessage[] {
  if (value === undefined || value === null) throw badRequest('messages is required', 'messages', 'missing_required_parameter');
  if (!Array.isArray(value)) throw wrongType('messages', 'an array of messages', value);
  if (value.length === 0) throw badRequest('messages must not be empty', 'messages', 'empty_array');
  if (value.length > MAX_MESSAGES) throw badRequest(`messages may hold at most ${MAX_MESSAGES} messages; got ${value.length}`, 'messages');
  // Function names of earlier calls by id, so a tool result can say which function it answers.
  const callNames = new Map<string, string>();
  return value.map((m: unknown, i): ChatMessage => {
    const where = `messages[${i}]`;
    if (typeof m !== 'object' || m === null || Array.isArray(m)) throw wrongType(where, 'an object', m);
    const { role, content, tool_calls: toolCalls, tool_call_id: callId } = m as Record<string, unknown>;
    if (typeof role !== 'string') throw wrongType(`${where}.role`, 'a string', role);
    // OpenAI's newer name for the system role.
    const mapped = role === 'developer' ? 'system' : role;
    if (mapped === 'tool') {
      if (typeof callId !== 'string') throw wrongType(`${where}.tool_call_id`, 'a string', callId);
      return renderToolResult(messageText(content, `${where}.content`), callNames.get(callId), callId);
    }
    if (mapped === 'assistant' && toolCalls !== undefined && toolCalls !== null) {
      const calls = checkAssistantToolCalls(toolCalls, `${where}.tool_calls`) ?? [];
      for (const c of calls) if (c.id) callNames.set(c.id, c.name);
      const text = content === undefined || content === null ? '' : messageText(content, `${where}.content`);
      return { role: 'assistant', content: renderToolCalls(text, calls) };
    }
    if (mapped !== 'system' && mapped !== 'user' && mapped !== 'assistant') {
      throw badRequest(`${where}.role must be 'system', 'user', 'assistant' or 'tool'; got '${role.slice(0, 40)}'`, `${where}.role`);
    }
    return { role: mapped, content: messageText(content, `${where}.content`) };
  });
}

/** A message's content: a string, or OpenAI's array of content parts where every part is text. */
function messageText(content: unknown, where: string): string {
  let text: string;
  if (typeof content === 'string') {
    text = content;
  } else if (Array.isArray(content)) {
    text = content
      .map((part: unknown, j) => {
        const p = part as { type?: unknown; text?: unknown } | null;
        if (typeof p !== 'object' || p === null || p.type !== 'text' || typeof p.text !== 'string') {
          throw badRequest(`${where}[${j}] must be a text part ({"type": "text", "text": "..."}); this model reads text only`, where);
        }
        return p.text;
      })
      .join('');
  } else {
    throw wrongType(where, 'a string or an array of text parts', content);
  }
  if (text.length > MAX_TEXT_CHARS) throw badRequest(`${where} is longer than ${MAX_TEXT_CHARS} characters`, where);
  return text;
}

function checkCondition(value: unknown): string | undefined {
  if (value === undefined || value === null || value === '') return undefined;
  if (typeof value !== 'string') throw wrongType('condition', 'a string', value);
  // OpenChat's conditions, case-insensitively: "GPT4 Correct" (the default) or "Code".
  const c = knownCondition(value);
  if (c === null) throw badRequest(`condition must be "GPT4 Correct" (default) or "Code"; got "${value.slice(0, 40)}"`, 'condition');
  return c;
}

function checkPrompt(value: unknown): string {
  if (value === undefined || value === null) throw badRequest('prompt is required', 'prompt', 'missing_required_parameter');
  // OpenAI also takes a list of prompts; one prompt per request is supported here.
  const prompt = Array.isArray(value) && value.length === 1 ? value[0] : value;
  if (typeof prompt !== 'string') throw wrongType('prompt', 'a string (one prompt per request)', value);
  if (prompt.length > MAX_TEXT_CHARS) throw badRequest(`prompt is longer than ${MAX_TEXT_CHARS} characters`, 'prompt');
  return prompt;
}

function checkStreamOptions(value: unknown): boolean {
  if (value === undefined || value === null) return false;
  if (typeof value !== 'object' || Array.isArray(value)) throw wrongType('stream_options', 'an object', value);
  const include = (value as { include_usage?: unknown }).include_usage;
  if (include === undefined || include === null) return false;
  if (typeof include !== 'boolean') throw wrongType('stream_options.include_usage', 'a boolean', include);
  return include;
}

/** OpenAI's sampling fields; `max_completion_tokens` is the newer name for max_tokens. */
function samplingParams(body: Record<string, unknown>, defaults: SamplingParams = DEFAULT_SAMPLING): SamplingParams {
  const input = { ...body };
  const newer = body['max_completion_tokens'];
  if (newer !== undefined && newer !== null) {
    if (input['max_tokens'] !== undefined && input['max_tokens'] !== null && input['max_tokens'] !== newer) {
      throw badRequest('give max_tokens or max_completion_tokens, not both', 'max_completion_tokens');
    }
    input['max_tokens'] = newer;
  }
  try {
    return validateSamplingParams(input, defaults);
  } catch (err) {
    if (err instanceof SamplingParamError) throw badRequest(err.message, err.field);
    throw err;
  }
}

// ---------------------------------------------------------------------------
// Cloudflare Workers AI: POST /ai/run/<model>, text-generation schema

/** Workers AI's defaults for text generation. */
export const WORKERS_AI_DEFAULTS: SamplingParams = Object.freeze({ ...DEFAULT_SAMPLING, max_tokens: 256, temperature: 0.6 });

/**
 * Workers AI's own ranges for @cf/openchat/openchat-3.5-0106 (its published schema): temperature
 * 0-5, top_p 0.001-1, top_k 1-50, repetition_penalty 0-2, seed 1-9999999999. repetition_penalty
 * starts at 0.01 here, as on /v1: the penalty divides positive logits by it, and below that the
 * logits overflow (at 0, to infinity).
 */
export const WORKERS_AI_RANGES: Readonly<SamplingRanges> = Object.freeze({
  ...SAMPLING_RANGES,
  temperature: { lo: 0, hi: 5 },
  top_p: { lo: 0.001, hi: 1 },
  top_k: { lo: 1, hi: 50 },
  repetition_penalty: { lo: 0.01, hi: 2 },
  seed: { lo: 1, hi: 9999999999 },
});

/** The sampling fields of the Workers AI schema (no n, stop or min_p there). */
const WORKERS_AI_SAMPLING = [
  'max_tokens',
  'temperature',
  'top_p',
  'top_k',
  'seed',
  'repetition_penalty',
  'frequency_penalty',
  'presence_penalty',
] as const;

export async function parseWorkersAiRequest(body: Record<string, unknown>, grammars: GrammarSource, names: ModelNames): Promise<GenerationJob> {
  const hasPrompt = body['prompt'] !== undefined && body['prompt'] !== null;
  const hasMessages = body['messages'] !== undefined && body['messages'] !== null;
  if (hasPrompt === hasMessages) throw badRequest('give exactly one of prompt or messages', hasPrompt ? 'messages' : 'prompt');
  const raw = optionalBoolean(body, 'raw') ?? false;
  const stream = optionalBoolean(body, 'stream') ?? false;
  const adapter = checkLora(body['lora'], names);
  const input: Record<string, unknown> = {};
  for (const key of WORKERS_AI_SAMPLING) input[key] = body[key];
  let params: SamplingParams;
  try {
    params = validateSamplingParams(input, WORKERS_AI_DEFAULTS, WORKERS_AI_RANGES);
  } catch (err) {
    if (err instanceof SamplingParamError) throw badRequest(err.message, err.field);
    throw err;
  }

  let promptSpec: PromptSpec;
  let structured: { options: GenerateOptions; tools: ToolPlan | null };
  if (hasPrompt) {
    const prompt = body['prompt'];
    if (typeof prompt !== 'string') throw wrongType('prompt', 'a string', prompt);
    if (prompt.length === 0) throw badRequest('prompt must not be empty', 'prompt');
    if (prompt.length > MAX_TEXT_CHARS) throw badRequest(`prompt is longer than ${MAX_TEXT_CHARS} characters`, 'prompt');
    if (raw && body['tools'] !== undefined && body['tools'] !== null) {
      throw badRequest('tools need the chat template; they cannot be used with raw: true', 'tools');
    }
    // Without `raw` a prompt is one user turn in the model's chat template, as Workers AI does.
    const messages: ChatMessage[] = [{ role: 'user', content: prompt }];
    structured = await structuredOutput(body, messages, grammars, true);
    promptSpec = raw ? { kind: 'raw', text: prompt } : { kind: 'chat', messages };
  } else {
    const messages = checkMessages(body['messages']);
    structured = await structuredOutput(body, messages, grammars, true);
    promptSpec = { kind: 'chat', messages };
  }
  structured.options.adapter = adapter;
  return { model: null, prompt: promptSpec, params, stream, includeUsage: false, ...structured };
}

/**
 * Workers AI's `lora`: the name of a LoRA adapter loaded beside the model (serve --lora
 * NAME=DIR). One that is not loaded is an error, never a silent answer from the base model.
 */
function checkLora(value: unknown, names: ModelNames): string | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'string') throw wrongType('lora', 'a string (the name of a LoRA adapter)', value);
  const adapter = names.adapterFor(value);
  if (adapter === undefined) {
    const loaded = names.adapters.length ? `loaded: ${names.adapters.join(', ')}` : 'this server loads none (openchat serve --lora NAME=DIR)';
    throw new ApiError(400, `lora: no LoRA adapter named "${value.slice(0, 80)}" is loaded; ${loaded}`, 'invalid_request_error', 'lora', 'lora_not_found');
  }
  return adapter;
}

// ---------------------------------------------------------------------------

function optionalBoolean(body: Record<string, unknown>, key: string): boolean | undefined {
  const v = body[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'boolean') throw wrongType(key, 'a boolean', v);
  return v;
}

function optionalString(body: Record<string, unknown>, key: string): string | undefined {
  const v = body[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string') throw wrongType(key, 'a string', v);
  return v;
}
