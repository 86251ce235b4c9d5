#!/usr/bin/env python3
"""Regenerates src/kernels/ggml/fixtures/: ggml block bytes and the f32 values llama.cpp's own
gguf-py (pure Python + numpy) dequantizes them to, the pin of src/kernels/ggml/dequant.ref.ts.
Not run in CI; nothing of llama.cpp is committed.

    python3 golden/ggml_blocks.py LLAMA_CPP_DIR OUT_DIR [--work /tmp/gguf-peer]

LLAMA_CPP_DIR is a llama.cpp checkout: its gguf-py/ is imported, and when it has been built
(build/bin/llama-quantize, build/bin/libggml-base.so) the script also
  - writes a small random-weight llama GGUF in F16 (WORK/tiny-f16.gguf) and quantizes it with
    llama-quantize to every type the project reads (WORK/tiny-<TYPE>.gguf, kept there), then
    takes a few real blocks of each type from those files;
  - dequantizes every block below with ggml's C functions (dequantize_row_*, through ctypes) as
    well, and says where C and gguf-py disagree. When this was last run they agreed bit for bit
    everywhere except F16's 1022 signaling NaNs, which C (x86 F16C) quiets and gguf-py keeps.

OUT_DIR/ggml_blocks.json holds
  cases:  explicit blocks, each {type, source, blocks, bytes (base64), values (base64 f32 LE)}:
          "random" ones are seeded numpy bytes whose f16 scale fields are forced to moderate
          finite values; "llama-quantize ..." ones are real blocks, with the command and tensor.
  sweeps: per type, {blocks, sha256} of gguf-py's f32 output for a long stream of blocks that the
          test rebuilds itself (see stream_bytes: SHA-256 in counter mode, f16 scale fields folded
          into exponents 0..20 so they are finite, subnormals and zeros included). F16 and BF16
          sweep all 65536 bit patterns, NaNs with payloads included.
"""
import argparse
import base64
import ctypes
import hashlib
import json
import os
import subprocess
import sys

import numpy as np

# Offsets of the ggml_half fields inside one block (ggml-common.h's structs).
HALF_FIELDS = {
    "Q4_0": [0], "Q4_1": [0, 2], "Q5_0": [0], "Q5_1": [0, 2], "Q8_0": [0],
    "Q2_K": [80, 82], "Q3_K": [108], "Q4_K": [0, 2], "Q5_K": [0, 2], "Q6_K": [208],
}
QUANT_TYPES = list(HALF_FIELDS)
SWEEP_BLOCKS = {"Q4_0": 4096, "Q4_1": 4096, "Q5_0": 4096, "Q5_1": 4096, "Q8_0": 4096,
                "Q2_K": 1024, "Q3_K": 1024, "Q4_K": 1024, "Q5_K": 1024, "Q6_K": 1024}
# The llama-quantize ftypes whose outputs hold the real blocks (the _M mixes add Q6_K and Q5_0/Q8_0
# tensors beside their main type).
QUANTIZE_FTYPES = ["Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K_M", "Q4_K_M", "Q5_K_M", "Q6_K", "BF16", "F32"]
# ggml's C dequantizers, for the cross-check.
C_FUNCS = {"Q4_0": "dequantize_row_q4_0", "Q4_1": "dequantize_row_q4_1", "Q5_0": "dequantize_row_q5_0",
           "Q5_1": "dequantize_row_q5_1", "Q8_0": "dequantize_row_q8_0", "Q2_K": "dequantize_row_q2_K",
           "Q3_K": "dequantize_row_q3_K", "Q4_K": "dequantize_row_q4_K", "Q5_K": "dequantize_row_q5_K",
           "Q6_K": "dequantize_row_q6_K", "F16": "ggml_fp16_to_fp32_row", "BF16": "ggml_bf16_to_fp32_row"}


