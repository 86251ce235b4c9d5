/**
 * Structured output over HTTP: `response_format` (JSON mode), the guided-decoding fields of vLLM
 * and llama.cpp's server (a regex, a list of choices, a GBNF grammar, a JSON schema), and `tools`
 * (function calling).
 *
 * All become one constraint on the sampler (src/sampling/grammar): the answer is decoded under a
 * grammar, so it always parses and validates, whatever the weights. One request may ask for one
 * of them; several is a 400 naming the second.
 *
 * OpenChat 3.5 has no native tool format, so this module defines one (documented in docs/server.md):
 *   - the functions are described in the system segment, one JSON line each
 *     ({"name", "description", "parameters"}), followed by the calling convention: a call is an
 *     answer that is nothing but {"name": "<function>", "arguments": {...}}, several calls one
 *     per line;
 *   - an assistant message that made calls is rendered as those JSON objects, one per line;
 *   - a `tool` message (a function's result) is a user turn:
 *     "Result of <name> (call <tool_call_id>):\n<content>".
 * Calls are decoded under the grammar {"name": <one of the functions>, "arguments": <its
 * parameters' schema>} (one or, with parallel_tool_calls, several): for tool_choice "required" or
 * a named function from the first token, for "auto" as soon as the answer's first visible
 * character is `{` (otherwise it is free text). `strict: false` functions are held to their
 * schema all the same.
 */
import { randomUUID } from 'node:crypto';
import { TextOrGrammar, UnsupportedVocabularyError, type ConstraintFactory, type GrammarConstraint } from '../sampling/grammar/constraint.ts';
import { GrammarError } from '../sampling/grammar/grammar.ts';
import { RegexError } from '../sampling/grammar/regex.ts';
import { SchemaError } from '../sampling/grammar/schema.ts';
import type { GrammarSpec } from '../sampling/grammar/specs.ts';
import type { ChatMessage } from '../tokenizer/tokenizer.ts';
import { badRequest, wrongType } from './errors.ts';

/** What the parsers need to compile a grammar (the Generator, or its Prompts). */
export interface GrammarSource {
  /** Compiled off the event loop (a worker thread), cached by spec. */
  grammar(spec: GrammarSpec): Promise<GrammarConstraint>;
}

export interface ToolDef {
  name: string;
  description?: string;
  /** JSON schema of the arguments (an object schema); absent: no arguments. */
  parameters?: unknown;
}

export type ToolChoice = 'auto' | 'required' | { name: string };

/** The tools a request offers and how the answer is read back. */
export interface ToolPlan {
  tools: ToolDef[];
  choice: ToolChoice;
  /** parallel_tool_calls: one answer may make several calls (OpenAI's default). */
  parallel: boolean;
}

/** A function call read back from the model's answer. */
export interface ToolCall {
  id: string;
  name: string;
  /** The arguments as JSON text (OpenAI's `function.arguments`). */
  arguments: string;
}

const NAME = /^[a-zA-Z0-9_-]{1,64}$/;

// ---------------------------------------------------------------------------
// response_format

/**
 * OpenAI's `response_format`: {type: "text"} | {type: "json_object"} |
 * {type: "json_schema", json_schema: {name, schema, strict?, description?}}; llama.cpp's server
 * also takes {type: "json_object", schema} . Workers AI sends the schema itself as `json_schema`;
 * `workersAi` accepts that form as well as OpenAI's. Null: no constraint.
 */
export async function checkResponseFormat(value: unknown, grammars: GrammarSource, workersAi = false): Promise<ConstraintFactory | null> {
  const where = 'response_format';
  if (value === undefined || value === null) return null;
  if (typeof value !== 'object' || Array.isArray(value)) throw wrongType(where, 'an object', value);
  const { type, json_schema: js, schema: llamaSchema } = value as { type?: unknown; json_schema?: unknown; schema?: unknown };
  if (type === 'text') return null;
  if (type === 'json_object') {
    if (llamaSchema === undefined || llamaSchema === null) return compile(grammars, { kind: 'json', schema: null }, where);
    if (typeof llamaSchema !== 'object' || Array.isArray(llamaSchema)) throw wrongType(`${where}.schema`, 'an object', llamaSchema);
    return compile(grammars, { kind: 'json', schema: llamaSchema }, `${where}.schema`);
  }
  if (type !== 'json_schema') {
    throw badRequest(`${where}.type must be "text", "json_object" or "json_schema"; got ${JSON.stringify(type) ?? 'nothing'}`, `${where}.type`);
  }
  if (typeof js !== 'object' || js === null || Array.isArray(js)) throw wrongType(`${where}.json_schema`, 'an object', js);
  const j = js as Record<string, unknown>;
  const wrapped = !workersAi || (typeof j['schema'] === 'object' && !('type' in j) && !('properties' in j) && !('anyOf' in j) && !('$ref' in j));
  let schema: unknown = js;
  if (wrapped) {
    if (j['name'] !== undefined && (typeof j['name'] !== 'string' || !NAME.test(j['name']))) {
      throw badRequest(`${where}.json_schema.name must be 1-64 letters, digits, _ or -`, `${where}.json_schema.name`);
    }
    if (j['strict'] !== undefined && j['strict'] !== null && typeof j['strict'] !== 'boolean') {
      throw wrongType(`${where}.json_schema.strict`, 'a boolean', j['strict']);
    }
    schema = j['schema'];
    // OpenAI: without a schema the model may answer any JSON object.
    if (schema === undefined || schema === null) return compile(grammars, { kind: 'json', schema: null }, `${where}.json_schema`);
    if (typeof schema !== 'object' || Array.isArray(schema)) throw wrongType(`${where}.json_schema.schema`, 'an object', schema);
  }
  return compile(grammars, { kind: 'json', schema }, wrapped ? `${where}.json_schema.schema` : `${where}.json_schema`);
}

