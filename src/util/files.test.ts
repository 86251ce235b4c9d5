/**
 * The same loaders over two ModelSources: the disk (diskFiles, what Node reads) and a browser
 * tab's files held in memory (src/web/sources.ts's BlobSource, here filled from the same disk
 * files). The checkpoint, the config and the tokenizer must come out the same, and a broken file
 * must be refused with the same message, so what a tab loads is checked as strictly as in Node.
 */
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { BUNDLED_MODEL_DIR } from '../generator.ts';
import { loadConfig } from '../model/config.ts';
import { Checkpoint } from '../model/safetensors.ts';
import { OpenChatTokenizer } from '../tokenizer/tokenizer.ts';
import { loadOpenChat35Files } from '../tokenizer/openchat35.ts';
import { BlobSource } from '../web/sources.ts';
import { Rng } from './rng.ts';
import { freshSeed } from './testing.ts';

const seed = freshSeed();
const tag = `(test seed ${seed})`;

/** The bundled model's checkpoint and config, in memory under `dir`. */
function tinyInMemory(dir: string): BlobSource {
  const source = new BlobSource(dir);
  for (const f of ['config.json', 'model.safetensors']) source.add(f, new Uint8Array(readFileSync(join(BUNDLED_MODEL_DIR, f))));
  return source;
}

describe('the loaders over a BlobSource (a tab\'s files) read what they read from disk', () => {
  it('the checkpoint: every tensor entry, and random byte ranges of them', async () => {
    const disk = await Checkpoint.open(BUNDLED_MODEL_DIR);
    const mem = await Checkpoint.open('/tiny', tinyInMemory('/tiny'));
    try {
      expect([...mem.tensors.keys()]).toEqual([...disk.tensors.keys()]);
      const rng = new Rng(seed);
      for (const [name, e] of disk.tensors) {
        const m = mem.get(name);
        expect({ dtype: m.dtype, shape: m.shape, offset: m.offset, byteLength: m.byteLength }).toEqual({ dtype: e.dtype, shape: e.shape, offset: e.offset, byteLength: e.byteLength });
        const from = rng.int(0, e.byteLength);
        const length = rng.int(0, e.byteLength - from + 1);
        expect(Buffer.from(await mem.read(name, undefined, from, length)).equals(Buffer.from(await disk.read(name, undefined, from, length))), `${tag} ${name}`).toBe(true);
      }
    } finally {
      disk.close();
      mem.close();
    }
  });

  it('the config, and a truncated checkpoint refused with the same message', async () => {
    expect(await loadConfig('/tiny', tinyInMemory('/tiny'))).toEqual(await loadConfig(BUNDLED_MODEL_DIR));
    const rng = new Rng(seed);
    const weights = readFileSync(join(BUNDLED_MODEL_DIR, 'model.safetensors'));
    const dataStart = 8 + Number(weights.readBigUInt64LE(0));
    const cut = rng.int(dataStart + 1, weights.length - 1); // inside the data: a tensor runs past the end
    const source = new BlobSource('/cut');
    source.add('model.safetensors', new Uint8Array(weights.subarray(0, cut)));
    await expect(Checkpoint.open('/cut', source), tag).rejects.toThrow(/^\/cut\/model\.safetensors: tensor '.*': data ends at byte \d+ of the data section, which holds only \d+ bytes \(truncated file\?\)$/);
    await expect(Checkpoint.open('/nowhere', source)).rejects.toThrow('model folder /nowhere does not exist');
  });

  it('the tokenizer from a folder\'s tokenizer.json, and none is an error (a tab cannot build the built-in one)', async () => {
    const builtin = await loadOpenChat35Files();
    const source = tinyInMemory('/tok');
    for (const f of readdirSync(builtin.dir).filter((n) => n.endsWith('.json'))) source.add(f, new Uint8Array(readFileSync(join(builtin.dir, f))));
    const inMemory = await OpenChatTokenizer.load('/tok', source);
    const onDisk = await OpenChatTokenizer.load(BUNDLED_MODEL_DIR);
    const text = `GPT4 Correct User: über 東京 🙂 ${new Rng(seed).int(0, 1e6)}<|end_of_turn|>`;
    expect(inMemory.encode(text), tag).toEqual(onDisk.encode(text));
    expect(inMemory.stopIds).toEqual(onDisk.stopIds);
    expect(inMemory.chatTemplate).toBe(onDisk.chatTemplate);
    await expect(OpenChatTokenizer.load('/tiny', tinyInMemory('/tiny'))).rejects.toThrow('/tiny: no tokenizer.json');
  });
});
