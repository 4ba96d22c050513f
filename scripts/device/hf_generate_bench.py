#!/usr/bin/env python3
"""Hugging Face transformers side of cohort's GPU figures (docs/gpu.md).

  hf_generate_bench.py --make-model DIR
      writes a random qwen2.5-0.5b-shaped Qwen2ForCausalLM (transformers'
      own init, seed 0, bf16 safetensors) to DIR; cohort's gpu_bench loads
      the same directory, so both run the same weights.
  hf_generate_bench.py --model DIR [--variants eager,static_compile]
                       [--batches 1,64,256] [--prompt 128] [--new_tokens 128]
      greedy `generate` of --new_tokens tokens after --prompt random ids,
      bf16 on cuda:0; min_new_tokens = max_new_tokens so every sequence runs
      the full length. Decode tokens/s = batch x (new_tokens - 1) / (time of
      the full generate - time of a 1-token generate), i.e. without the
      prefill, as cohort's figure. Variants:
        eager           transformers' default (dynamic cache, default attention)
        static_compile  cache_implementation="static" + torch.compile of the
                        forward (mode reduce-overhead); its compile time is
                        reported separately
      One JSON object per line, flushed as measured.
  hf_generate_bench.py --summary FIGURES.jsonl
      the issue's ratios from gpu_check.sh's figures (JSON on stdout).
"""
import argparse
import json
import sys
import time


def emit(obj):
    print(json.dumps(obj), flush=True)


def make_model(path):
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM
    config = Qwen2Config(vocab_size=151936, hidden_size=896, intermediate_size=4864,
                         num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                         max_position_embeddings=32768, rope_theta=1000000.0, rms_norm_eps=1e-6,
                         tie_word_embeddings=True, use_sliding_window=False,
                         bos_token_id=151643, eos_token_id=151643)
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = Qwen2ForCausalLM(config)
    model = model.to(torch.bfloat16)
    model.save_pretrained(path, safe_serialization=True)
    print(f"wrote {path}: {sum(p.numel() for p in model.parameters())} parameters", flush=True)


def bench(args):
    import torch
    import transformers
    from transformers import AutoModelForCausalLM
    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    dtype_kw = {"dtype" if (major, minor) >= (4, 56) else "torch_dtype": torch.bfloat16}
    for variant in args.variants.split(","):
        model = AutoModelForCausalLM.from_pretrained(args.model, **dtype_kw).to("cuda").eval()
        extra = {}
        if variant == "static_compile":
            extra["cache_implementation"] = "static"
            model.forward = torch.compile(model.forward, mode="reduce-overhead", fullgraph=True)
        elif variant != "eager":
            print(f"unknown variant {variant}", file=sys.stderr)
            return 2
        vocab = model.config.vocab_size
        for batch in (int(b) for b in args.batches.split(",")):
            gen = torch.Generator(device="cpu").manual_seed(batch)
            ids = torch.randint(0, vocab, (batch, args.prompt), generator=gen).to("cuda")
            mask = torch.ones_like(ids)

            def run(n):
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                with torch.inference_mode():
                    out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=n,
                                         min_new_tokens=n, do_sample=False, pad_token_id=0,
                                         **extra)
                torch.cuda.synchronize()
                assert out.shape[1] == args.prompt + n, out.shape
                return time.perf_counter() - t0

            t0 = time.perf_counter()
            run(args.new_tokens)  # warm-up (and compilation)
            warm = time.perf_counter() - t0
            full = min(run(args.new_tokens) for _ in range(2))
            one = min(run(1) for _ in range(2))
            decode = max(full - one, 1e-9)
            emit({"figure": "hf_decode", "variant": variant, "batch": batch,
                  "prompt": args.prompt, "new_tokens": args.new_tokens,
                  "tokens_per_s": batch * (args.new_tokens - 1) / decode,
                  "e2e_tokens_per_s": batch * args.new_tokens / full,
                  "warmup_seconds": warm, "torch": torch.__version__,
                  "transformers": transformers.__version__})
        del model
        torch.cuda.empty_cache()
    return 0


def summary(path):
    figs = []
    with open(path) as f:
        for line in f:
            try:
                figs.append(json.loads(line))
            except ValueError:
                pass

    def pick(**kw):
        for x in figs:
            if all(x.get(k) == v for k, v in kw.items()):
                return x
        return None

    out = {}
    for b in (1, 64, 256):
        cg = pick(figure="decode", batch=b, mode="cuda_graphs")
        ea = pick(figure="decode", batch=b, mode="eager")
        hf = pick(figure="hf_decode", batch=b, variant="eager")
        hc = pick(figure="hf_decode", batch=b, variant="static_compile")
        row = {}
        if cg:
            row["cohort_graphs_tokens_per_s"] = cg["tokens_per_s"]
            row["roofline_fraction"] = cg["roofline_fraction"]
        if ea:
            row["cohort_eager_tokens_per_s"] = ea["tokens_per_s"]
        if cg and hf:
            row["x_hf_eager"] = cg["tokens_per_s"] / hf["tokens_per_s"]
        if cg and hc:
            row["x_hf_static_compile"] = cg["tokens_per_s"] / hc["tokens_per_s"]
        out[f"batch_{b}"] = row
    goals = {}
    b64, b256 = out.get("batch_64", {}), out.get("batch_256", {})
    if "x_hf_eager" in b64:
        goals["batch64_ge_5x_hf_eager"] = b64["x_hf_eager"] >= 5
    if "x_hf_static_compile" in b64:
        goals["batch64_ge_1.2x_hf_best"] = b64["x_hf_static_compile"] >= 1.2
    if "roofline_fraction" in b256:
        goals["batch256_ge_30pct_roofline"] = b256["roofline_fraction"] >= 0.3
    tr = pick(figure="train")
    if tr:
        out["train"] = {k: tr[k] for k in ("tokens_per_s", "mfu_vs_989TF", "mfu_vs_measured_matmul")}
        goals["train_mfu_ge_35pct"] = tr["mfu_vs_989TF"] >= 0.35
    st = pick(figure="staging")
    if st:
        out["staging"] = st
    pk = pick(figure="cudamemcpy_peak")
    if pk:
        out["cudamemcpy_peak"] = pk
    out["goals"] = goals
    out["errors"] = [x for x in figs if x.get("figure") == "error"]
    print(json.dumps(out, indent=1))
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--make-model")
    ap.add_argument("--model")
    ap.add_argument("--summary")
    ap.add_argument("--variants", default="eager,static_compile")
    ap.add_argument("--batches", default="1,64,256")
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--new_tokens", type=int, default=128)
    args = ap.parse_args()
    if args.make_model:
        make_model(args.make_model)
        return 0
    if args.summary:
        return summary(args.summary)
    if args.model:
        return bench(args)
    ap.print_usage()
    return 2


if __name__ == "__main__":
    sys.exit(main())