// ---------------------------------------------------------------------------
// vLLM's and llama.cpp's guided decoding

/**
 * The guided-decoding fields, as vLLM spells them in the request body (`guided_json`,
 * `guided_regex`, `guided_choice`, `guided_grammar`, or one `structured_outputs` object with
 * `json` / `regex` / `choice` / `grammar`) and as llama.cpp's server does (`grammar`,
 * `json_schema`). At most one; null when none is given. `guided_decoding_backend` and
 * `guided_whitespace_pattern` are accepted and ignored (there is one backend here, and whitespace
 * is always JSON's).
 */
export async function checkGuided(body: Record<string, unknown>, grammars: GrammarSource): Promise<{ constraint: ConstraintFactory; param: string } | null> {
  const given: { param: string; value: unknown }[] = [];
  for (const param of ['guided_json', 'guided_regex', 'guided_choice', 'guided_grammar', 'grammar', 'json_schema']) {
    if (body[param] !== undefined && body[param] !== null) given.push({ param, value: body[param] });
  }
  const so = body['structured_outputs'];
  if (so !== undefined && so !== null) {
    if (typeof so !== 'object' || Array.isArray(so)) throw wrongType('structured_outputs', 'an object', so);
    for (const [k, v] of Object.entries(so)) {
      if (v === undefined || v === null || k === 'disable_fallback' || k === 'disable_any_whitespace' || k === 'disable_additional_properties' || k === 'whitespace_pattern') continue;
      if (!['json', 'regex', 'choice', 'grammar', 'json_object'].includes(k)) {
        throw badRequest(`structured_outputs.${k} is not supported (supported: json, regex, choice, grammar, json_object)`, `structured_outputs.${k}`, 'unsupported_parameter');
      }
      given.push({ param: `structured_outputs.${k}`, value: v });
    }
  }
  if (given.length === 0) return null;
  if (given.length > 1) throw badRequest(`give one kind of structured output; got ${given[0]!.param} and ${given[1]!.param}`, given[1]!.param);
  const { param, value } = given[0]!;
  const kind = param.replace(/^(guided_|structured_outputs\.)/, '');
  let spec: GrammarSpec;
  switch (kind) {
    case 'json':
    case 'json_schema': {
      let schema = value;
      if (typeof schema === 'string') {
        try {
          schema = JSON.parse(schema);
        } catch {
          throw badRequest(`${param} must be a JSON schema (an object, or its JSON text); this text is not JSON`, param);
        }
      }
      if (typeof schema !== 'object' || schema === null || Array.isArray(schema)) throw wrongType(param, 'a JSON schema object', value);
      spec = { kind: 'json', schema };
      break;
    }
    case 'json_object':
      if (value !== true) throw wrongType(param, 'true', value);
      spec = { kind: 'json', schema: null };
      break;
    case 'regex':
      if (typeof value !== 'string' || value.length === 0) throw wrongType(param, 'a regular expression (a non-empty string)', value);
      spec = { kind: 'regex', pattern: value };
      break;
    case 'choice':
      if (!Array.isArray(value) || value.length === 0 || value.some((c) => typeof c !== 'string' || c.length === 0)) {
        throw wrongType(param, 'a non-empty array of non-empty strings', value);
      }
      spec = { kind: 'choice', choices: value as string[] };
      break;
    default: // grammar
      if (typeof value !== 'string' || value.trim().length === 0) throw wrongType(param, 'a GBNF grammar (a string)', value);
      spec = { kind: 'gbnf', text: value };
  }
  return { constraint: await compile(grammars, spec, param), param };
}

