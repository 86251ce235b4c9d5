/**
 * Matching a checkpoint's tensors against what the config says the network has.
 * Everything that can be wrong is reported before a byte of weights is loaded.
 */
import { expectedTensors, type ModelConfig } from './config.ts';
import { CheckpointError, type Checkpoint } from './safetensors.ts';

// Buffers that older Llama exports saved with the weights; recomputed from
// rope_theta here, so their presence is harmless.
const IGNORED = /\.rotary_emb\.inv_freq$/;

export function validateCheckpoint(ckpt: Checkpoint, config: ModelConfig): void {
  const expected = expectedTensors(config);
  const missing: string[] = [];
  for (const [name, shape] of expected) {
    const e = ckpt.tensors.get(name);
    if (!e) {
      missing.push(name);
      continue;
    }
    if (e.shape.length !== shape.length || e.shape.some((d, i) => d !== shape[i])) {
      throw new CheckpointError(
        `${e.file}: tensor '${name}' has shape [${e.shape}], but config.json implies [${shape}] ` +
          `(hidden_size ${config.hidden_size}, heads ${config.num_attention_heads}/${config.num_key_value_heads}, ` +
          `head_dim ${config.head_dim}, intermediate_size ${config.intermediate_size}, vocab_size ${config.vocab_size})`,
      );
    }
  }
  if (missing.length) {
    const shown = missing.slice(0, 5).map((n) => `'${n}'`).join(', ');
    throw new CheckpointError(
      `${ckpt.dir}: ${missing.length} tensor(s) missing from the checkpoint: ${shown}${missing.length > 5 ? ', ...' : ''}. ` +
        'Is the download complete (all shards present)?',
    );
  }
  const extra = [...ckpt.tensors.keys()].filter((n) => !expected.has(n) && !IGNORED.test(n));
  if (extra.length) {
    const hint = config.tie_word_embeddings && extra.includes('lm_head.weight') ? ' (tie_word_embeddings is true, yet lm_head.weight is present)' : '';
    throw new CheckpointError(
      `${ckpt.dir}: unexpected tensor(s) not used by ${config.architecture} with this config: ` +
        `${extra.slice(0, 5).map((n) => `'${n}'`).join(', ')}${extra.length > 5 ? ', ...' : ''}${hint}`,
    );
  }
}
