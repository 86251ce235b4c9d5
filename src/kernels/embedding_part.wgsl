// What the two embedding gathers share (embedding.wgsl, embedding_quant.wgsl), included by
// both: not a kernel itself. It holds their parameters, the ids, and which row of the
// dispatch's table part a token reads.
//
// embed_tokens may be split into several GpuMatrix parts; each dispatch covers one part, and an
// invocation writes its token's columns only if that token's id falls in this part, so the
// dispatches of all parts together fill every row. Ids >= vocab (which the tokenizer never
// produces) get zeros from the last part, so the output is always defined.
//
// Layouts (bindings 0 and 1; the kernels declare table and out)
//   ids: u32 [tokens] token ids.

struct Params {
  cols: u32,
  row0: u32,      // first vocabulary row held by this part
  rows: u32,      // rows in this part
  is_last: u32,   // 1 for the last part: it also zero-fills out-of-range ids
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> ids: array<u32>;

const NOT_HERE = 0xffffffffu;    // another part holds the row: write nothing
const PAST_VOCAB = 0xfffffffeu;  // an id past the vocabulary, in the last part: write zeros

// Token t's row within this part (< p.rows), or NOT_HERE, or PAST_VOCAB.
fn part_row(t: u32) -> u32 {
  let id = ids[t];
  if (id < p.row0) {
    return NOT_HERE;
  }
  let r = id - p.row0;
  if (r < p.rows) {
    return r;
  }
  return select(NOT_HERE, PAST_VOCAB, p.is_last != 0u);
}
