/**
 * Synthetic checkpoints for benchmarks: a Hugging Face model folder (config.json,
 * safetensors in HF tensor naming, sharded with model.safetensors.index.json the
 * way `save_pretrained` shards) whose shapes are those of real models and whose
 * weights are random f16 values (or bf16, `--dtype bf16`, as OpenChat 3.5 ships). The
 * engine does exactly the same work on them as on the real weights, so speed and memory
 * measured on them are the real figures; only the text they produce is noise.
 *
 *   npx tsx bench/synthetic.ts tiny|1b|7b|tab DIR [--max-shard-gb 5] [--seed N] [--dtype f16|bf16] [--quantize q8|q4]
 *   npx tsx bench/synthetic.ts tokenizer DIR     (only the tokenizer files, for a folder written before)
 *   npx tsx bench/synthetic.ts 1b|7b FILE.gguf --gguf Q4_K_M|Q5_K_M|Q8_0|...   (a GGUF file instead: random valid
 *     blocks, in the per-tensor mix llama-quantize writes for Q4_K_M / Q5_K_M, or one type throughout)
 *
 * Beside the weights it writes OpenChat 3.5's tokenizer (tokenizer.json, tokenizer_config.json)
 * cut to the config's vocabulary: the Generator, which the server and `openchat bench` run, needs
 * a tokenizer no larger than the model's vocab_size, and the 1b shape's 32000 tokens lack
 * OpenChat's two added ones (<|end_of_turn|> and <|pad_0|>, ids 32000 and 32001). Its text is
 * noise like the weights; the folder is self-contained (a browser tab can load it too).
 *
 * Writing 14.5 GB of weights must take minutes, not hours, so no tensor is drawn
 * element by element: one block of N(0, 1) values is drawn once, rounded to the dtype
 * once per distinct scale, and every tensor is filled by copying that block
 * round-robin from a random starting offset. Tensors therefore differ from each
 * other (different offsets; the block length is odd, so consecutive rows of a
 * matrix are different windows of it), their values have the intended
 * distribution, and filling costs one memcpy per tensor.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { QuantFormat } from '../src/gpu/buffers.ts';
import { expectedTensors, parseConfig, type ModelConfig } from '../src/model/config.ts';
import { quantizationConfig, quantizedSpecs } from '../src/model/quantize.ts';
import { quantizationFor, quantizedMatrices } from '../src/model/quantized.ts';
import { writeSafetensors, type TensorSpec } from '../src/model/safetensors.ts';
import { encodeFromF32 } from '../src/util/half.ts';
import { Rng } from '../src/util/rng.ts';
import { loadOpenChat35Files } from '../src/tokenizer/openchat35.ts';
import { GGUF_MIXES, syntheticGguf, type SyntheticGgufTypes } from '../src/model/gguf.testing.ts';
import { GGML_TYPES, type GgmlType } from '../src/kernels/ggml/types.ts';

/** The shapes the benchmarks run, as the `config.json` a Hugging Face export would carry. */
export const SYNTHETIC_CONFIGS = {
  /** The golden fixture's shape (golden/tiny-mistral): real architecture, toy size. */
  tiny: {
    architectures: ['MistralForCausalLM'],
    model_type: 'mistral',
    vocab_size: 32002,
    hidden_size: 64,
    intermediate_size: 192,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    head_dim: 16,
    hidden_act: 'silu',
    rms_norm_eps: 1e-5,
    rope_theta: 10000.0,
    sliding_window: 16,
    max_position_embeddings: 1024,
    tie_word_embeddings: false,
    bos_token_id: 1,
    eos_token_id: 32000,
    torch_dtype: 'float16',
  },
  /** TinyLlama-1.1B's shape (a Llama: grouped-query attention, no sliding window). */
  '1b': {
    architectures: ['LlamaForCausalLM'],
    model_type: 'llama',
    vocab_size: 32000,
    hidden_size: 2048,
    intermediate_size: 5632,
    num_hidden_layers: 22,
    num_attention_heads: 32,
    num_key_value_heads: 4,
    hidden_act: 'silu',
    rms_norm_eps: 1e-5,
    rope_theta: 10000.0,
    max_position_embeddings: 2048,
    tie_word_embeddings: false,
    bos_token_id: 1,
    eos_token_id: 2,
    torch_dtype: 'float16',
  },
  /**
   * A model a tab must stream rather than hold: 513 MiB as q4 (`--quantize q4`), 17 layers at
   * TinyLlama's width with Mistral's vocabulary (src/server/engine.browser.test.ts, bench/tab.ts).
   */
  tab: {
    architectures: ['MistralForCausalLM'],
    model_type: 'mistral',
    vocab_size: 32002,
    hidden_size: 2048,
    intermediate_size: 5632,
    num_hidden_layers: 17,
    num_attention_heads: 16,
    num_key_value_heads: 4,
    hidden_act: 'silu',
    rms_norm_eps: 1e-5,
    rope_theta: 10000.0,
    sliding_window: 4096,
    max_position_embeddings: 4096,
    tie_word_embeddings: false,
    bos_token_id: 1,
    eos_token_id: 32000,
    torch_dtype: 'float16',
  },
  /** OpenChat 3.5's shape (Mistral-7B plus two added tokens). */
  '7b': {
    architectures: ['MistralForCausalLM'],
    model_type: 'mistral',
    vocab_size: 32002,
    hidden_size: 4096,
    intermediate_size: 14336,
    num_hidden_layers: 32,
    num_attention_heads: 32,
    num_key_value_heads: 8,
    hidden_act: 'silu',
    rms_norm_eps: 1e-5,
    rope_theta: 10000.0,
    sliding_window: 4096,
    max_position_embeddings: 8192,
    tie_word_embeddings: false,
    bos_token_id: 1,
    eos_token_id: 32000,
    torch_dtype: 'float16',
  },
} as const;