def fold_half(h):
    """A finite f16 from any bits: exponent e > 20 becomes e - 11 (so 0..20: zero, subnormals, up to 2^6)."""
    e = (h >> 10) & 0x1F
    e = np.where(e > 20, e - 11, e)
    return (h & 0x83FF) | (e << 10)


def fix_halves(type_name, raw, moderate=False):
    """Forces the f16 scale fields of blocks `raw` ([n, block bytes] uint8) to finite values."""
    for off in HALF_FIELDS[type_name]:
        h = raw[:, off].astype(np.uint16) | (raw[:, off + 1].astype(np.uint16) << 8)
        if moderate:
            # exponents 8..15: |scale| in [2^-7, 2): a weight's size then stays near a model's.
            h = (h & 0x83FF) | ((8 + ((h >> 10) & 7)) << 10)
        else:
            h = fold_half(h)
        raw[:, off] = h & 0xFF
        raw[:, off + 1] = h >> 8
    return raw


def stream_bytes(label, n):
    """n bytes of SHA-256 in counter mode: sha256(f"{label}:{k}") for k = 0, 1, ... (the test rebuilds it)."""
    out = bytearray()
    k = 0
    while len(out) < n:
        out += hashlib.sha256(f"{label}:{k}".encode()).digest()
        k += 1
    return np.frombuffer(bytes(out[:n]), dtype=np.uint8).copy()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("llama_cpp")
    ap.add_argument("out")
    ap.add_argument("--work", default="/tmp/gguf-peer")
    ap.add_argument("--seed", type=int, default=24)
    args = ap.parse_args()
    sys.path.insert(0, os.path.join(args.llama_cpp, "gguf-py"))
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType as T
    from gguf.quants import dequantize

    def block_bytes(name):
        return GGML_QUANT_SIZES[T[name]][1]

    def deq(name, raw):
        return np.ascontiguousarray(dequantize(raw.reshape(-1), T[name]).astype(np.float32, copy=False).reshape(-1))

    lib = None
    libpath = os.path.join(args.llama_cpp, "build", "bin", "libggml-base.so")
    if os.path.exists(libpath):
        lib = ctypes.CDLL(libpath)
    c_disagreements = []

    def c_check(name, raw, values, where):
        if lib is None or name not in C_FUNCS:
            return
        n = values.size
        out = np.empty(n, dtype=np.float32)
        src = np.ascontiguousarray(raw.reshape(-1))
        fn = getattr(lib, C_FUNCS[name])
        fn.restype = None
        fn(src.ctypes.data_as(ctypes.c_void_p), out.ctypes.data_as(ctypes.c_void_p), ctypes.c_int64(n))
        bad = np.nonzero(out.view(np.uint32) != values.view(np.uint32))[0]
        if bad.size:
            i = int(bad[0])
            c_disagreements.append(f"{where}: {bad.size} values differ, first at {i}: C {out.view(np.uint32)[i]:#010x} gguf-py {values.view(np.uint32)[i]:#010x}")

    rng = np.random.default_rng(args.seed)
    cases = []

    def add_case(name, raw, source):
        raw = np.ascontiguousarray(raw, dtype=np.uint8)
        values = deq(name, raw)
        c_check(name, raw, values, f"{name} {source}")
        per = 1 if name in ("F32", "F16", "BF16") else GGML_QUANT_SIZES[T[name]][0]
        cases.append({"type": name, "source": source, "count": int(values.size),
                      "blocks": int(values.size // per),
                      "bytes": base64.b64encode(raw.tobytes()).decode(),
                      "values": base64.b64encode(values.astype("<f4").tobytes()).decode()})

    # (a) random blocks: every code pattern is valid, so only the f16 fields need taming.
    for name in QUANT_TYPES:
        n = 1 if name.endswith("_K") else 2
        raw = rng.integers(0, 256, size=(n, block_bytes(name)), dtype=np.uint8)
        add_case(name, fix_halves(name, raw, moderate=True), f"random (numpy seed {args.seed})")

    # (b) real blocks from llama-quantize.
    quantize = os.path.join(args.llama_cpp, "build", "bin", "llama-quantize")
    commands = []
    if os.path.exists(quantize):
        os.makedirs(args.work, exist_ok=True)
        f16_path = os.path.join(args.work, "tiny-f16.gguf")
        write_tiny_llama(f16_path, rng)
        taken = {}
        paths = [(f16_path, "F16 (gguf-py GGUFWriter)")]
        for ftype in QUANTIZE_FTYPES:
            path = os.path.join(args.work, f"tiny-{ftype}.gguf")
            cmd = [quantize, f16_path, path, ftype, "1"]
            commands.append(" ".join(cmd))
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            paths.append((path, f"llama-quantize tiny-f16.gguf {ftype}"))
        from gguf.gguf_reader import GGUFReader
        # Each type's blocks come from the file named for it where it has one, then from the others.
        home = {"Q3_K": "Q3_K_M", "Q4_K": "Q4_K_M", "Q5_K": "Q5_K_M", "F16": None}
        for name in QUANT_TYPES + ["F32", "F16", "BF16"]:
            want = home.get(name, name)
            ordered = sorted(paths, key=lambda p: 0 if (want is None and p[0] == f16_path) or p[0].endswith(f"-{want}.gguf") else 1)
            for path, how in ordered:
                for t in GGUFReader(path).tensors:
                    if t.tensor_type.name != name or taken.get(name, 0) >= 2 or t.name in taken.get(name + "/tensors", ()):
                        continue
                    data = np.ascontiguousarray(t.data).view(np.uint8).reshape(-1)
                    if name in ("F32", "F16", "BF16"):
                        width = {"F32": 4, "F16": 2, "BF16": 2}[name]
                        raw = data[: 64 * width]
                        what = "values 0..63"
                    else:
                        bb = block_bytes(name)
                        # The second pick is from the middle of its tensor, not only first blocks.
                        at = 0 if taken.get(name, 0) == 0 else (data.size // bb) // 2
                        raw = data[at * bb:(at + 1) * bb]
                        what = f"block {at}"
                    add_case(name, raw, f"{how}: {t.name} {what}")
                    taken[name] = taken.get(name, 0) + 1
                    taken.setdefault(name + "/tensors", set()).add(t.name)
        missing = [n for n in QUANT_TYPES + ["F32", "F16", "BF16"] if n not in taken]
        if missing:
            print("no real blocks of", ", ".join(missing), file=sys.stderr)
    else:
        print(f"{quantize} not built: random blocks only", file=sys.stderr)

    # Sweeps: long streams, pinned by a hash of gguf-py's output.
    sweeps = {}
    for name in QUANT_TYPES:
        n = SWEEP_BLOCKS[name]
        raw = fix_halves(name, stream_bytes(f"ggml-sweep/{name}", n * block_bytes(name)).reshape(n, -1))
        values = deq(name, raw)
        c_check(name, raw, values, f"{name} sweep")
        sweeps[name] = {"blocks": n, "sha256": hashlib.sha256(values.astype("<f4").tobytes()).hexdigest()}
    every = np.arange(65536, dtype=np.uint16).astype("<u2").view(np.uint8)
    for name in ("F16", "BF16"):
        values = deq(name, every)
        c_check(name, every, values, f"{name} sweep")
        sweeps[name] = {"blocks": 65536, "sha256": hashlib.sha256(values.astype("<f4").tobytes()).hexdigest()}
    f32 = stream_bytes("ggml-sweep/F32", 4 * 4096)
    sweeps["F32"] = {"blocks": 4096, "sha256": hashlib.sha256(deq("F32", f32).astype("<f4").tobytes()).hexdigest()}

    os.makedirs(args.out, exist_ok=True)
    doc = {
        "about": "ggml blocks and gguf-py's dequantized f32 values; made by golden/ggml_blocks.py (see its docstring)",
        "llama_cpp": gguf_py_version(args.llama_cpp),
        "numpy": np.__version__,
        "quantize_commands": commands,
        "c_cross_check": "not run (no build)" if lib is None else ("agrees bit for bit" if not c_disagreements else c_disagreements),
        "cases": cases,
        "sweeps": sweeps,
    }
    with open(os.path.join(args.out, "ggml_blocks.json"), "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    print("C cross-check:", doc["c_cross_check"])
    print("cases:", len(cases), "sweeps:", len(sweeps))


def gguf_py_version(llama_cpp):
    """The checkout's gguf-py version and the sha256 of the two files the pin rests on (a checkout may lack git)."""
    with open(os.path.join(llama_cpp, "gguf-py", "pyproject.toml")) as f:
        version = next((line.split("=")[1].strip().strip('"') for line in f if line.startswith("version")), "unknown")
    digests = {}
    for rel in ("gguf-py/gguf/quants.py", "ggml/src/ggml-quants.c"):
        with open(os.path.join(llama_cpp, rel), "rb") as f:
            digests[rel] = hashlib.sha256(f.read()).hexdigest()
    return {"gguf_py_version": version, "sha256": digests}


def write_tiny_llama(path, rng):
    """A loadable llama-architecture GGUF, F16, random N(0, 0.02) weights; rows of 256 and 512 so every k-quant applies."""
    from gguf import GGUFWriter
    from gguf.constants import LlamaFileType, TokenType
    n_embd, n_ff, n_layer, n_vocab = 256, 512, 2, 64
    w = GGUFWriter(path, "llama")
    w.add_name("tiny-random-llama")
    w.add_block_count(n_layer)
    w.add_context_length(256)
    w.add_embedding_length(n_embd)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(2)
    w.add_head_count_kv(1)
    w.add_rope_dimension_count(n_embd // 2)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(LlamaFileType.MOSTLY_F16)
    w.add_tokenizer_model("llama")
    tokens = ["<unk>", "<s>", "</s>"] + [f"\u2581t{i}" for i in range(n_vocab - 3)]
    w.add_token_list(tokens)
    w.add_token_scores([0.0] * 3 + [-float(i) for i in range(n_vocab - 3)])
    w.add_token_types([TokenType.UNKNOWN, TokenType.CONTROL, TokenType.CONTROL] + [TokenType.NORMAL] * (n_vocab - 3))
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)

    def mat(rows, cols):
        return (rng.standard_normal((rows, cols)) * 0.02).astype(np.float16)

    w.add_tensor("token_embd.weight", mat(n_vocab, n_embd))
    w.add_tensor("output_norm.weight", np.ones(n_embd, dtype=np.float32))
    w.add_tensor("output.weight", mat(n_vocab, n_embd))
    for i in range(n_layer):
        w.add_tensor(f"blk.{i}.attn_norm.weight", (1 + 0.1 * rng.standard_normal(n_embd)).astype(np.float32))
        w.add_tensor(f"blk.{i}.attn_q.weight", mat(n_embd, n_embd))
        w.add_tensor(f"blk.{i}.attn_k.weight", mat(n_embd // 2, n_embd))
        w.add_tensor(f"blk.{i}.attn_v.weight", mat(n_embd // 2, n_embd))
        w.add_tensor(f"blk.{i}.attn_output.weight", mat(n_embd, n_embd))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", (1 + 0.1 * rng.standard_normal(n_embd)).astype(np.float32))
        w.add_tensor(f"blk.{i}.ffn_gate.weight", mat(n_ff, n_embd))
        w.add_tensor(f"blk.{i}.ffn_up.weight", mat(n_ff, n_embd))
        w.add_tensor(f"blk.{i}.ffn_down.weight", mat(n_embd, n_ff))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    main()
