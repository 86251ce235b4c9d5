/**
 * Structured output over HTTP: `response_format` (JSON mode) and `tools` (function calling).
 *
 * Both become a constraint on the sampler (src/sampling/json): the answer is decoded under the
 * grammar of a JSON schema, so it always parses and validates, whatever the weights.
 *
 * OpenChat 3.5 has no native tool format, so this module defines one (documented in docs/server.md):
 *   - the functions are described in the system segment, one JSON line each
 *     ({"name", "description", "parameters"}), followed by the calling convention: a call is an
 *     answer that is nothing but {"name": "<function>", "arguments": {...}};
 *   - an assistant message that made calls is rendered as those JSON objects, one per line;
 *   - a `tool` message (a function's result) is a user turn:
 *     "Result of <name> (call <tool_call_id>):\n<content>".
 * A call is decoded under the grammar {"name": <one of the functions>, "arguments": <its
 * parameters' schema>}: for tool_choice "required" or a named function from the first token, for
 * "auto" as soon as the answer's first visible character is `{` (otherwise it is free text).
 */
import { randomUUID } from 'node:crypto';
import { TextOrJson, UnsupportedVocabularyError, type ConstraintFactory, type JsonGrammar } from '../sampling/json/grammar.ts';
import { SchemaError } from '../sampling/json/schema.ts';
import type { ChatMessage } from '../tokenizer/tokenizer.ts';
import { badRequest, wrongType } from './errors.ts';

/** What the parsers need to compile a schema (the Generator, or its Prompts). */
export interface GrammarSource {
  jsonGrammar(schema: unknown | null): JsonGrammar;
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
 * {type: "json_schema", json_schema: {name, schema, strict?, description?}}. Workers AI sends the
 * schema itself as `json_schema`; `workersAi` accepts that form as well as OpenAI's.
 * Null: no constraint.
 */
export function checkResponseFormat(value: unknown, grammars: GrammarSource, workersAi = false): ConstraintFactory | null {
  const where = 'response_format';
  if (value === undefined || value === null) return null;
  if (typeof value !== 'object' || Array.isArray(value)) throw wrongType(where, 'an object', value);
  const { type, json_schema: js } = value as { type?: unknown; json_schema?: unknown };
  if (type === 'text') return null;
  if (type === 'json_object') return compile(grammars, null, where);
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
    if (schema === undefined || schema === null) return compile(grammars, null, `${where}.json_schema`);
    if (typeof schema !== 'object' || Array.isArray(schema)) throw wrongType(`${where}.json_schema.schema`, 'an object', schema);
  }
  return compile(grammars, schema, wrapped ? `${where}.json_schema.schema` : `${where}.json_schema`);
}

/** A grammar for `schema` (null: any object); what it cannot be is a 400 naming `param`. */
function compile(grammars: GrammarSource, schema: unknown | null, param: string): JsonGrammar {
  try {
    return grammars.jsonGrammar(schema);
  } catch (err) {
    if (err instanceof SchemaError) throw badRequest(`${param}: ${err.message}`, param, 'unsupported_schema');
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
export function toolConstraint(plan: ToolPlan, grammars: GrammarSource): ConstraintFactory {
  const offered = typeof plan.choice === 'object' ? plan.tools.filter((t) => t.name === (plan.choice as { name: string }).name) : plan.tools;
  const defs: Record<string, unknown> = {};
  const options = offered.map((t, i) => {
    const prefix = `f${i}_`;
    const params = t.parameters ? hoist(t.parameters, prefix, defs) : { type: 'object', properties: {}, additionalProperties: false };
    return {
      type: 'object',
      properties: { name: { const: t.name }, arguments: params },
      required: ['name', 'arguments'],
      additionalProperties: false,
    };
  });
  const schema = { ...(Object.keys(defs).length ? { $defs: defs } : {}), ...(options.length === 1 ? options[0] : { anyOf: options }) };
  const grammar = compile(grammars, schema, 'tools');
  return plan.choice === 'auto' ? new TextOrJson(grammar) : grammar;
}

/**
 * One function's parameter schema inside the call schema: its local `$ref`s ("#", "#/$defs/X")
 * point at its own root, so its definitions move into the call schema's $defs under a prefix.
 */
function hoist(params: unknown, prefix: string, defs: Record<string, unknown>): unknown {
  const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
  // Walks schema positions only: property names, enum and const values are left as they are.
  const rewrite = (node: unknown): unknown => {
    if (!isObject(node)) return node;
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(node)) {
      if (k === '$ref' && typeof v === 'string') {
        out[k] = v === '#' ? `#/$defs/${prefix}` : v.replace(/^#\/(\$defs|definitions)\//, `#/$defs/${prefix}`);
      } else if (k === '$defs' || k === 'definitions') {
        continue; // moved (the root's) or unreachable by a local "#/$defs/..." reference (nested ones)
      } else if (k === 'properties' && isObject(v)) {
        out[k] = Object.fromEntries(Object.entries(v).map(([name, sub]) => [name, rewrite(sub)]));
      } else if (k === 'items' || k === 'additionalProperties') {
        out[k] = rewrite(v);
      } else if (k === 'anyOf' && Array.isArray(v)) {
        out[k] = v.map(rewrite);
      } else {
        out[k] = v;
      }
    }
    return out;
  };
  if (!isObject(params)) return params;
  for (const key of ['$defs', 'definitions']) {
    const d = params[key];
    if (isObject(d)) for (const [name, sub] of Object.entries(d)) defs[`${prefix}${name}`] = rewrite(sub);
  }
  const root = rewrite(params);
  defs[prefix] = root; // for "#"
  return root;
}

/**
 * The system text that describes the tools (appended to the system segment), in the format
 * documented above.
 */
export function toolsSystemText(plan: ToolPlan): string {
  const lines = plan.tools.map((t) =>
    JSON.stringify({ name: t.name, ...(t.description ? { description: t.description } : {}), parameters: t.parameters ?? { type: 'object', properties: {} } }),
  );
  const how =
    plan.choice === 'auto'
      ? 'To call a function, reply with nothing but one JSON object {"name": "<function name>", "arguments": {<arguments>}}; otherwise reply normally.'
      : 'Reply with nothing but one JSON object {"name": "<function name>", "arguments": {<arguments>}} that calls a function.';
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
 * The answer as a function call, or null if it is not one (plain text, or a call cut off by
 * max_tokens). Under the call grammar a complete answer always parses.
 */
export function parseToolCall(text: string, plan: ToolPlan): ToolCall | null {
  const trimmed = text.trim();
  if (!trimmed.startsWith('{')) return null;
  let value: unknown;
  try {
    value = JSON.parse(trimmed);
  } catch {
    return null;
  }
  const v = value as { name?: unknown; arguments?: unknown };
  if (typeof v.name !== 'string' || !plan.tools.some((t) => t.name === v.name)) return null;
  return { id: `call_${randomUUID().replaceAll('-', '').slice(0, 24)}`, name: v.name, arguments: JSON.stringify(v.arguments ?? {}) };
}