export type SyntheticName = keyof typeof SYNTHETIC_CONFIGS;

export function isSyntheticName(name: string): name is SyntheticName {
  return Object.hasOwn(SYNTHETIC_CONFIGS, name);
}

/** save_pretrained's default `max_shard_size` ("5GB", decimal). */
export const DEFAULT_MAX_SHARD_BYTES = 5e9;

export interface WriteOptions {
  /** Shards are filled in state_dict order up to this many bytes each; one shard is written as model.safetensors. */
  maxShardBytes?: number;
  seed?: number;
  /** The weights' dtype (default f16). */
  dtype?: 'f16' | 'bf16';
  /**
   * Write the folder `openchat quantize --format q8|q4` would write (its layout and
   * quantization_config), with random codes and one scale per matrix chosen so its weights have
   * the f16 weights' spread: a large quantized folder in seconds, for loading tests and benchmarks.
   */
  quantize?: QuantFormat;
  /** Called after each tensor is written. */
  onProgress?: (p: { tensorsDone: number; tensorsTotal: number; bytesDone: number; bytesTotal: number }) => void;
}

export interface WrittenCheckpoint {
  dir: string;
  config: ModelConfig;
  files: string[];
  tensors: number;
  /** Bytes of tensor data (excluding headers): what the index's metadata.total_size says. */
  totalBytes: number;
  seconds: number;
}

// An odd length: rows of a matrix (even widths) start at different phases of the block.
const BLOCK_ELEMENTS = (1 << 21) + 1;

/**
 * Every tensor of the config, in the order `model.state_dict()` lists them (HF
 * writes shards in this order; expectedTensors keeps it), stored as `dtype`.
 */
function stateDictOrder(config: ModelConfig, dtype: 'f16' | 'bf16'): TensorSpec[] {
  return [...expectedTensors(config)].map(([name, shape]) => ({ name, dtype: dtype === 'f16' ? 'F16' : 'BF16', shape }));
}

/** Groups tensors into shards greedily, as save_pretrained does: a tensor that does not fit starts a new shard. */
function planShards(specs: TensorSpec[], maxShardBytes: number): TensorSpec[][] {
  const shards: TensorSpec[][] = [[]];
  let used = 0;
  for (const s of specs) {
    const bytes = bytesOf(s);
    if (used > 0 && used + bytes > maxShardBytes) {
      shards.push([]);
      used = 0;
    }
    shards[shards.length - 1]!.push(s);
    used += bytes;
  }
  return shards;
}

function elements(s: TensorSpec): number {
  return s.shape.reduce((a, b) => a * b, 1);
}

function bytesOf(s: TensorSpec): number {
  return elements(s) * (s.dtype === 'U8' ? 1 : s.dtype === 'F32' ? 4 : 2);
}

