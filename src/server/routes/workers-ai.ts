/**
 * Cloudflare Workers AI's text-generation endpoint: POST /ai/run/{model} (server.ts maps
 * Cloudflare's account paths onto it, and answers its errors in Cloudflare's envelope). The
 * answer is {result: {response, usage}, success, errors, messages}, or a stream of
 * {response} events whose last one carries the usage.
 */
import { ApiError, badRequest } from '../errors.ts';
import type { Exchange, ServerParts } from '../exchange.ts';
import { HeldText, type ReplyFormat } from '../generation.ts';
import { parseWorkersAiRequest, type GenerationJob } from '../requests.ts';
import { parseToolCalls, type ToolCall } from '../structured.ts';

/** POST /ai/run/{model}, `model` the name as decoded from the path. */
export async function workersAiRun(server: ServerParts, ex: Exchange, model: string): Promise<void> {
  const { names } = server;
  if (!names.accepts(model)) {
    throw new ApiError(404, `No such model ${model.slice(0, 80)}; this server runs ${names.served}`, 'not_found_error', null, 'model_not_found');
  }
  if (names.adapterFor(model) !== undefined) {
    // Workers AI names the base model in the path and the adapter in `lora`; one way only.
    throw badRequest(`${model.slice(0, 80)} is a LoRA adapter: on /ai/run the path names the base model (${names.served}) and the lora field the adapter`, 'lora');
  }
  const job = await parseWorkersAiRequest(await ex.readJson(), server.generator, names);
  await server.generations.reply(job, ex, () => workersAiFormat(job));
}

/** The schema has no `n`: one choice per request. */
function workersAiFormat(job: GenerationJob): ReplyFormat {
  return {
    json: (results, usage) => {
      const r = results[0]!;
      const calls = job.tools ? parseToolCalls(r.text, job.tools) : null;
      const result = calls ? { response: '', tool_calls: calls.map(workersAiToolCall), usage } : { response: r.text, usage };
      return { result, success: true, errors: [], messages: [] };
    },

    stream: (sse) => {
      const held = new HeldText(job.tools, (response) => sse.send({ response }));
      return {
        onText: (_index, text, tokens) => held.push(text, tokens),
        onDone: (_index, r) => {
          const called = held.end(r);
          if (called) sse.send({ response: '', tool_calls: called.calls.map(workersAiToolCall) });
        },
        // The last event carries the usage, as Workers AI's streams do; then [DONE].
        end: (_results, usage) => sse.send({ response: '', usage }),
      };
    },
  };
}

/** Workers AI's tool call: the arguments as an object. */
function workersAiToolCall(call: ToolCall): object {
  return { name: call.name, arguments: JSON.parse(call.arguments) as unknown };
}
