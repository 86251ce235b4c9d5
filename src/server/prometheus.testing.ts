/**
 * Test helpers: the Prometheus text exposition format (version 0.0.4) read back, strictly, so
 * that a test checks what a scraper would see rather than matching lines with regexes; and the
 * same text read by the Prometheus project's own Python client parser, where Debian's
 * python3-prometheus-client is installed (.ci/setup installs it), to check that an independent
 * parser agrees.
 */
import { spawnSync } from 'node:child_process';

export interface Sample {
  /** The sample's own name (a histogram's `x_bucket`, `x_sum`, `x_count`). */
  name: string;
  labels: Record<string, string>;
  value: number;
}

export interface Family {
  name: string;
  type: 'counter' | 'gauge' | 'histogram' | 'summary' | 'untyped';
  help: string;
  samples: Sample[];
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

/** Parses the text format; throws, naming the line, on anything a Prometheus server would refuse. */
export function parsePrometheus(text: string): Family[] {
  if (text !== '' && !text.endsWith('\n')) throw new Error('the exposition must end with a newline');
  const families = new Map<string, Family>();
  let current: Family | null = null;
  const family = (name: string): Family => {
    let f = families.get(name);
    if (!f) {
      f = { name, type: 'untyped', help: '', samples: [] };
      families.set(name, f);
    }
    return f;
  };
  text.split('\n').forEach((line, i) => {
    const where = `line ${i + 1} (${JSON.stringify(line.slice(0, 120))})`;
    if (line.trim() === '') return;
    if (line.startsWith('#')) {
      const m = /^# (HELP|TYPE) (\S+)(?: (.*))?$/.exec(line);
      if (!m) return; // any other comment
      const [, kind, name, rest = ''] = m;
      if (!NAME.test(name!)) throw new Error(`${where}: bad metric name`);
      const f = family(name!);
      if (kind === 'HELP') f.help = rest.replace(/\\n/g, '\n').replace(/\\\\/g, '\\');
      else {
        if (!['counter', 'gauge', 'histogram', 'summary', 'untyped'].includes(rest)) throw new Error(`${where}: bad type`);
        if (f.samples.length > 0) throw new Error(`${where}: TYPE after samples`);
        f.type = rest as Family['type'];
      }
      current = f;
      return;
    }
    const sample = parseSample(line, where);
    const owner = ownerOf(sample.name, current, families);
    if (!owner) throw new Error(`${where}: a sample outside its family (families must be contiguous)`);
    owner.samples.push(sample);
    current = owner;
  });
  for (const f of families.values()) checkFamily(f);
  return [...families.values()];
}

/** The family a sample belongs to: its own name, or a histogram's/summary's with a suffix. */
function ownerOf(name: string, current: Family | null, families: Map<string, Family>): Family | null {
  const candidates = [name, name.replace(/_(bucket|sum|count)$/, '')];
  for (const c of candidates) {
    const f = families.get(c);
    if (!f) continue;
    if (c !== name && f.type !== 'histogram' && f.type !== 'summary') continue;
    // A family's samples come together: one seen before another family started is the only kind allowed.
    if (current !== null && f !== current && f.samples.length > 0) return null;
    return f;
  }
  if (families.has(name)) return null;
  const f: Family = { name, type: 'untyped', help: '', samples: [] };
  families.set(name, f);
  return f;
}

function parseSample(line: string, where: string): Sample {
  const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?\s+(\S+)(?:\s+(-?\d+))?$/.exec(line);
  if (!m) throw new Error(`${where}: not a sample line`);
  const [, name, braces, raw] = m;
  const labels: Record<string, string> = {};
  if (braces) {
    let rest = braces.slice(1, -1);
    while (rest.length > 0) {
      const lm = /^([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,?)/.exec(rest);
      if (!lm || !LABEL.test(lm[1]!)) throw new Error(`${where}: bad label pair at ${JSON.stringify(rest.slice(0, 40))}`);
      if (lm[1]! in labels) throw new Error(`${where}: label ${lm[1]} twice`);
      labels[lm[1]!] = lm[2]!.replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c));
      rest = rest.slice(lm[0].length);
      if (lm[3] === '' && rest.length > 0) throw new Error(`${where}: labels must be separated by commas`);
    }
  }
  // As Prometheus's own parser (Go's ParseFloat) reads them: Inf and NaN in any case.
  const value = /^\+?inf$/i.test(raw!) ? Infinity : /^-inf$/i.test(raw!) ? -Infinity : /^nan$/i.test(raw!) ? NaN : Number(raw);
  if (!/^nan$/i.test(raw!) && (Number.isNaN(value) || raw!.trim() === '')) throw new Error(`${where}: bad value`);
  return { name: name!, labels, value };
}

