#!/usr/bin/env python3
"""Rebuilds golden/gguf-peer/: llama.cpp's own view of our GGUF files, the pins of
src/model/gguf.peer.test.ts. Not run in CI; nothing of llama.cpp is committed.

    /usr/bin/python3 golden/gguf_peer.py LLAMA_CPP_DIR [--work /tmp/gguf-peer] [--convert-work /tmp/convert]

LLAMA_CPP_DIR is a built llama.cpp checkout (build/bin/libllama.so, gguf-py/, convert_hf_to_gguf.py).
/usr/bin/python3 is Debian's, with python3-torch (1.13), python3-numpy, python3-tqdm and
python3-sentencepiece from apt; `npx tsx` must run in this repository.

convert: copies golden/tiny-mistral to CONVERT_WORK/hf, gives it a tokenizer.model (the OpenChat 3.5
  vocabulary our ggufFromFolder writes, as a SentencePiece model: llama.cpp's converter only reads
  a tokenizer through sentencepiece or transformers, and transformers is not here), runs llama.cpp's
  convert_hf_to_gguf.py --outtype f16 on it with two stand-ins (torch 1.13 lacks dtype attributes the
  converter names; a `transformers` whose AutoConfig raises, which the converter handles by reading
  config.json), and writes convert.json: each tensor's name, type, dims (innermost first) and
  SHA-256, and the metadata our config reading uses.
greedy: compiles a 40-line client of llama.h (ours, in a temporary dir, linked to the built
  libllama) and runs it on WORK/tiny-*.gguf (made by golden/ggml_blocks.py): the prompt's logits,
  then STEPS greedy tokens, CPU backend, one thread. greedy.json holds per file its SHA-256, the
  prompt, llama.cpp's tokens, each step's top-1 margin (logit top-1 minus top-2) and the first
  step's logits, all of them (the vocabulary is 64: top-k with k = 64).
"""
import argparse
import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(REPO, "golden", "gguf-peer")
FILES = ["f16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K_M", "Q4_K_M", "Q5_K_M", "Q6_K"]
# Fixed so that the fixture and the test agree; BOS, then ids away from the control tokens 0..2.
PROMPT = [1, 17, 42, 5, 33, 60, 8, 21, 49, 12, 3, 57]
STEPS = 16
# Keys our ggufConfig and tokenizer read (src/model/gguf_model.ts, src/tokenizer/gguf.ts).
CONFIG_KEYS = ["general.architecture", "tokenizer.ggml.model", "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
               "tokenizer.ggml.unknown_token_id", "tokenizer.ggml.add_bos_token", "tokenizer.ggml.add_eos_token"]

STUB_TRANSFORMERS = '''class AutoConfig:
    @staticmethod
    def from_pretrained(*a, **k):
        raise OSError("stand-in: no transformers here; the converter then reads config.json")
'''
RUN_CONVERT = '''import runpy, sys, torch
# torch 1.13 lacks these; the converter only names them in a dtype table.
for name in ["float8_e4m3fn", "float8_e5m2", "uint16", "uint32", "uint64"]:
    if not hasattr(torch, name):
        setattr(torch, name, object())
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
'''
CLIENT = r'''#include <stdio.h>
#include <stdlib.h>
#include "llama.h"
static void quiet(enum ggml_log_level l, const char *t, void *u) { (void)l; (void)t; (void)u; }
int main(int argc, char **argv) {
  if (argc < 4) { fprintf(stderr, "usage: %s MODEL STEPS ID...\n", argv[0]); return 2; }
  int steps = atoi(argv[2]), n = argc - 3;
  llama_token *ids = malloc(sizeof(llama_token) * (n + steps));
  for (int i = 0; i < n; i++) ids[i] = atoi(argv[3 + i]);
  llama_log_set(quiet, NULL);
  llama_backend_init();
  struct llama_model_params mp = llama_model_default_params();
  mp.n_gpu_layers = 0;
  struct llama_model *model = llama_model_load_from_file(argv[1], mp);
  if (!model) { fprintf(stderr, "cannot load %s\n", argv[1]); return 1; }
  struct llama_context_params cp = llama_context_default_params();
  cp.n_ctx = 512; cp.n_batch = 512; cp.n_threads = 1; cp.n_threads_batch = 1; cp.no_perf = true;
  struct llama_context *ctx = llama_init_from_model(model, cp);
  int nv = llama_vocab_n_tokens(llama_model_get_vocab(model));
  llama_batch batch = llama_batch_get_one(ids, n);
  printf("{\"steps\": [");
  for (int s = 0; s < steps; s++) {
    if (llama_decode(ctx, batch)) { fprintf(stderr, "decode failed\n"); return 1; }
    const float *lg = llama_get_logits_ith(ctx, -1);
    int best = 0;
    for (int v = 1; v < nv; v++) if (lg[v] > lg[best]) best = v;
    printf("%s{\"token\": %d, \"logits\": [", s ? ", " : "", best);
    for (int v = 0; v < nv; v++) printf("%s%.9g", v ? ", " : "", lg[v]);
    printf("]}");
    ids[n + s] = best;
    batch = llama_batch_get_one(&ids[n + s], 1);
  }
  printf("]}\n");
  llama_free(ctx); llama_model_free(model); llama_backend_free();
  return 0;
}
'''


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def tsx(code):
    subprocess.run(["npx", "tsx", "-e", code], cwd=REPO, check=True)


