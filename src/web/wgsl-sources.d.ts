/**
 * Every `.wgsl` file under src/, as text, keyed by the URL `wgsl()` resolves it to in the bundle
 * (file:///src/...). A virtual module that src/server/web.ts's esbuild plugin writes at build time.
 */
declare module 'openchat:wgsl' {
  const sources: Record<string, string>;
  export default sources;
}
