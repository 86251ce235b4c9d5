/**
 * The server's API keys, from any of three places: `--api-keys` (simple, but the process list
 * shows command lines to every user of the machine), `--api-keys-file FILE` and the
 * OPENCHAT_API_KEYS environment variable (readable only by the process's own user and root).
 * The keys are held as SHA-256 digests, compared in constant time, and the file can be read
 * again while the server runs (SIGHUP in `openchat serve`) to add or revoke keys without a
 * restart.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';

/** The environment variable `openchat serve` reads keys from. */
export const API_KEYS_ENV = 'OPENCHAT_API_KEYS';

export interface KeySources {
  /** Keys given directly (`--api-keys`). */
  keys?: string[];
  /** A file of keys, one per line; `#` starts a comment. Read again by reload(). */
  file?: string;
  /** The value of OPENCHAT_API_KEYS, if set: keys separated by commas or whitespace. */
  env?: string;
}

/** A key source that cannot be used: says which and why, never a key itself. */
export class KeyError extends Error {
  override name = 'KeyError';
}

/** The keys of a file's text. Throws KeyError naming the file and line of anything that is not a key. */
export function parseKeyFile(text: string, path: string): string[] {
  const keys: string[] = [];
  text.split('\n').forEach((raw, i) => {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) return;
    // A key is one word; what follows it on the line may only be a comment.
    const [key, ...rest] = line.split(/\s+/);
    if (rest.length > 0 && !rest[0]!.startsWith('#')) {
      throw new KeyError(`${path} line ${i + 1}: a key cannot contain spaces (one key per line; '#' starts a comment)`);
    }
    keys.push(key!);
  });
  return keys;
}

/** The keys of OPENCHAT_API_KEYS's value: separated by commas or whitespace. */
export function parseKeyList(value: string): string[] {
  return value.split(/[\s,]+/).filter((k) => k !== '');
}

function digest(key: string): Buffer {
  return createHash('sha256').update(key).digest();
}

/** A warning when `path` can be read by users other than its owner, or null. */
export function keyFileWarning(path: string): string | null {
  try {
    const mode = statSync(path).mode & 0o777;
    if ((mode & 0o077) === 0) return null;
    return `the API key file ${path} can be read by other users (mode ${mode.toString(8).padStart(4, '0')}); chmod 600 it (or 640 with a group for the service)`;
  } catch {
    return null; // reading it will say what is wrong
  }
}

export class ApiKeys {
  private digests: Buffer[];
  /** The keys that do not come from the file (they do not change on reload). */
  private readonly fixed: string[];

  private constructor(private readonly sources: KeySources) {
    this.fixed = [...(sources.keys ?? []), ...(sources.env === undefined ? [] : parseKeyList(sources.env))];
    if (sources.env !== undefined && parseKeyList(sources.env).length === 0) {
      // Set but empty is most likely a template or a secret store that produced nothing: running
      // open would be the surprise, so say so instead.
      throw new KeyError(`${API_KEYS_ENV} is set but holds no keys; set it to one or more keys separated by commas, or unset it`);
    }
    this.digests = this.read().map(digest);
  }

  /** Keys from the sources given (none: no key is needed). Throws KeyError when a source cannot be used. */
  static load(sources: KeySources = {}): ApiKeys {
    return new ApiKeys(sources);
  }

  /** The file the keys are (re)read from, if any. */
  get file(): string | undefined {
    return this.sources.file;
  }

  /** Whether requests need a key. */
  get required(): boolean {
    return this.digests.length > 0;
  }

  get count(): number {
    return this.digests.length;
  }

  /**
   * Whether `key` is one of the keys. Every key's digest is compared, in constant time, whatever
   * matched, so the time taken says nothing about which key matched or how much of one did.
   */
  accepts(key: string): boolean {
    const given = digest(key);
    let ok = false;
    for (const d of this.digests) ok = timingSafeEqual(d, given) || ok;
    return ok;
  }

  /**
   * Reads the file again and takes its keys (with the fixed ones); returns how many keys there
   * are now. If the file cannot be read, or a server that needed keys would be left with none,
   * throws KeyError and keeps the keys it had: a bad edit must not open the server.
   */
  reload(): number {
    if (this.sources.file === undefined) throw new KeyError('no API key file was given (--api-keys-file); there is nothing to reload');
    this.digests = this.read().map(digest);
    return this.digests.length;
  }

  private read(): string[] {
    const { file } = this.sources;
    if (file === undefined) return this.fixed;
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (err) {
      throw new KeyError(`cannot read the API key file ${file}: ${(err as Error).message}`);
    }
    const fromFile = parseKeyFile(text, file);
    if (fromFile.length === 0) {
      throw new KeyError(`the API key file ${file} holds no keys (one key per line; '#' starts a comment)`);
    }
    return [...this.fixed, ...fromFile];
  }
}