def spm_model(tokens, scores, types):
    """A SentencePiece ModelProto (pieces in id order; GGUF token types equal SentencePiece's), BPE with byte fallback."""
    def varint(n):
        out = bytearray()
        while True:
            b, n = n & 0x7F, n >> 7
            out.append(b | (0x80 if n else 0))
            if not n:
                return bytes(out)

    def field(num, wire, payload):
        return varint((num << 3) | wire) + payload

    def ld(num, b):
        return field(num, 2, varint(len(b)) + b)

    out = bytearray()
    for t, s, ty in zip(tokens, scores, types):
        out += ld(1, ld(1, t.encode()) + field(2, 5, struct.pack("<f", s)) + field(3, 0, varint(int(ty))))
    return bytes(out + ld(2, field(3, 0, varint(2)) + field(35, 0, varint(1))))


def convert(llama, work):
    sys.path.insert(0, os.path.join(llama, "gguf-py"))
    from gguf import GGUFReader
    os.makedirs(work, exist_ok=True)
    hf = os.path.join(work, "hf")
    shutil.rmtree(hf, ignore_errors=True)
    shutil.copytree(os.path.join(REPO, "golden", "tiny-mistral"), hf, ignore=shutil.ignore_patterns("*.f32", "golden.json"))
    ours = os.path.join(work, "ours-f16.gguf")
    tsx(f"import('./src/model/gguf.testing.ts').then((m) => m.ggufFromFolder('golden/tiny-mistral', {json.dumps(ours)}, {{ type: 'F16' }}))")
    r = GGUFReader(ours)
    f = lambda k: r.fields[k].contents()
    with open(os.path.join(hf, "tokenizer.model"), "wb") as out:
        out.write(spm_model(f("tokenizer.ggml.tokens"), f("tokenizer.ggml.scores"), f("tokenizer.ggml.token_type")))
    stubs = os.path.join(work, "stubs")
    os.makedirs(os.path.join(stubs, "transformers"), exist_ok=True)
    with open(os.path.join(stubs, "transformers", "__init__.py"), "w") as out:
        out.write(STUB_TRANSFORMERS)
    with open(os.path.join(stubs, "run_convert.py"), "w") as out:
        out.write(RUN_CONVERT)
    theirs = os.path.join(work, "llama-f16.gguf")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([stubs, os.path.join(llama, "gguf-py"), llama]))
    subprocess.run(["/usr/bin/python3", os.path.join(stubs, "run_convert.py"), os.path.join(llama, "convert_hf_to_gguf.py"), hf,
                    "--outtype", "f16", "--outfile", theirs], env=env, check=True)
    t = GGUFReader(theirs)
    tensors = [{"name": x.name, "type": x.tensor_type.name, "dims": [int(d) for d in x.shape],
                "sha256": hashlib.sha256(x.data.tobytes()).hexdigest()} for x in t.tensors]
    meta = {}
    for k, fld in t.fields.items():
        if k.startswith("llama.") or k in CONFIG_KEYS:
            # The GGUF value type beside the value: the test writes them back as they were.
            meta[k] = {"type": fld.types[0].name.lower(), "value": fld.contents()}
    mine = {x.name: (x.tensor_type.name, [int(d) for d in x.shape], hashlib.sha256(x.data.tobytes()).hexdigest()) for x in r.tensors}
    diffs = [x["name"] for x in tensors if mine.get(x["name"]) != (x["type"], x["dims"], x["sha256"])]
    print(f"convert: {len(tensors)} tensors, {len(tensors) - len(diffs)} byte-identical to ggufFromFolder's; differing: {diffs or 'none'}")
    for k in sorted(meta):
        o = r.fields[k].contents() if k in r.fields else None
        if o != meta[k]["value"]:
            print(f"convert: metadata {k}: llama.cpp {meta[k]['value']!r}, ours {o!r}")
    doc = {
        "about": "llama.cpp's convert_hf_to_gguf.py --outtype f16 on golden/tiny-mistral (+ a tokenizer.model of the OpenChat 3.5 vocabulary); golden/gguf_peer.py",
        "llama_cpp": subprocess.run(["git", "-C", llama, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip(),
        "file_sha256": sha256_file(theirs),
        "tensors": tensors,
        "metadata": meta,
    }
    with open(os.path.join(OUT, "convert.json"), "w") as out:
        json.dump(doc, out, indent=1)
        out.write("\n")


def greedy(llama, work):
    tmp = tempfile.mkdtemp(prefix="gguf-peer-client-")
    src = os.path.join(tmp, "client.c")
    exe = os.path.join(tmp, "client")
    with open(src, "w") as out:
        out.write(CLIENT)
    lib = os.path.join(llama, "build", "bin")
    subprocess.run(["gcc", "-O2", "-I", os.path.join(llama, "include"), "-I", os.path.join(llama, "ggml", "include"), src,
                    "-L", lib, "-lllama", "-lggml", "-lggml-base", f"-Wl,-rpath,{lib}", "-o", exe], check=True)
    files = []
    for name in FILES:
        path = os.path.join(work, f"tiny-{name}.gguf")
        res = json.loads(subprocess.run([exe, path, str(STEPS), *map(str, PROMPT)], capture_output=True, text=True, check=True).stdout)
        margins = [sorted(s["logits"])[-1] - sorted(s["logits"])[-2] for s in res["steps"]]
        files.append({"file": f"tiny-{name}.gguf", "sha256": sha256_file(path), "tokens": [s["token"] for s in res["steps"]],
                      "margins": [round(m, 6) for m in margins], "first_logits": res["steps"][0]["logits"]})
        print(f"greedy: {name}: {files[-1]['tokens']}")
    shutil.rmtree(tmp)
    doc = {
        "about": "llama.cpp (CPU backend, 1 thread) on golden/ggml_blocks.py's tiny-*.gguf: greedy tokens after the prompt, each step's top-1 margin, the first step's logits (all 64); golden/gguf_peer.py",
        "llama_cpp": subprocess.run(["git", "-C", llama, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip(),
        "prompt": PROMPT,
        "files": files,
    }
    with open(os.path.join(OUT, "greedy.json"), "w") as out:
        json.dump(doc, out)
        out.write("\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("llama_cpp")
    ap.add_argument("--work", default="/tmp/gguf-peer")
    ap.add_argument("--convert-work", default="/tmp/convert")
    ap.add_argument("--only", choices=["convert", "greedy"])
    args = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)
    if args.only != "greedy":
        convert(args.llama_cpp, args.convert_work)
    if args.only != "convert":
        greedy(args.llama_cpp, args.work)


if __name__ == "__main__":
    main()
