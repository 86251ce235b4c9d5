import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { openLogFile } from './log.ts';

describe('the server log file', () => {
  it('appends lines to the file', () => {
    const dir = mkdtempSync(join(tmpdir(), 'openchat-log-'));
    try {
      const path = join(dir, 'serve.log');
      const file = openLogFile(path);
      file.log('one');
      file.log('two');
      file.close();
      expect(readFileSync(path, 'utf8')).toBe('one\ntwo\n');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a path that cannot be opened is refused with one line naming it', () => {
    expect(() => openLogFile('/nonexistent/dir/x.log')).toThrow(/^cannot open the log file \/nonexistent\/dir\/x\.log: ENOENT/);
  });

  it('a file that cannot be written (/dev/full) is reported once; the lines go to stderr; nothing throws', () => {
    const reports: string[] = [];
    const fallback: string[] = [];
    const file = openLogFile('/dev/full', (l) => reports.push(l), (l) => fallback.push(l));
    for (const line of ['a', 'b', 'c']) expect(() => file.log(line)).not.toThrow();
    expect(reports).toHaveLength(1);
    expect(reports[0]).toMatch(/cannot write the log file \/dev\/full \(ENOSPC.*\); logging to stderr from now on/);
    expect(fallback).toEqual(['a', 'b', 'c']);
    // Even when the fallback fails, logging never throws.
    const broken = openLogFile('/dev/full', () => {}, () => {
      throw new Error('stderr closed');
    });
    expect(() => broken.log('x')).not.toThrow();
    file.close();
  });
});
