import { mkdtempSync, mkdirSync, readFileSync, rmSync, symlinkSync, writeFileSync, truncateSync, copyFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Checkpoint, writeSafetensors, type TensorSpec } from './safetensors.ts';
import { loadConfig, parseConfig } from './config.ts';
import { validateCheckpoint } from './weights.ts';
import { insideFolder } from './files.ts';
import { Rng } from '../util/rng.ts';
import { freshSeed, randomNormal } from '../util/testing.ts';
import { decodeToF32, encodeFromF32 } from '../util/half.ts';

const GOLDEN = new URL('../../golden/tiny-mistral/', import.meta.url).pathname;
const dirs: string[] = [];
function tmp(): string {
  const d = mkdtempSync(join(tmpdir(), 'openchat-st-'));
  dirs.push(d);
  return d;
}
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

/** Writes a raw file: 8-byte length, the given header text, then `data`. */
function rawFile(path: string, header: string, data = new Uint8Array(0)): void {
  const h = new TextEncoder().encode(header);
  const len = new Uint8Array(8);
  new DataView(len.buffer).setBigUint64(0, BigInt(h.byteLength), true);
  writeFileSync(path, Buffer.concat([len, h, data]));
}

describe('safetensors reader', () => {
  it('reads the golden checkpoint: every tensor, dtype and shape', async () => {
    const ckpt = await Checkpoint.open(GOLDEN);
    expect(ckpt.tensors.size).toBe(2 * 9 + 3); // 2 layers of 9 tensors, embed_tokens, norm, lm_head
    const e = ckpt.get('model.embed_tokens.weight');
    expect(e.dtype).toBe('f16');
    expect(e.shape).toEqual([32002, 64]);
    expect((await ckpt.read('model.norm.weight')).byteLength).toBe(128);
    validateCheckpoint(ckpt, await loadConfig(GOLDEN));
    ckpt.close();
  });

  it('round-trips F32, F16 and BF16 tensors through our writer, and reads byte ranges', async () => {
    const seed = freshSeed();
    const rng = new Rng(seed);
    const dir = tmp();
    const specs: Array<TensorSpec & { dtype: 'F32' | 'F16' | 'BF16' }> = [
      { name: 'a', dtype: 'F32', shape: [3, 5] },
      { name: 'b', dtype: 'F16', shape: [7, 2] },
      { name: 'c', dtype: 'BF16', shape: [11] },
    ];
    const values = specs.map((s) => randomNormal(rng, s.shape.reduce((x, y) => x * y, 1)));
    const dt = { F32: 'f32', F16: 'f16', BF16: 'bf16' } as const;
    const bytes = specs.map((s, i) => encodeFromF32(values[i]!, dt[s.dtype]));
    await writeSafetensors(join(dir, 'model.safetensors'), specs, (_, i) => bytes[i]!);
    const ckpt = await Checkpoint.open(dir);
    for (const [i, s] of specs.entries()) {
      const e = ckpt.get(s.name);
      expect(e.dtype, `seed ${seed}`).toBe(dt[s.dtype]);
      expect(e.shape).toEqual(s.shape);
      expect([...(await ckpt.read(s.name))]).toEqual([...bytes[i]!]);
    }
    expect(Array.from(decodeToF32(await ckpt.read('a', undefined, 8, 8), 'f32'))).toEqual(Array.from(values[0]!.subarray(2, 4)));
    ckpt.close();
  });

  it('reads sharded checkpoints through model.safetensors.index.json', async () => {
    const dir = tmp();
    const t = (name: string): TensorSpec => ({ name, dtype: 'F32', shape: [2] });
    await writeSafetensors(join(dir, 'model-00001-of-00002.safetensors'), [t('x'), t('y')], () => new Uint8Array(8).fill(1));
    await writeSafetensors(join(dir, 'model-00002-of-00002.safetensors'), [t('z')], () => new Uint8Array(8).fill(2));
    const map = { x: 'model-00001-of-00002.safetensors', y: 'model-00001-of-00002.safetensors', z: 'model-00002-of-00002.safetensors' };
    writeFileSync(join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: map }));
    const ckpt = await Checkpoint.open(dir);
    expect([...ckpt.tensors.keys()].sort()).toEqual(['x', 'y', 'z']);
    expect((await ckpt.read('z'))[0]).toBe(2);
    ckpt.close();

    writeFileSync(join(dir, 'model.safetensors.index.json'), JSON.stringify({ weight_map: { ...map, w: 'model-00003-of-00003.safetensors' } }));
    await expect(Checkpoint.open(dir)).rejects.toThrow(/model-00003-of-00003.safetensors, which is missing/);
    writeFileSync(join(dir, 'model.safetensors.index.json'), JSON.stringify({ weight_map: { ...map, z: map.x } }));
    await expect(Checkpoint.open(dir)).rejects.toThrow(/tensor 'z' is not in model-00001-of-00002.safetensors/);
  });

  it('refuses shard names that leave the model folder, naming the index entry, before opening anything', async () => {
    const dir = tmp();
    const t: TensorSpec = { name: 'x', dtype: 'F32', shape: [2] };
    await writeSafetensors(join(dir, 'model-00001-of-00001.safetensors'), [t], () => new Uint8Array(8));
    const index = join(dir, 'model.safetensors.index.json');
    const withShard = (shard: unknown) => writeFileSync(index, JSON.stringify({ weight_map: { x: shard } }));
    // Before: the loader opened /etc/passwd and complained about its "header".
    withShard('../../../../etc/passwd');
    await expect(Checkpoint.open(dir)).rejects.toThrow(
      /model\.safetensors\.index\.json: weight_map entry 'x': names "\.\.\/\.\.\/\.\.\/\.\.\/etc\/passwd", which is outside the model folder/,
    );
    withShard('/etc/passwd');
    await expect(Checkpoint.open(dir)).rejects.toThrow(/weight_map entry 'x': names "\/etc\/passwd", an absolute path; it must be a file inside the model folder/);
    withShard('sub/../../x.safetensors');
    await expect(Checkpoint.open(dir)).rejects.toThrow(/outside the model folder/);
    withShard(7);
    await expect(Checkpoint.open(dir)).rejects.toThrow(/weight_map entry 'x': the shard must be a file name; got 7/);
    // A subfolder inside the model folder is fine, and so is a name that wanders but stays inside.
    mkdirSync(join(dir, 'shards'));
    await writeSafetensors(join(dir, 'shards', 'a.safetensors'), [t], () => new Uint8Array(8).fill(3));
    withShard('shards/../shards/a.safetensors');
    const ckpt = await Checkpoint.open(dir);
    expect((await ckpt.read('x'))[0]).toBe(3);
    ckpt.close();
  });

  it('follows a symbolic link inside the folder, as in Hugging Face\'s download cache (snapshots/<rev>/* -> ../../blobs/<hash>)', async () => {
    const root = tmp();
    mkdirSync(join(root, 'blobs'));
    mkdirSync(join(root, 'snapshots', 'rev'), { recursive: true });
    await writeSafetensors(join(root, 'blobs', 'abc123'), [{ name: 'x', dtype: 'F32', shape: [2] }], () => new Uint8Array(8).fill(5));
    symlinkSync('../../blobs/abc123', join(root, 'snapshots', 'rev', 'model.safetensors'));
    const ckpt = await Checkpoint.open(join(root, 'snapshots', 'rev'));
    expect((await ckpt.read('x'))[0]).toBe(5);
    ckpt.close();
  });

  it('insideFolder: the one rule for file names read from a model folder (shards, adapters)', async () => {
    const dir = tmp();
    expect(insideFolder(dir, 'a/b.safetensors', 'w')).toBe(join(dir, 'a', 'b.safetensors'));
    for (const bad of ['..', '../x', 'a/../../x', '/abs', '', '.', 'a\0b']) {
      expect(() => insideFolder(dir, bad, 'adapter_config.json: "path"'), bad).toThrow(/^adapter_config\.json: "path": names /);
    }
  });

  it('refuses a model.safetensors that is a directory, by name (not EISDIR)', async () => {
    const dir = tmp();
    mkdirSync(join(dir, 'model.safetensors'));
    await expect(Checkpoint.open(dir)).rejects.toThrow(/model\.safetensors: is a directory, not a safetensors file/);
  });

  it('rejects every malformed file with a message naming the file and tensor', async () => {
    const dir = tmp();
    const f = join(dir, 'model.safetensors');
    const expectError = (re: RegExp) => expect(Checkpoint.open(dir)).rejects.toThrow(re);

    writeFileSync(f, Buffer.from([1, 2, 3]));
    await expectError(/model\.safetensors: truncated: 3 bytes/);

    rawFile(f, '{}'.padEnd(16));
    truncateSync(f, 12);
    await expectError(/header length 16 runs past the end of the file/);

    rawFile(f, '{not json');
    await expectError(/header is not valid JSON/);

    rawFile(f, JSON.stringify({ w: { dtype: 'F64', shape: [1], data_offsets: [0, 8] } }), new Uint8Array(8));
    await expectError(/tensor 'w': dtype "F64" is not supported; weights must be F16, BF16 or F32/);

    rawFile(f, JSON.stringify({ w: { dtype: 'Q4_K', shape: [1], data_offsets: [0, 8] } }), new Uint8Array(8));
    await expectError(/tensor 'w': dtype "Q4_K" is unknown/);

    rawFile(f, JSON.stringify({ w: { dtype: 'F32', shape: [4], data_offsets: [0, 16] } }), new Uint8Array(8));
    await expectError(/tensor 'w': data ends at byte 16 of the data section, which holds only 8 bytes \(truncated file\?\)/);

    rawFile(f, JSON.stringify({ w: { dtype: 'F32', shape: [3], data_offsets: [0, 8] } }), new Uint8Array(8));
    await expectError(/tensor 'w': data_offsets span 8 bytes, but shape \[3\] of F32 needs 12/);

    rawFile(
      f,
      JSON.stringify({ a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, b: { dtype: 'F32', shape: [2], data_offsets: [4, 12] } }),
      new Uint8Array(12),
    );
    await expectError(/tensors 'a' and 'b' overlap/);

    rawFile(f, JSON.stringify({ w: { dtype: 'F32', shape: [-1], data_offsets: [0, 0] } }));
    await expectError(/tensor 'w': shape \[-1\] is not a list of non-negative integers/);
  });

  it('checks a checkpoint against its config: truncated, missing, extra and mis-shaped tensors', async () => {
    const dir = tmp();
    copyFileSync(join(GOLDEN, 'config.json'), join(dir, 'config.json'));
    const st = join(dir, 'model.safetensors');
    const size = readFileSync(join(GOLDEN, 'model.safetensors')).byteLength;
    copyFileSync(join(GOLDEN, 'model.safetensors'), st);
    truncateSync(st, size - 1000);
    await expect(Checkpoint.open(dir)).rejects.toThrow(/truncated file\?/);

    const golden = await Checkpoint.open(GOLDEN);
    const config = await loadConfig(GOLDEN);
    const all = [...golden.tensors.values()];
    const toSpec = (e: (typeof all)[number], shape = e.shape): TensorSpec => ({ name: e.name, dtype: 'F16', shape });
    const write = async (entries: typeof all, extra: TensorSpec[] = [], reshape?: string) => {
      const specs = entries.map((e) => (e.name === reshape ? toSpec(e, [e.shape[0]! + 1, ...e.shape.slice(1)]) : toSpec(e))).concat(extra);
      await writeSafetensors(st, specs, (s) => new Uint8Array(s.shape.reduce((a, b) => a * b, 1) * (s.dtype === 'F32' ? 4 : 2)));
      return await Checkpoint.open(dir);
    };
    const ckpt1 = await write(all.filter((e) => e.name !== 'model.layers.1.mlp.up_proj.weight'));
    expect(() => validateCheckpoint(ckpt1, config)).toThrow(
      /1 tensor\(s\) missing from the checkpoint: 'model.layers.1.mlp.up_proj.weight'/,
    );
    const ckpt2 = await write(all, [{ name: 'model.layers.0.self_attn.q_proj.bias', dtype: 'F16', shape: [64] }]);
    expect(() => validateCheckpoint(ckpt2, config)).toThrow(
      /unexpected tensor\(s\).*q_proj.bias/,
    );
    const ckpt3 = await write(all, [], 'model.layers.0.self_attn.k_proj.weight');
    expect(() => validateCheckpoint(ckpt3, config)).toThrow(
      /'model.layers.0.self_attn.k_proj.weight' has shape \[33,64\], but config.json implies \[32,64\]/,
    );
    // Llama exports may carry rotary inverse frequencies; they are recomputed, so tolerated.
    const ckpt4 = await write(all, [{ name: 'model.layers.0.self_attn.rotary_emb.inv_freq', dtype: 'F32', shape: [8] }]);
    validateCheckpoint(ckpt4, config);
    for (const c of [ckpt1, ckpt2, ckpt3, ckpt4]) c.close();
    golden.close();
  });
});

