/**
 * The server's log file. A log is worth less than the service: a path that cannot be opened
 * is refused at start-up (one clear line), and a write that fails later (a full disk,
 * /dev/full, a revoked mount) is reported once and the log goes on to stderr, so no line is
 * lost and the server never stops for it.
 */
import { closeSync, openSync, writeSync } from 'node:fs';

export interface LogFile {
  /** Appends one line (a newline is added). Never throws. */
  log(line: string): void;
  close(): void;
}

const toStderr = (line: string): void => {
  process.stderr.write(line + '\n');
};

/**
 * Opens `path` for appending; throws an Error naming the path and the reason when it cannot.
 * After a failed write, `report` gets one line saying so and every later line goes to `fallback`.
 */
export function openLogFile(path: string, report: (line: string) => void = toStderr, fallback: (line: string) => void = toStderr): LogFile {
  let fd: number | null;
  try {
    fd = openSync(path, 'a');
  } catch (err) {
    throw new Error(`cannot open the log file ${path}: ${(err as Error).message}`);
  }
  const giveUp = (err: unknown) => {
    const reason = err instanceof Error ? err.message : String(err);
    try {
      if (fd !== null) closeSync(fd);
    } catch {
      // Closing a file that cannot be written may fail too; it is being dropped either way.
    }
    fd = null;
    report(`openchat serve: cannot write the log file ${path} (${reason}); logging to stderr from now on`);
  };
  return {
    log(line) {
      if (fd !== null) {
        try {
          // Synchronous: one short line per request, and nothing is left buffered if the server stops.
          writeSync(fd, line + '\n');
          return;
        } catch (err) {
          giveUp(err);
        }
      }
      try {
        fallback(line);
      } catch {
        // stderr itself is gone: there is nowhere left to say so.
      }
    },
    close() {
      if (fd !== null) closeSync(fd);
      fd = null;
    },
  };
}