/** Histograms: per label set, cumulative buckets ending at +Inf, which equals _count; a _sum. */
function checkFamily(f: Family): void {
  if (f.type === 'counter') {
    for (const s of f.samples) if (!(s.value >= 0)) throw new Error(`${f.name}: a counter below 0`);
  }
  if (f.type !== 'histogram') return;
  const series = new Map<string, Sample[]>();
  for (const s of f.samples) {
    const { le: _le, ...rest } = s.labels;
    const key = JSON.stringify(Object.entries(rest).sort());
    series.set(key, [...(series.get(key) ?? []), s]);
  }
  for (const [key, samples] of series) {
    const buckets = samples.filter((s) => s.name === `${f.name}_bucket`);
    const count = samples.find((s) => s.name === `${f.name}_count`);
    const sum = samples.find((s) => s.name === `${f.name}_sum`);
    if (!count || !sum || buckets.length === 0) throw new Error(`${f.name}${key}: a histogram needs buckets, _sum and _count`);
    const les = buckets.map((b) => Number(b.labels['le'] === '+Inf' ? Infinity : b.labels['le']));
    for (let i = 1; i < buckets.length; i++) {
      if (!(les[i]! > les[i - 1]!) || buckets[i]!.value < buckets[i - 1]!.value) throw new Error(`${f.name}${key}: buckets not cumulative`);
    }
    if (les.at(-1) !== Infinity || buckets.at(-1)!.value !== count.value) throw new Error(`${f.name}${key}: the +Inf bucket must equal _count`);
  }
}

/** Every sample of every family. */
export function samplesOf(families: Family[]): Sample[] {
  return families.flatMap((f) => f.samples);
}

/** The sum of the samples named `name` whose labels include `labels`. */
export function valueOf(families: Family[], name: string, labels: Record<string, string> = {}): number {
  return samplesOf(families)
    .filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))
    .reduce((sum, s) => sum + s.value, 0);
}

/**
 * The samples as the official Python client's parser (prometheus_client.parser) reads them, or
 * null with the reason when it is not installed.
 */
export function parseWithPython(text: string): { samples: Sample[] } | { missing: string } {
  const script = [
    'import json, sys',
    'from prometheus_client.parser import text_string_to_metric_families',
    'out = []',
    'for fam in text_string_to_metric_families(sys.stdin.read()):',
    '    for s in fam.samples:',
    "        v = s.value",
    "        out.append({'name': s.name, 'labels': s.labels, 'value': 'NaN' if v != v else ('+Inf' if v == float('inf') else ('-Inf' if v == float('-inf') else v))})",
    'print(json.dumps(out))',
  ].join('\n');
  // Debian's python first: a pyenv or venv python on PATH may not have Debian's packages.
  for (const python of ['/usr/bin/python3', 'python3']) {
    const has = spawnSync(python, ['-c', 'import prometheus_client.parser'], { encoding: 'utf8', timeout: 20_000 });
    if (has.error || has.status !== 0) continue;
    const run = spawnSync(python, ['-c', script], { input: text, encoding: 'utf8', timeout: 20_000 });
    if (run.status !== 0) throw new Error(`prometheus_client could not parse the text: ${run.stderr || run.error?.message}`);
    const raw = JSON.parse(run.stdout) as Array<{ name: string; labels: Record<string, string>; value: number | string }>;
    return {
      samples: raw.map((s) => ({
        name: s.name,
        labels: s.labels,
        value: s.value === '+Inf' ? Infinity : s.value === '-Inf' ? -Infinity : s.value === 'NaN' ? NaN : Number(s.value),
      })),
    };
  }
  return { missing: 'no python3 with prometheus_client (Debian: apt-get install python3-prometheus-client)' };
}