/** Spread of a code's value (its standard deviation), uniform over the format's codes: q4's -8..7, q8's -128..127. */
const CODE_SPREAD: Record<QuantFormat, number> = { q4: Math.sqrt((16 ** 2 - 1) / 12), q8: Math.sqrt((256 ** 2 - 1) / 12) };

/**
 * Fills tensors with f16 or bf16 values: 2-D weights [out, in] from N(0, 1/sqrt(in)) so
 * each projection keeps its activations' scale (finite through 32 layers), norm
 * weights with ones (their Hugging Face initialization).
 */
class WeightFiller {
  private readonly unit: Float32Array;
  private readonly byScale = new Map<number, Uint16Array>();
  private readonly out: Uint16Array;
  private codes: Uint8Array | null = null;

  constructor(
    private readonly rng: Rng,
    largestTensor: number,
    private readonly dtype: 'f16' | 'bf16',
    /** Quantized matrices: each one's format and row length, by its name. */
    private readonly quantized = new Map<string, { format: QuantFormat; cols: number }>(),
  ) {
    this.unit = new Float32Array(BLOCK_ELEMENTS);
    for (let i = 0; i < BLOCK_ELEMENTS; i++) this.unit[i] = rng.normal();
    this.out = new Uint16Array(largestTensor);
  }

  fill(spec: TensorSpec): Uint8Array {
    const n = elements(spec);
    if (spec.dtype === 'U8') return this.fillCodes(n);
    const out = this.out.subarray(0, n);
    const matrix = spec.name.endsWith('.scales') ? this.quantized.get(spec.name.replace(/\.scales$/, '.weight')) : undefined;
    if (matrix) {
      // One scale for every group: the codes' spread times it is N(0, 1/sqrt(in))'s, as fill() draws float weights.
      const scale = encodeFromF32(new Float32Array([1 / Math.sqrt(matrix.cols) / CODE_SPREAD[matrix.format]]), 'f16');
      out.fill(new Uint16Array(scale.buffer, scale.byteOffset, 1)[0]!);
    } else if (spec.shape.length === 1) {
      out.fill(this.dtype === 'f16' ? 0x3c00 : 0x3f80); // 1.0
    } else {
      const block = this.block(1 / Math.sqrt(spec.shape[1]!));
      let from = this.rng.int(0, BLOCK_ELEMENTS);
      for (let at = 0; at < n; ) {
        const take = Math.min(n - at, BLOCK_ELEMENTS - from);
        out.set(block.subarray(from, from + take), at);
        at += take;
        from = 0;
      }
    }
    return new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
  }

  /** Random bytes (every code equally likely), a block copied round-robin from a random offset as fill() does. */
  private fillCodes(n: number): Uint8Array {
    if (!this.codes) {
      this.codes = new Uint8Array(BLOCK_ELEMENTS);
      for (let i = 0; i < BLOCK_ELEMENTS; i++) this.codes[i] = this.rng.int(0, 256);
    }
    const out = new Uint8Array(this.out.buffer, 0, n);
    let from = this.rng.int(0, BLOCK_ELEMENTS);
    for (let at = 0; at < n; ) {
      const take = Math.min(n - at, BLOCK_ELEMENTS - from);
      out.set(this.codes.subarray(from, from + take), at);
      at += take;
      from = 0;
    }
    return out;
  }

  /** The unit block scaled and rounded to the dtype, once per distinct scale. */
  private block(scale: number): Uint16Array {
    let b = this.byScale.get(scale);
    if (!b) {
      const scaled = new Float32Array(BLOCK_ELEMENTS);
      for (let i = 0; i < BLOCK_ELEMENTS; i++) scaled[i] = this.unit[i]! * scale;
      const bytes = encodeFromF32(scaled, this.dtype);
      b = new Uint16Array(bytes.buffer, bytes.byteOffset, BLOCK_ELEMENTS);
      this.byScale.set(scale, b);
    }
    return b;
  }
}

/**
 * Writes a synthetic checkpoint of `name`'s shape (or of any raw HF config) into `dir`: config.json
 * and the weights. The tokenizer files are writeSyntheticTokenizer's (the command line writes both).
 */
