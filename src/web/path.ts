/**
 * node:path for the engine's bundle: POSIX paths, as the model code joins a folder and a file name
 * (src/web/sources.ts gives a tab's files paths like `/picked/model.safetensors`). No current
 * directory exists in a tab, so relative paths resolve against `/`.
 */
export const sep = '/';

export function isAbsolute(p: string): boolean {
  return p.startsWith('/');
}

/** `parts` joined and normalized: `.` dropped, `..` taken back (never above the root of an absolute path). */
function normalizeParts(path: string): string {
  const absolute = isAbsolute(path);
  const out: string[] = [];
  for (const part of path.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..' && out.length > 0 && out.at(-1) !== '..') out.pop();
    else if (part === '..' && absolute) continue;
    else out.push(part);
  }
  const joined = out.join('/');
  return absolute ? `/${joined}` : joined || '.';
}

export function join(...parts: string[]): string {
  const path = parts.filter((p) => p !== '').join('/');
  if (path === '') return '.';
  const normal = normalizeParts(path);
  // As Node's join: a trailing separator stays.
  return path.endsWith('/') && normal !== '/' ? `${normal}/` : normal;
}

export function resolve(...parts: string[]): string {
  let path = '';
  for (let i = parts.length - 1; i >= 0 && !isAbsolute(path); i--) path = path ? `${parts[i]}/${path}` : parts[i]!;
  return normalizeParts(isAbsolute(path) ? path : `/${path}`);
}

export function relative(from: string, to: string): string {
  const a = resolve(from).split('/').filter(Boolean);
  const b = resolve(to).split('/').filter(Boolean);
  let i = 0;
  while (i < a.length && i < b.length && a[i] === b[i]) i++;
  return [...a.slice(i).map(() => '..'), ...b.slice(i)].join('/');
}

export function basename(p: string): string {
  const parts = p.split('/').filter(Boolean);
  return parts.at(-1) ?? '';
}

/** As Node's posix.dirname: everything before the last segment, less the one separator before it. */
export function dirname(p: string): string {
  if (p === '') return '.';
  const hasRoot = p.startsWith('/');
  let end = -1;
  let matchedSlash = true;
  for (let i = p.length - 1; i >= 1; i--) {
    if (p[i] === '/') {
      if (!matchedSlash) {
        end = i;
        break;
      }
    } else {
      matchedSlash = false;
    }
  }
  if (end === -1) return hasRoot ? '/' : '.';
  if (hasRoot && end === 1) return '//';
  return p.slice(0, end);
}
