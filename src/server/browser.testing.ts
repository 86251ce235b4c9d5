/**
 * For the browser tests: the system's Chromium (Debian's `chromium` package, which .ci/setup
 * installs), driven by playwright-core, headless, with WebGPU on (its adapter here is SwiftShader,
 * Chromium's own CPU Vulkan). No browser is downloaded. Screenshots go to .cache/screenshots/.
 */
import { existsSync, mkdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { chromium, type Browser, type Page } from 'playwright-core';

const CANDIDATES = ['/usr/bin/chromium', '/usr/bin/chromium-browser', '/usr/bin/google-chrome'];

/** The Chromium to drive: $CHROMIUM_PATH, else the first of the usual places that exists; null if none. */
export function findChromium(): string | null {
  const given = process.env.CHROMIUM_PATH;
  if (given) return existsSync(given) ? given : null;
  return CANDIDATES.find((p) => existsSync(p)) ?? null;
}

/** Why the browser tests skip, or null when they run. Said once, on stderr, when they skip. */
export function browserSkipReason(): string | null {
  if (findChromium() !== null) return null;
  const reason = `no Chromium found (${process.env.CHROMIUM_PATH ? `CHROMIUM_PATH=${process.env.CHROMIUM_PATH}` : CANDIDATES.join(', ')}): ` +
    'the browser tests are skipped; `bash .ci/setup` installs Debian\'s chromium, or set CHROMIUM_PATH';
  process.stderr.write(`${reason}\n`);
  return reason;
}

/**
 * Headless Chromium with WebGPU. `--enable-unsafe-webgpu` exposes navigator.gpu on Linux;
 * `--use-webgpu-adapter=swiftshader` picks the CPU adapter even where a GPU's would be refused
 * (no Vulkan driver for it), so the tests see one adapter everywhere. As root (CI), Chromium's
 * sandbox cannot start, hence `--no-sandbox`; the pages are our own, served on loopback.
 */
export async function launchChromium(): Promise<Browser> {
  const executablePath = findChromium();
  if (executablePath === null) throw new Error(browserSkipReason() ?? 'no Chromium');
  return chromium.launch({
    executablePath,
    headless: true,
    args: ['--no-sandbox', '--enable-unsafe-webgpu', '--use-webgpu-adapter=swiftshader', '--disable-gpu-sandbox', '--disable-dev-shm-usage'],
  });
}

export const SCREENSHOT_DIR = fileURLToPath(new URL('../../.cache/screenshots/', import.meta.url));

/** Saves the page as .cache/screenshots/<name>.png (a test artifact; git-ignored). Returns the path. */
export async function screenshot(page: Page, name: string): Promise<string> {
  mkdirSync(SCREENSHOT_DIR, { recursive: true });
  const path = `${SCREENSHOT_DIR}${name}.png`;
  await page.screenshot({ path, fullPage: false });
  return path;
}

/**
 * The page's console errors and uncaught exceptions. Chromium's own "Failed to load resource"
 * lines (an HTTP error status, which the pages show themselves) are not the page's errors.
 */
export function collectPageErrors(page: Page): string[] {
  const errors: string[] = [];
  page.on('console', (m) => {
    if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) errors.push(`console: ${m.text()}`);
  });
  page.on('pageerror', (e) => errors.push(`uncaught: ${e.message}`));
  return errors;
}
