#!/usr/bin/env python3
"""Regenerates a golden fixture: a random-weight Mistral checkpoint and the logits that
Hugging Face transformers computes for it. Not run in CI (needs torch + transformers).

    pip install torch transformers==4.47.1 safetensors
    python golden/regenerate.py --out DIR [--hidden 64 --intermediate 192 --layers 2 --heads 4
                                          --kv-heads 2 --window 16 --dtype float16 --shards 1]

Writes DIR/config.json, DIR/model.safetensors (or shards + model.safetensors.index.json),
DIR/case_<id>_logits.f32 (float32 LE, [positions, vocab]) and DIR/golden.json, in the same
layout as golden/tiny-mistral/ so golden.test.ts can read it.
"""
import argparse
import hashlib
import json
import os

import torch
from safetensors.torch import save_file
from transformers import MistralConfig, MistralForCausalLM

CASES = {
    "a": [1, 420, 6316, 28781, 3198, 3123, 1247, 28747, 22557, 32000, 420, 6316, 28781, 3198, 3123, 21631, 28747],
    "c": [1, 7596, 1247, 28747, 26256, 2936, 7653, 1413, 334, 1680, 32000, 7596, 21631, 28747],
    "e": [1],
}


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--vocab", type=int, default=32002)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--intermediate", type=int, default=192)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--window", type=int, default=16, help="0 for no sliding window")
    ap.add_argument("--max-positions", type=int, default=1024)
    ap.add_argument("--dtype", default="float16", choices=["float16", "bfloat16", "float32"])
    ap.add_argument("--shards", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--random-len", type=int, default=100)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)

    config = MistralConfig(
        vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.intermediate,
        num_hidden_layers=args.layers, num_attention_heads=args.heads, num_key_value_heads=args.kv_heads,
        head_dim=args.hidden // args.heads, max_position_embeddings=args.max_positions, rope_theta=10000.0,
        rms_norm_eps=1e-5, sliding_window=args.window or None, tie_word_embeddings=False,
        bos_token_id=1, eos_token_id=32000, torch_dtype=args.dtype, attn_implementation="eager",
    )
    model = MistralForCausalLM(config).float().eval()

    # Seeded weights in state_dict order, rounded to the stored dtype; the reference model
    # then computes in float32 from exactly those stored values.
    torch.manual_seed(args.seed)
    stored_dtype = getattr(torch, args.dtype)
    state = {}
    with torch.no_grad():
        for name, p in model.state_dict().items():
            if name.endswith("layernorm.weight") or name == "model.norm.weight":
                t = torch.rand(p.shape) + 0.5
            elif name == "model.embed_tokens.weight":
                t = torch.randn(p.shape)
            else:
                t = torch.randn(p.shape) * (1.5 / p.shape[1] ** 0.5)
            t = t.to(stored_dtype)
            state[name] = t.contiguous()
            p.copy_(t.float())

    config.save_pretrained(args.out)
    names = sorted(state)
    if args.shards == 1:
        save_file(state, os.path.join(args.out, "model.safetensors"), metadata={"format": "pt"})
        files = ["model.safetensors"]
    else:
        per = -(-len(names) // args.shards)
        files, weight_map = [], {}
        for i in range(args.shards):
            part = names[i * per:(i + 1) * per]
            fname = f"model-{i + 1:05d}-of-{args.shards:05d}.safetensors"
            save_file({n: state[n] for n in part}, os.path.join(args.out, fname), metadata={"format": "pt"})
            files.append(fname)
            weight_map.update({n: fname for n in part})
        with open(os.path.join(args.out, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {}, "weight_map": weight_map}, f, indent=2)

    cases = dict(CASES)
    g = torch.Generator().manual_seed(1234)
    cases["d"] = [1] + torch.randint(3, args.vocab, (args.random_len - 1,), generator=g).tolist()

    manifest = {"format": "tiny-mistral golden reference v1", "config": config.to_dict(), "cases": []}
    with torch.no_grad():
        for cid, ids in sorted(cases.items()):
            logits = model(torch.tensor([ids])).logits[0].float()
            path = os.path.join(args.out, f"case_{cid}_logits.f32")
            logits.numpy().astype("<f4").tofile(path)
            seq, greedy, margins = list(ids), [], []
            for _ in range(24):
                last = model(torch.tensor([seq])).logits[0, -1]
                top2 = torch.topk(last, 2).values
                margins.append(float(top2[0] - top2[1]))
                nxt = int(torch.argmax(last))
                greedy.append(nxt)
                seq.append(nxt)
            manifest["cases"].append({
                "id": cid, "input_ids": ids, "seq_len": len(ids),
                "logits": {"file": os.path.basename(path), "dtype": "float32", "shape": list(logits.shape), "sha256": sha256(path)},
                "greedy_recompute": {"new_tokens": greedy, "top1_margin_per_step": margins},
            })
    manifest["files"] = {f: {"bytes": os.path.getsize(os.path.join(args.out, f)), "sha256": sha256(os.path.join(args.out, f))} for f in files}
    with open(os.path.join(args.out, "golden.json"), "w") as f:
        json.dump(manifest, f, indent=1)


if __name__ == "__main__":
    main()
