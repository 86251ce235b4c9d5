/**
 * ggml's tensor types as a GGUF file names them (llama.cpp's ggml.h `enum ggml_type`; the block
 * layouts are ggml-common.h's): the one table of ids, names and block sizes. Which of them this
 * project reads, and how each one reaches the device, is decided by the loader (src/model/gguf*)
 * and the kernels (src/kernels/ggml); every other id is refused by name.
 */

/** The types a GGUF tensor may have that this project reads. */
export type GgmlType = 'F32' | 'F16' | 'BF16' | 'Q8_0' | 'Q4_0' | 'Q4_1' | 'Q5_0' | 'Q5_1' | 'Q2_K' | 'Q3_K' | 'Q4_K' | 'Q5_K' | 'Q6_K';

export interface GgmlTypeInfo {
  /** The id in a GGUF tensor info. */
  id: number;
  /** Weights per block (1 for the float types). */
  blockValues: number;
  /** Bytes per block as the file stores it. */
  blockBytes: number;
  /** Byte offsets in a block of its f16 scale fields (d, and dmin / m where the format has one): a non-finite one poisons the block. */
  halfFields: readonly number[];
}

/** K-quants' super-block: 256 weights (QK_K). */
export const QK_K = 256;

export const GGML_TYPES: Readonly<Record<GgmlType, GgmlTypeInfo>> = {
  F32: { id: 0, blockValues: 1, blockBytes: 4, halfFields: [] },
  F16: { id: 1, blockValues: 1, blockBytes: 2, halfFields: [] },
  Q4_0: { id: 2, blockValues: 32, blockBytes: 2 + 16, halfFields: [0] },
  Q4_1: { id: 3, blockValues: 32, blockBytes: 2 + 2 + 16, halfFields: [0, 2] },
  Q5_0: { id: 6, blockValues: 32, blockBytes: 2 + 4 + 16, halfFields: [0] },
  Q5_1: { id: 7, blockValues: 32, blockBytes: 2 + 2 + 4 + 16, halfFields: [0, 2] },
  Q8_0: { id: 8, blockValues: 32, blockBytes: 2 + 32, halfFields: [0] },
  Q2_K: { id: 10, blockValues: QK_K, blockBytes: 16 + 64 + 2 + 2, halfFields: [80, 82] },
  Q3_K: { id: 11, blockValues: QK_K, blockBytes: 32 + 64 + 12 + 2, halfFields: [108] },
  Q4_K: { id: 12, blockValues: QK_K, blockBytes: 2 + 2 + 12 + 128, halfFields: [0, 2] },
  Q5_K: { id: 13, blockValues: QK_K, blockBytes: 2 + 2 + 12 + 32 + 128, halfFields: [0, 2] },
  Q6_K: { id: 14, blockValues: QK_K, blockBytes: 128 + 64 + 16 + 2, halfFields: [208] },
  BF16: { id: 30, blockValues: 1, blockBytes: 2, halfFields: [] },
};

/** Every id ggml has defined, for the error that names a type this project does not read. */
const ALL_NAMES: Readonly<Record<number, string>> = {
  0: 'F32', 1: 'F16', 2: 'Q4_0', 3: 'Q4_1', 4: 'Q4_2 (removed from ggml)', 5: 'Q4_3 (removed from ggml)', 6: 'Q5_0', 7: 'Q5_1',
  8: 'Q8_0', 9: 'Q8_1', 10: 'Q2_K', 11: 'Q3_K', 12: 'Q4_K', 13: 'Q5_K', 14: 'Q6_K', 15: 'Q8_K', 16: 'IQ2_XXS', 17: 'IQ2_XS',
  18: 'IQ3_XXS', 19: 'IQ1_S', 20: 'IQ4_NL', 21: 'IQ3_S', 22: 'IQ2_S', 23: 'IQ4_XS', 24: 'I8', 25: 'I16', 26: 'I32', 27: 'I64',
  28: 'F64', 29: 'IQ1_M', 30: 'BF16', 31: 'Q4_0_4_4 (removed)', 32: 'Q4_0_4_8 (removed)', 33: 'Q4_0_8_8 (removed)',
  34: 'TQ1_0', 35: 'TQ2_0', 36: 'IQ4_NL_4_4 (removed)', 37: 'IQ4_NL_4_8 (removed)', 38: 'IQ4_NL_8_8 (removed)', 39: 'MXFP4',
  40: 'NVFP4', 41: 'Q1_0', 42: 'Q2_0',
};

const BY_ID = new Map<number, GgmlType>(Object.entries(GGML_TYPES).map(([name, t]) => [t.id, name as GgmlType]));

/** The type of GGUF type id `id`, or null when this project does not read it. */
export function ggmlTypeOf(id: number): GgmlType | null {
  return BY_ID.get(id) ?? null;
}

/** A type id's ggml name, for messages ("IQ2_XS", "type 99" for an id ggml never had). */
export function ggmlTypeName(id: number): string {
  return ALL_NAMES[id] ?? `type ${id}`;
}

/** Bytes of `count` weights of type `type` (count a multiple of its block). */
export function ggmlBytes(type: GgmlType, count: number): number {
  const t = GGML_TYPES[type];
  if (count % t.blockValues !== 0) throw new RangeError(`${type}: ${count} weights are not whole blocks of ${t.blockValues}`);
  return (count / t.blockValues) * t.blockBytes;
}