/** The constraint for `spec`; what it cannot be is a 400 naming `param`. */
async function compile(grammars: GrammarSource, spec: GrammarSpec, param: string): Promise<GrammarConstraint> {
  try {
    return await grammars.grammar(spec);
  } catch (err) {
    if (err instanceof SchemaError) throw badRequest(`${param}: ${err.message}`, param, 'unsupported_schema');
    if (err instanceof RegexError) throw badRequest(`${param}: ${err.message}`, param, 'unsupported_pattern');
    if (err instanceof GrammarError) throw badRequest(`${param}: ${err.message}`, param, 'invalid_grammar');
    if (err instanceof UnsupportedVocabularyError) throw badRequest(err.message, param, 'unsupported_parameter');
    throw err;
  }
}

// ---------------------------------------------------------------------------
// tools

/**
 * `tools`: OpenAI's [{type: "function", function: {name, description?, parameters?, strict?}}],
 * or Workers AI's [{name, description?, parameters?}] (both accepted on both APIs).
 */
export function checkTools(value: unknown): ToolDef[] | null {
  if (value === undefined || value === null) return null;
  if (!Array.isArray(value)) throw wrongType('tools', 'an array of functions', value);
  if (value.length === 0) return null;
  if (value.length > 128) throw badRequest(`tools may list at most 128 functions; got ${value.length}`, 'tools');
  const names = new Set<string>();
  return value.map((t: unknown, i): ToolDef => {
    const where = `tools[${i}]`;
    if (typeof t !== 'object' || t === null || Array.isArray(t)) throw wrongType(where, 'an object', t);
    const o = t as Record<string, unknown>;
    let f = o;
    let fw = where;
    if (o['type'] !== undefined || o['function'] !== undefined) {
      if (o['type'] !== 'function') throw badRequest(`${where}.type must be "function"`, `${where}.type`);
      if (typeof o['function'] !== 'object' || o['function'] === null) throw wrongType(`${where}.function`, 'an object', o['function']);
      f = o['function'] as Record<string, unknown>;
      fw = `${where}.function`;
    }
    const name = f['name'];
    if (typeof name !== 'string' || !NAME.test(name)) throw badRequest(`${fw}.name must be 1-64 letters, digits, _ or -`, `${fw}.name`);
    if (names.has(name)) throw badRequest(`${fw}.name "${name}" is given twice`, `${fw}.name`);
    names.add(name);
    const description = f['description'];
    if (description !== undefined && description !== null && typeof description !== 'string') throw wrongType(`${fw}.description`, 'a string', description);
    const parameters = f['parameters'];
    if (parameters !== undefined && parameters !== null && (typeof parameters !== 'object' || Array.isArray(parameters))) {
      throw wrongType(`${fw}.parameters`, 'a JSON schema object', parameters);
    }
    return { name, ...(typeof description === 'string' ? { description } : {}), ...(parameters ? { parameters } : {}) };
  });
}

/** `tool_choice`: "none" | "auto" | "required" | {type: "function", function: {name}}. Null: "none". */
export function checkToolChoice(value: unknown, tools: ToolDef[] | null): ToolChoice | null {
  if (value === undefined || value === null) return tools ? 'auto' : null;
  if (value === 'none') return null;
  if (value === 'auto' || value === 'required') {
    if (!tools) throw badRequest(`tool_choice "${value}" needs tools`, 'tool_choice');
    return value;
  }
  if (typeof value === 'object' && !Array.isArray(value)) {
    const fn = (value as { function?: { name?: unknown } }).function;
    const name = fn?.name;
    if ((value as { type?: unknown }).type !== 'function' || typeof name !== 'string') {
      throw badRequest('tool_choice must be "none", "auto", "required" or {"type": "function", "function": {"name": ...}}', 'tool_choice');
    }
    if (!tools?.some((t) => t.name === name)) throw badRequest(`tool_choice names "${name.slice(0, 64)}", which tools does not list`, 'tool_choice');
    return { name };
  }
  throw badRequest('tool_choice must be "none", "auto", "required" or {"type": "function", "function": {"name": ...}}', 'tool_choice');
}

/** The constraint a tool plan decodes under. Throws 400 naming the function whose schema is refused. */
export async function toolConstraint(plan: ToolPlan, grammars: GrammarSource): Promise<ConstraintFactory> {
  const offered = typeof plan.choice === 'object' ? plan.tools.filter((t) => t.name === (plan.choice as { name: string }).name) : plan.tools;
  const functions = offered.map((t) => ({ name: t.name, ...(t.parameters ? { parameters: t.parameters } : {}) }));
  const grammar = await compile(grammars, { kind: 'tools', functions, parallel: plan.parallel }, 'tools');
  return plan.choice === 'auto' ? new TextOrGrammar(grammar) : grammar;
}

/**
 * The system text that describes the tools (appended to the system segment), in the format
 * documented above.
 */