export async function writeSyntheticCheckpoint(dir: string, name: SyntheticName | Record<string, unknown>, opts: WriteOptions = {}): Promise<WrittenCheckpoint> {
  const started = performance.now();
  const raw: Record<string, unknown> = typeof name === 'string' ? { ...SYNTHETIC_CONFIGS[name] } : { ...name };
  if (opts.dtype === 'bf16') raw.torch_dtype = 'bfloat16';
  const config = parseConfig(raw, typeof name === 'string' ? `synthetic ${name}` : 'synthetic config');
  const dtype = opts.dtype ?? 'f16';
  const quantization = opts.quantize ? quantizationFor(config, opts.quantize) : null;
  const specs = quantization ? quantizedSpecs(config, quantization, () => (dtype === 'f16' ? 'F16' : 'BF16')) : stateDictOrder(config, dtype);
  const shards = planShards(specs, opts.maxShardBytes ?? DEFAULT_MAX_SHARD_BYTES);
  const seed = (opts.seed ?? 1) >>> 0;
  const shapes = expectedTensors(config);
  const quantized = new Map([...(quantization ? quantizedMatrices(config, quantization) : [])].map(([name, format]) => [name, { format, cols: shapes.get(name)![1]! }]));
  // The largest tensor in 16-bit elements (codes are bytes: half as many).
  const filler = new WeightFiller(new Rng(seed), Math.max(...specs.map((s) => Math.ceil(bytesOf(s) / 2))), dtype, quantized);

  mkdirSync(dir, { recursive: true });
  if (quantization) raw.quantization_config = quantizationConfig(quantization);
  writeFileSync(join(dir, 'config.json'), JSON.stringify(raw, null, 2) + '\n');

  const totalBytes = specs.reduce((a, s) => a + bytesOf(s), 0);
  const what = quantization ? `${quantization.format} codes (one scale per matrix)` : `${dtype} weights`;
  const metadata = { format: 'pt', synthetic: `random ${what} from openchat-webgpu bench/synthetic.ts, seed ${seed}` };
  const files = shards.map((_, i) =>
    shards.length === 1 ? 'model.safetensors' : `model-${String(i + 1).padStart(5, '0')}-of-${String(shards.length).padStart(5, '0')}.safetensors`,
  );
  let tensorsDone = 0;
  let bytesDone = 0;
  for (const [i, shard] of shards.entries()) {
    await writeSafetensors(
      join(dir, files[i]!),
      shard,
      (spec) => {
        const bytes = filler.fill(spec);
        tensorsDone++;
        bytesDone += bytes.byteLength;
        // Reported before the bytes are written; good enough for a progress line.
        opts.onProgress?.({ tensorsDone, tensorsTotal: specs.length, bytesDone, bytesTotal: totalBytes });
        return bytes;
      },
      metadata,
    );
  }
  if (shards.length > 1) {
    const weight_map: Record<string, string> = {};
    shards.forEach((shard, i) => shard.forEach((s) => (weight_map[s.name] = files[i]!)));
    writeFileSync(join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: { total_size: totalBytes }, weight_map }, null, 2) + '\n');
  }
  return { dir, config, files, tensors: specs.length, totalBytes, seconds: (performance.now() - started) / 1000 };
}

/** Tokens of OpenChat 3.5's vocabulary without its added tokens: Mistral's SentencePiece pieces. */
const BASE_VOCAB = 32000;

/**
 * Writes OpenChat 3.5's tokenizer.json and tokenizer_config.json into `dir`, keeping only the added
 * tokens whose ids are below `vocabSize` (so the tokenizer never produces an id the model has no
 * row for). Returns the files written.
 */
export async function writeSyntheticTokenizer(dir: string, vocabSize: number): Promise<string[]> {
  if (!Number.isInteger(vocabSize) || vocabSize < BASE_VOCAB) {
    throw new RangeError(`a synthetic tokenizer needs a vocab_size of at least ${BASE_VOCAB} (OpenChat's pieces); got ${vocabSize}`);
  }
  const { tokenizerJson, tokenizerConfig } = await loadOpenChat35Files();
  const json = { ...tokenizerJson, added_tokens: (tokenizerJson.added_tokens ?? []).filter((t) => t.id < vocabSize) };
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify(json));
  writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify(tokenizerConfig, null, 2) + '\n');
  return ['tokenizer.json', 'tokenizer_config.json'];
}