describe('config.json', () => {
  const base = JSON.parse(readFileSync(join(GOLDEN, 'config.json'), 'utf8')) as Record<string, unknown>;

  it('parses the golden config into the typed object', async () => {
    const c = parseConfig(base);
    expect(c).toMatchObject({
      architecture: 'MistralForCausalLM', vocab_size: 32002, hidden_size: 64, num_key_value_heads: 2,
      head_dim: 16, sliding_window: 16, rope_theta: 10000, eos_token_id: [32000], bos_token_id: 1,
    });
  });

  it('treats LlamaForCausalLM as the same network without a window, and derives head_dim', async () => {
    const { head_dim: _h, sliding_window: _w, ...rest } = base;
    const c = parseConfig({ ...rest, architectures: ['LlamaForCausalLM'], model_type: 'llama', num_key_value_heads: 4, eos_token_id: [2, 32000] });
    expect(c.architecture).toBe('LlamaForCausalLM');
    expect(c.sliding_window).toBeNull();
    expect(c.head_dim).toBe(16);
    expect(c.eos_token_id).toEqual([2, 32000]);
  });

  it('rejects unknown architectures and inconsistent fields clearly', async () => {
    expect(() => parseConfig({ ...base, architectures: ['GPT2LMHeadModel'] })).toThrow(/unsupported architecture "GPT2LMHeadModel"/);
    expect(() => parseConfig({ ...base, num_key_value_heads: 3 })).toThrow(/num_attention_heads \(4\) must be a multiple of num_key_value_heads \(3\)/);
    expect(() => parseConfig({ ...base, hidden_size: 'big' })).toThrow(/"hidden_size" must be a positive integer; got "big"/);
    expect(() => parseConfig({ ...base, head_dim: undefined, hidden_size: 66 })).toThrow(/not divisible by num_attention_heads/);
    expect(() => parseConfig({ ...base, hidden_act: 'gelu' })).toThrow(/hidden_act "gelu" is not supported/);
    expect(() => parseConfig({ ...base, rope_scaling: { type: 'linear', factor: 2 } })).toThrow(/rope_scaling/);
    await expect(loadConfig(tmp())).rejects.toThrow(/config.json: not found/);
    const dir = tmp();
    mkdirSync(join(dir, 'config.json'));
    await expect(loadConfig(dir)).rejects.toThrow(/config\.json: cannot be read \(EISDIR/);
    rmSync(join(dir, 'config.json'), { recursive: true });
    writeFileSync(join(dir, 'config.json'), '{"hidden_size": 64,');
    await expect(loadConfig(dir)).rejects.toThrow(/config\.json: is not valid JSON/);
  });
});