export function toolsSystemText(plan: ToolPlan): string {
  const lines = plan.tools.map((t) =>
    JSON.stringify({ name: t.name, ...(t.description ? { description: t.description } : {}), parameters: t.parameters ?? { type: 'object', properties: {} } }),
  );
  const several = plan.parallel ? 'JSON objects, one per line, each' : 'one JSON object';
  const how =
    plan.choice === 'auto'
      ? `To call a function, reply with nothing but ${several} {"name": "<function name>", "arguments": {<arguments>}}; otherwise reply normally.`
      : `Reply with nothing but ${several} {"name": "<function name>", "arguments": {<arguments>}} that calls a function.`;
  return `You can call these functions (each line: name, description, JSON schema of the arguments):\n${lines.join('\n')}\n${how}`;
}

// ---------------------------------------------------------------------------
// messages with tool calls and tool results

/** An assistant message's `tool_calls`, checked; null when there are none. */
export function checkAssistantToolCalls(value: unknown, where: string): Array<{ id: string; name: string; arguments: string }> | null {
  if (value === undefined || value === null) return null;
  if (!Array.isArray(value)) throw wrongType(where, 'an array of tool calls', value);
  return value.map((c: unknown, i) => {
    const w = `${where}[${i}]`;
    const call = c as { id?: unknown; type?: unknown; function?: { name?: unknown; arguments?: unknown }; name?: unknown; arguments?: unknown } | null;
    if (typeof call !== 'object' || call === null) throw wrongType(w, 'an object', c);
    // OpenAI: {id, type: "function", function: {name, arguments: string}}; Workers AI: {name, arguments: object}.
    const fn = call.function ?? call;
    if (typeof fn.name !== 'string') throw wrongType(`${w}.function.name`, 'a string', fn.name);
    const args = fn.arguments;
    let text: string;
    if (typeof args === 'string') text = args;
    else if (typeof args === 'object' && args !== null) text = JSON.stringify(args);
    else if (args === undefined || args === null) text = '{}';
    else throw wrongType(`${w}.function.arguments`, 'a JSON string', args);
    return { id: typeof call.id === 'string' ? call.id : '', name: fn.name, arguments: text };
  });
}

/** The text an assistant turn that made calls is rendered as (the calling convention, one per line). */
export function renderToolCalls(content: string, calls: Array<{ name: string; arguments: string }>): string {
  const lines = calls.map((c) => {
    let args: unknown;
    try {
      args = JSON.parse(c.arguments);
    } catch {
      args = c.arguments; // as given, if it is not JSON
    }
    return JSON.stringify({ name: c.name, arguments: args });
  });
  return [content.trim(), ...lines].filter((s) => s.length > 0).join('\n');
}

/** A tool message as a user turn. */
export function renderToolResult(content: string, name: string | undefined, callId: string): ChatMessage {
  return { role: 'user', content: `Result of ${name ?? 'the function'} (call ${callId}):\n${content}` };
}

// ---------------------------------------------------------------------------
// reading a call back

/**
 * The answer as function calls (one or more JSON objects separated by whitespace), or null if it
 * is not (plain text, a call cut off by max_tokens, a name not on offer). Under the call grammar
 * a complete answer always parses.
 */
export function parseToolCalls(text: string, plan: ToolPlan): ToolCall[] | null {
  const calls: ToolCall[] = [];
  for (const value of jsonValues(text)) {
    const v = value as { name?: unknown; arguments?: unknown } | null;
    if (typeof v !== 'object' || v === null || typeof v.name !== 'string' || !plan.tools.some((t) => t.name === v.name)) return null;
    calls.push({ id: `call_${randomUUID().replaceAll('-', '').slice(0, 24)}`, name: v.name, arguments: JSON.stringify(v.arguments ?? {}) });
  }
  return calls.length && (plan.parallel || calls.length === 1) ? calls : null;
}

/** The JSON objects of a text that is nothing but objects and whitespace; [] if it is anything else. */
function jsonValues(text: string): unknown[] {
  const out: unknown[] = [];
  let i = 0;
  const ws = (c: string | undefined) => c === ' ' || c === '\n' || c === '\r' || c === '\t';
  for (;;) {
    while (ws(text[i])) i++;
    if (i >= text.length) return out;
    if (text[i] !== '{') return [];
    // The object's end: depth counting outside strings.
    let depth = 0;
    let inString = false;
    let j = i;
    for (; j < text.length; j++) {
      const c = text[j];
      if (inString) {
        if (c === '\\') j++;
        else if (c === '"') inString = false;
      } else if (c === '"') inString = true;
      else if (c === '{' || c === '[') depth++;
      else if (c === '}' || c === ']') {
        if (--depth === 0) break;
      }
    }
    if (j >= text.length) return [];
    try {
      out.push(JSON.parse(text.slice(i, j + 1)));
    } catch {
      return [];
    }
    i = j + 1;
  }
}
