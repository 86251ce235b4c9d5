/**
 * What the weight-reading kernels share: the override constant of each storage format,
 * DTYPE for the formats weights.wgsl widens, QFORMAT for those quant.wgsl decodes; none for
 * llama.cpp's block formats, whose decode file is bound to the kernels' <ggml_format> instead
 * (table.ts, embedding.ts).
 */
import type { Overrides } from '../gpu/encoder.ts';
import { isGgmlBlocks, isQuantized, type MatrixDType, type WeightDType } from '../gpu/buffers.ts';

/** The DTYPE override constant of weights.wgsl for a storage format. */
function dtypeCode(dtype: WeightDType): number {
  return dtype === 'f32' ? 0 : dtype === 'f16' ? 1 : 2;
}

/** The override constant a kernel reading weights of `dtype` takes: DTYPE (weights.wgsl) or QFORMAT (quant.wgsl). */
export function formatConstant(dtype: MatrixDType): Overrides {
  if (isGgmlBlocks(dtype)) return {};
  return isQuantized(dtype) ? { QFORMAT: dtype === 'q8' ? 0 : 1 } : { DTYPE: dtypeCode(dtype) };
}