function usage(): never {
  process.stderr.write(
    `usage: npx tsx bench/synthetic.ts ${Object.keys(SYNTHETIC_CONFIGS).join('|')} DIR [--max-shard-gb G] [--seed N] [--dtype f16|bf16] [--quantize q8|q4]\n` +
      '  writes a Hugging Face model folder of that shape with random f16 (or bf16) weights, and a tokenizer of its vocabulary;\n' +
      '  --quantize: the folder `openchat quantize` writes instead, with random codes\n' +
      `  --gguf ${Object.keys(GGUF_MIXES).join('|')}|TYPE: a GGUF file (DIR names it) of random blocks, llama-quantize's mix or TYPE throughout\n` +
      '       npx tsx bench/synthetic.ts tokenizer DIR\n' +
      "  writes only the tokenizer files, of DIR/config.json's vocab_size (for a folder written without them)\n",
  );
  process.exit(2);
}

async function main(argv: string[]): Promise<void> {
  const positional: string[] = [];
  let maxShardBytes = DEFAULT_MAX_SHARD_BYTES;
  let seed = 1;
  let dtype: 'f16' | 'bf16' = 'f16';
  let quantize: QuantFormat | undefined;
  let gguf: SyntheticGgufTypes | undefined;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--max-shard-gb') maxShardBytes = Number(argv[++i]) * 1e9;
    else if (a === '--seed') seed = Number(argv[++i]);
    else if (a === '--quantize') {
      const q = argv[++i];
      if (q !== 'q8' && q !== 'q4') usage();
      quantize = q;
    } else if (a === '--gguf') {
      const t = argv[++i] ?? '';
      if (t in GGUF_MIXES) gguf = GGUF_MIXES[t as keyof typeof GGUF_MIXES];
      else if (t in GGML_TYPES) gguf = { layers: t as GgmlType, embed: t as GgmlType, output: t as GgmlType };
      else usage();
    } else if (a === '--dtype') {
      const d = argv[++i];
      if (d !== 'f16' && d !== 'bf16') usage();
      dtype = d;
    }
    else if (a.startsWith('-')) usage();
    else positional.push(a);
  }
  const [name, dir] = positional;
  if (name === 'tokenizer' && dir && positional.length === 2) {
    const raw = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as Record<string, unknown>;
    const config = parseConfig(raw, join(dir, 'config.json'));
    const files = await writeSyntheticTokenizer(dir, config.vocab_size);
    process.stdout.write(`wrote ${files.join(' and ')} (${config.vocab_size} tokens) to ${dir}\n`);
    return;
  }
  if (!name || !dir || positional.length !== 2 || !isSyntheticName(name) || !(maxShardBytes > 0) || !Number.isInteger(seed)) usage();
  if (gguf) {
    const t0 = performance.now();
    const c = SYNTHETIC_CONFIGS[name];
    // The file carries OpenChat 3.5's vocabulary (32002 pieces), so its vocab_size is 32002 whatever the shape's.
    await syntheticGguf(dir, { ...c, vocab_size: undefined }, gguf, seed);
    process.stdout.write(`wrote ${name} as GGUF (${JSON.stringify(gguf)}) to ${dir} in ${((performance.now() - t0) / 1000).toFixed(1)} s\n`);
    return;
  }
  let lastPrint = 0;
  const w = await writeSyntheticCheckpoint(dir, name, {
    maxShardBytes,
    seed,
    dtype,
    quantize,
    onProgress: (p) => {
      const now = performance.now();
      if (now - lastPrint > 2000 || p.tensorsDone === p.tensorsTotal) {
        lastPrint = now;
        process.stderr.write(`  ${p.tensorsDone}/${p.tensorsTotal} tensors, ${(p.bytesDone / 1e9).toFixed(2)} / ${(p.bytesTotal / 1e9).toFixed(2)} GB\n`);
      }
    },
  });
  await writeSyntheticTokenizer(dir, w.config.vocab_size);
  process.stdout.write(
    `wrote ${name} (${w.config.architecture}, ${w.tensors} tensors, ${(w.totalBytes / 1e9).toFixed(2)} GB in ${w.files.length} file(s), and its tokenizer) ` +
      `to ${w.dir} in ${w.seconds.toFixed(1)} s (${(w.totalBytes / 1e9 / w.seconds).toFixed(2)} GB/s)\n`,
  );
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) await main(process.argv.slice(2));
