#!/usr/bin/python3
"""The baseline of bench/learner_bench: the same GRPO training step as
cohort's Trainer::TrainStep, written in Python with PyTorch (Debian's
python3-torch 1.13, the library LibTorch is), the way a single-process
PyTorch trainer (TRL, the reference tiny_grpo.py) writes it:

  policy forward over the padded batch (right padding to the batch's longest
  completion, as TRL pads) -> the hidden states of the completion positions
  only (TRL's logits_to_keep) -> fp32 logits -> log_softmax -> gather, the
  entropy of those logits without grad (TRL logs it every step),
  reference forward without grad (beta > 0), token ratio against the behaviour
  log-probs, clipped surrogate (epsilon 0.2 / 0.28), k3 KL, token-mean over
  the batch (loss_type dapo), backward, clip_grad_norm_(1.0), AdamW step.

The model is the Hugging Face Qwen2/Qwen3 layout (RMSNorm, RoPE, GQA, SwiGLU,
q/k/v biases for qwen2, q/k RMSNorm for qwen3, tied embeddings) read from a
config.json; random weights. Prints one JSON line:
  {"tokens_per_s": ..., "step_seconds": [...], "peak_rss_bytes": ...}

Run by learner_bench (no need to run it by hand):
  /usr/bin/python3 bench/learner_bench.py --config config.json --groups 16 \
      --group_size 8 --prompt_len 16 --completion_len 48 --steps 5
"""
import argparse
import json
import math
import resource
import time

import torch
import torch.nn.functional as F


