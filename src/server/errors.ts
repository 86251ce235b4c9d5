/**
 * Errors a request can end in, and the two JSON shapes clients expect them in.
 *
 * Every failure a client can cause is an `ApiError` with an HTTP status and a
 * message that says what to change. The OpenAI endpoints answer it as
 *   { "error": { "message", "type", "param", "code" } }
 * (what the official OpenAI clients parse into APIError), the Workers AI
 * endpoint as Cloudflare's API envelope
 *   { "result": null, "success": false, "errors": [{ "code", "message" }], "messages": [] }.
 * Anything else that goes wrong is a bug on our side: a 500 with a generic
 * message, and the details only in the server's log.
 */

/** OpenAI's error `type` values that this server uses. */
export type ErrorType = 'invalid_request_error' | 'authentication_error' | 'not_found_error' | 'server_error';

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly type: ErrorType = 'invalid_request_error',
    readonly param: string | null = null,
    readonly code: string | null = null,
    /** Extra response headers (Retry-After, Allow). */
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

export const badRequest = (message: string, param: string | null = null, code: string | null = 'invalid_value') =>
  new ApiError(400, message, 'invalid_request_error', param, code);

/** A field of the wrong JSON type (a string where a number belongs, ...). */
export const wrongType = (param: string, expected: string, value: unknown) =>
  new ApiError(400, `${param} must be ${expected}; got ${describeJson(value)}`, 'invalid_request_error', param, 'invalid_type');

export const internalError = () =>
  new ApiError(500, 'The server had an error while processing your request.', 'server_error', null, 'internal_error');

/** The OpenAI error body. */
export function openAiErrorBody(err: ApiError): object {
  return { error: { message: err.message, type: err.type, param: err.param, code: err.code } };
}

/**
 * Cloudflare's numeric error codes, as Workers AI uses them (approximately: the
 * same meaning, not a promise that every number matches what Cloudflare sends).
 */
function cloudflareCode(err: ApiError): number {
  switch (err.status) {
    case 401:
      return 10000; // "Authentication error"
    case 404:
      return 5007; // "No such model"
    case 503:
      return 3040; // "Capacity temporarily exceeded"
    default:
      // Any other client error (400, 405, 408, 413, 415, 417, 431): the request was not acceptable.
      return err.status >= 400 && err.status < 500 ? 5006 : 3043; // input validation failed / internal error
  }
}

/** The Cloudflare (Workers AI REST API) error body. */
export function cloudflareErrorBody(err: ApiError): object {
  return { result: null, success: false, errors: [{ code: cloudflareCode(err), message: err.message }], messages: [] };
}

/** How a rejected JSON value is named in a message (never the whole value: it may be long or private). */
export function describeJson(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  switch (typeof value) {
    case 'string':
      return 'a string';
    case 'number':
      return `the number ${value}`;
    case 'boolean':
      return `${value} (a boolean)`;
    case 'object':
      return 'an object';
    default:
      return `a ${typeof value}`;
  }
}
