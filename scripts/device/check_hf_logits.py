#!/usr/bin/env python3
"""Loads a model directory with Hugging Face transformers and compares its
fp32 logits with cohort's (the Hugging Face reference check).

Needs python3 with torch and transformers; no C++ and nothing from cohort's
build. cohort's side is a JSON file written by `cohort-dump-logits`
({"ids": [...], "shape": [T, V], "logits": [[...], ...]}); the ids are read
from it unless --ids is given.

  check_hf_logits.py --model DIR --cohort-logits cohort_logits.json \
      [--device cpu|cuda] [--tol 1e-4] [--out hf_logits.json]

Exit status: 0 when max |cohort - transformers| <= tol (or when there is
nothing to compare with and --out was written), 1 when it is larger, 2 on
a usage or loading problem (missing or unexpected weights included: a
weight transformers had to initialise itself would make the check
meaningless).
"""
import argparse
import json
import sys


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="model directory (config.json + safetensors)")
    ap.add_argument("--cohort-logits", help="JSON written by cohort-dump-logits")
    ap.add_argument("--ids", help="comma-separated ids (default: those in --cohort-logits)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--tol", type=float, default=1e-4, help="max abs diff allowed")
    ap.add_argument("--out", help="write transformers' logits here (same JSON layout)")
    args = ap.parse_args()

    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    # fp32 means fp32: no TF32 matmuls on the GPU.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")

    cohort = None
    if args.cohort_logits:
        with open(args.cohort_logits) as f:
            cohort = json.load(f)
    if args.ids:
        ids = [int(x) for x in args.ids.split(",") if x.strip()]
    elif cohort is not None:
        ids = cohort["ids"]
    else:
        print("need --ids or --cohort-logits", file=sys.stderr)
        return 2

    # transformers >= 4.56 names the argument dtype; older ones torch_dtype.
    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    dtype_kw = {"dtype" if (major, minor) >= (4, 56) else "torch_dtype": torch.float32}
    model, info = AutoModelForCausalLM.from_pretrained(
        args.model, attn_implementation="eager", output_loading_info=True, **dtype_kw)
    if any(p.dtype != torch.float32 for p in model.parameters()):
        print(f"{args.model}: transformers did not load the weights as float32", file=sys.stderr)
        return 2
    problems = {k: v for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys",
                                                               "mismatched_keys")}
    if problems:
        print(f"{args.model}: transformers did not load the weights cleanly: {problems}",
              file=sys.stderr)
        return 2
    model = model.to(args.device).eval()
    with torch.no_grad():
        input_ids = torch.tensor([ids], dtype=torch.long, device=args.device)
        logits = model(input_ids=input_ids).logits[0].float().cpu()

    versions = {"torch": torch.__version__, "transformers": transformers.__version__,
                "device": args.device,
                "gpu": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else None}
    if args.out:
        with open(args.out, "w") as f:
            f.write(json.dumps({"model": args.model, "ids": ids, "dtype": "float32",
                                "shape": list(logits.shape), "versions": versions}
                               )[:-1] + ', "logits": [')
            for t in range(logits.shape[0]):
                row = ",".join(repr(float(x)) for x in logits[t].tolist())
                f.write(("," if t else "") + "\n[" + row + "]")
            f.write("]}\n")
    result = {"model": args.model, "tokens": len(ids), "vocab": logits.shape[1], **versions}
    status = 0
    if cohort is not None:
        theirs = torch.tensor(cohort["logits"], dtype=torch.float32)
        if list(theirs.shape) != list(logits.shape):
            print(f"shape mismatch: cohort {list(theirs.shape)} vs transformers "
                  f"{list(logits.shape)}", file=sys.stderr)
            return 1
        diff = (theirs - logits).abs()
        result["max_abs_diff"] = float(diff.max())
        result["mean_abs_diff"] = float(diff.mean())
        result["argmax_agree"] = float((theirs.argmax(-1) == logits.argmax(-1)).float().mean())
        result["tol"] = args.tol
        result["ok"] = result["max_abs_diff"] <= args.tol
        status = 0 if result["ok"] else 1
    print(json.dumps(result))
    return status


if __name__ == "__main__":
    sys.exit(main())