class Model(torch.nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        d, hd = c["hidden_size"], c["head_dim"]
        h, kvh, inter = c["num_attention_heads"], c["num_key_value_heads"], c["intermediate_size"]
        self.h, self.kvh, self.hd = h, kvh, hd
        self.eps = c["rms_norm_eps"]
        self.qk_norm = c["model_type"] == "qwen3"
        bias = c.get("attention_bias", c["model_type"] == "qwen2")
        P = lambda *s: torch.nn.Parameter(torch.randn(*s) * 0.02)
        self.embed = P(c["vocab_size"], d)
        self.layers = torch.nn.ModuleList()
        for _ in range(c["num_hidden_layers"]):
            L = torch.nn.Module()
            L.n1, L.n2 = torch.nn.Parameter(torch.ones(d)), torch.nn.Parameter(torch.ones(d))
            L.q = torch.nn.Linear(d, h * hd, bias=bias)
            L.k = torch.nn.Linear(d, kvh * hd, bias=bias)
            L.v = torch.nn.Linear(d, kvh * hd, bias=bias)
            L.o = torch.nn.Linear(h * hd, d, bias=False)
            if self.qk_norm:
                L.qn, L.kn = torch.nn.Parameter(torch.ones(hd)), torch.nn.Parameter(torch.ones(hd))
            L.gate = torch.nn.Linear(d, inter, bias=False)
            L.up = torch.nn.Linear(d, inter, bias=False)
            L.down = torch.nn.Linear(inter, d, bias=False)
            self.layers.append(L)
        self.norm = torch.nn.Parameter(torch.ones(d))
        self.lm_head = None if c["tie_word_embeddings"] else P(c["vocab_size"], d)
        inv = 1.0 / (c["rope_theta"] ** (torch.arange(0, hd, 2).float() / hd))
        self.register_buffer("inv_freq", inv, persistent=False)

    def rms(self, x, w):
        x32 = x.float()
        return w * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps))

    def forward(self, ids, mask, keep=None):
        B, T = ids.shape
        pos = (mask.cumsum(1) - 1).clamp(min=0).float()
        freqs = pos[..., None] * self.inv_freq
        emb = torch.cat([freqs, freqs], -1)[:, None]  # [B,1,T,hd]
        cos, sin = emb.cos(), emb.sin()
        allowed = torch.ones(T, T, dtype=torch.bool).tril()[None] & mask.bool()[:, None, :]
        allowed = (allowed | torch.eye(T, dtype=torch.bool)[None])[:, None]
        x = F.embedding(ids, self.embed)

        def rope(t):
            t1, t2 = t[..., : self.hd // 2], t[..., self.hd // 2:]
            return t * cos + torch.cat([-t2, t1], -1) * sin

        g = self.h // self.kvh
        for L in self.layers:
            n = self.rms(x, L.n1)
            q = L.q(n).view(B, T, self.h, self.hd)
            k = L.k(n).view(B, T, self.kvh, self.hd)
            v = L.v(n).view(B, T, self.kvh, self.hd).transpose(1, 2)
            if self.qk_norm:
                q, k = self.rms(q, L.qn), self.rms(k, L.kn)
            q, k = rope(q.transpose(1, 2)), rope(k.transpose(1, 2))
            k = k.repeat_interleave(g, 1)
            v = v.repeat_interleave(g, 1)
            att = (q @ k.transpose(-1, -2)) / math.sqrt(self.hd)
            att = att.masked_fill(~allowed, float("-inf")).softmax(-1)
            y = (att @ v).transpose(1, 2).reshape(B, T, self.h * self.hd)
            x = x + L.o(y)
            n = self.rms(x, L.n2)
            x = x + L.down(F.silu(L.gate(n)) * L.up(n))
        x = self.rms(x, self.norm)
        if keep is not None:
            x = x[:, keep]
        return x @ (self.embed if self.lm_head is None else self.lm_head).t()


def completion_lengths(n, c, varlen):
    """learner_bench.cc's CompletionLengths: c each, or pairs c - d, c + d with
    d = (13 * pair) % (c - 7), so the total is n * c either way."""
    if not varlen:
        return [c] * n
    out = []
    for i in range(n):
        d = (13 * (i // 2)) % (c - 7)
        out.append(c - d if i % 2 == 0 else c + d)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--groups", type=int, default=16)
    ap.add_argument("--group_size", type=int, default=8)
    ap.add_argument("--prompt_len", type=int, default=16)
    ap.add_argument("--completion_len", type=int, default=48)
    ap.add_argument("--beta", type=float, default=0.04)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--varlen", type=int, default=0,
                    help="1: completion lengths vary around completion_len (learner_bench's "
                         "CompletionLengths), padded to the longest")
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    c = json.load(open(args.config))
    model = Model(c)
    ref = None
    if args.beta > 0:
        ref = Model(c)
        ref.load_state_dict(model.state_dict())
        for p in ref.parameters():
            p.requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-6, betas=(0.9, 0.999), weight_decay=0.0)
    n = args.groups * args.group_size
    P, C = args.prompt_len, args.completion_len
    g = torch.Generator().manual_seed(args.seed)
    lengths = completion_lengths(n, C, args.varlen)
    C = max(lengths)  # padded completion width
    seq = torch.randint(0, c["vocab_size"], (n, P + C), generator=g)
    mask = torch.zeros(n, P + C, dtype=torch.long)
    cmask = torch.zeros(n, C)
    for i, l in enumerate(lengths):
        mask[i, : P + l] = 1
        cmask[i, :l] = 1
    comp = seq[:, P:]
    keep = slice(P - 1, P + C - 1)  # the positions that predict completion tokens
    old_lp = torch.full((n, C), -5.0)
    rewards = torch.randint(0, 2, (args.groups, args.group_size), generator=g).float()
    adv = ((rewards - rewards.mean(1, keepdim=True)) / (rewards.std(1, keepdim=True) + 1e-4)).view(-1, 1)
    times, cpu = [], []
    for step in range(args.warmup + args.steps):
        t0 = time.perf_counter()
        c0 = time.process_time()
        logits = model(seq, mask, keep)
        logp_all = torch.log_softmax(logits.float(), -1)
        lp = logp_all.gather(-1, comp[..., None]).squeeze(-1)
        with torch.no_grad():
            entropy = -(logp_all.exp() * logp_all).sum(-1)  # logged, as TRL does
            _ = (entropy * cmask).sum().item()
        ratio = torch.exp(lp - old_lp)
        pg = -torch.min(ratio * adv, ratio.clamp(1 - 0.2, 1 + 0.28) * adv)
        if ref is not None:
            with torch.no_grad():
                ref_lp = torch.log_softmax(ref(seq, mask, keep).float(), -1).gather(
                    -1, comp[..., None]).squeeze(-1)
            d = ref_lp - lp
            pg = pg + args.beta * (torch.exp(d) - d - 1.0)
        loss = (pg * cmask).sum() / cmask.sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step >= args.warmup:
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
    tokens = sum(P + l for l in lengths)  # real tokens, as cohort counts them
    print(json.dumps({"tokens_per_s": tokens * len(times) / sum(times), "step_seconds": times,
                      "tokens_per_cpu_s": tokens * len(cpu) / sum(cpu),
                      "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                      "threads": torch.get_num_threads(), "torch": torch.__version__}))


if __name__ == "__main__":
    main()
