// GPU benchmark: the figures of docs/gpu.md, one JSON object per line on
// stdout (flushed as each is measured, so a killed run keeps what it had).
//
//   gpu_bench [--model_dir DIR] [--sections roofline,decode,train,staging]
//             [--batches 1,64,256] [--prompt 128] [--new_tokens 128]
//             [--train_batch 8] [--train_len 1024] [--train_steps 3]
//
// roofline  copy bandwidth (2 x bytes / s of a 4 GiB device copy) and the
//           bf16 matmul rate (8192^3 at::mm); the ceilings the other
//           figures are compared with.
// decode    a qwen2.5-0.5b model (DIR: a Hugging Face directory, the same
//           weights transformers is run on; default random weights) in bf16:
//           per batch, prompts of --prompt ids prefilled together, then
//           --new_tokens greedy steps (arg-max on the device), eager
//           (Transformer::Decode) and replayed from CUDA graphs
//           (CudaGraphDecoder); tokens/s and the fraction of the roofline:
//           max(bytes / copy bandwidth, flops / matmul rate) per step, bytes
//           = weights read + K/V rows read, flops = 2 x params x batch +
//           attention. Then the engine end to end (sampling on the CPU).
// train     a qwen2.5-1.5b-shaped policy, bf16 weights with fp32 master
//           weights and AdamW: score --train_batch x --train_len tokens with
//           gradients (TokenLogProbs), a clipped-ratio policy loss, backward,
//           optimizer step. tokens/s and MFU = (6 N + 12 L d T) x tokens /
//           s / peak, against the H200's 989 TFLOP/s dense bf16 datasheet
//           peak and against the matmul rate measured here.
// staging   the 1.5b policy's parameters copied to pinned host memory (the
//           fetchable copy the learner serves) and back: seconds and GB/s,
//           against cudaMemcpy between pinned buffers (COHORT_WITH_CUDA).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <future>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/strings/str_split.h"
#include "model/aten.h"
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/grad_mode.h>

#include "core/flags.h"
#include "model/checkpoint.h"
#include "model/cuda_graph_decoder.h"
#include "model/engine.h"
#include "model/gpu.h"
#include "model/kv_cache.h"
#include "model/scoring.h"
#include "model/transformer.h"

#if COHORT_BENCH_CUDART
#include <cuda_runtime_api.h>
#endif

namespace cohort::model {
namespace {

using Clock = std::chrono::steady_clock;
constexpr double kPeakBf16 = 989e12;  // H100/H200 SXM dense bf16, datasheet

double Seconds(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

void Emit(nlohmann::json j) {
  std::printf("%s\n", j.dump().c_str());
  std::fflush(stdout);
}

const at::Device kGpu(at::kCUDA, 0);

// Waits for the device: a device-to-host copy waits for the stream.
void Sync() { at::zeros({1}, at::TensorOptions().device(kGpu)).cpu(); }

struct Ceilings {
  double copy_bytes_per_s = 0;
  double matmul_flops = 0;
};

Ceilings MeasureCeilings() {
  Ceilings c;
  at::Tensor a = at::empty({int64_t{1} << 30}, at::TensorOptions().dtype(at::kFloat).device(kGpu));
  at::Tensor b = at::empty_like(a);
  a.fill_(1);
  b.copy_(a);
  Sync();
  double best = 1e9;
  for (int i = 0; i < 10; ++i) {
    auto t0 = Clock::now();
    b.copy_(a);
    Sync();
    best = std::min(best, Seconds(t0));
  }
  c.copy_bytes_per_s = 2.0 * a.numel() * 4 / best;
  a = at::Tensor();
  b = at::Tensor();
  const int64_t n = 8192;
  auto bf = at::TensorOptions().dtype(at::kBFloat16).device(kGpu);
  at::Tensor x = at::randn({n, n}, bf), y = at::randn({n, n}, bf);
  at::Tensor z = at::mm(x, y);
  Sync();
  auto t0 = Clock::now();
  const int reps = 10;
  for (int i = 0; i < reps; ++i) at::mm_out(z, x, y);
  Sync();
  c.matmul_flops = 2.0 * n * n * n * reps / Seconds(t0);
  Emit({{"figure", "roofline"},
        {"copy_GBps", c.copy_bytes_per_s / 1e9},
        {"bf16_matmul_TFLOPs", c.matmul_flops / 1e12},
        {"device", "cuda:0"}});
  return c;
}

// Random weights made on the device (fast for billions of parameters):
// normal(0, 0.02) matrices, ones for norms, zeros for biases.
TensorMap DeviceRandomWeights(const ModelConfig& config, at::ScalarType dtype) {
  TensorMap w;
  auto opts = at::TensorOptions().dtype(dtype).device(kGpu);
  for (const auto& [name, shape] : Transformer::ExpectedWeightShapes(config)) {
    if (name.find("norm") != std::string::npos) {
      w[name] = at::ones(shape, opts);
    } else if (name.size() > 5 && name.compare(name.size() - 5, 5, ".bias") == 0) {
      w[name] = at::zeros(shape, opts);
    } else {
      w[name] = at::empty(shape, opts).normal_(0, 0.02);
    }
  }
  return w;
}

int64_t Params(const TensorMap& w) {
  int64_t n = 0;
  for (const auto& [name, t] : w) n += t.numel();
  return n;
}

// --- decode ------------------------------------------------------------------

struct DecodeRun {
  double seconds = 0;
  int64_t steps = 0;
};

DecodeRun TimeDecode(const Transformer& m, KvCache& cache, CudaGraphDecoder* graphs,
                     const std::vector<std::vector<int32_t>>& prompts, int64_t new_tokens) {
  const int64_t b = static_cast<int64_t>(prompts.size());
  std::vector<int64_t> slots(b);
  for (int64_t i = 0; i < b; ++i) {
    slots[i] = i;
    cache.Reset(i);
  }
  at::Tensor first = m.PrefillBatch(cache, slots, prompts).value();
  at::Tensor next = first.argmax(-1).to(at::kCPU, at::kInt);
  std::vector<int32_t> tokens(next.data_ptr<int32_t>(), next.data_ptr<int32_t>() + b);
  Sync();
  auto t0 = Clock::now();
  DecodeRun run;
  for (int64_t s = 1; s < new_tokens; ++s) {
    absl::StatusOr<at::Tensor> logits =
        graphs != nullptr ? graphs->Decode(slots, tokens) : m.Decode(cache, slots, tokens);
    if (!logits.ok()) {
      Emit({{"figure", "error"}, {"where", "decode"}, {"status", logits.status().ToString()}});
      return run;
    }
    next = logits->argmax(-1).to(at::kCPU, at::kInt);
    std::copy(next.data_ptr<int32_t>(), next.data_ptr<int32_t>() + b, tokens.begin());
    ++run.steps;
  }
  run.seconds = Seconds(t0);
  return run;
}

void DecodeSection(const std::string& model_dir, const std::vector<int64_t>& batches,
                   int64_t prompt_len, int64_t new_tokens, const Ceilings& ceil) {
  ModelConfig config;
  TensorMap weights;
  if (!model_dir.empty()) {
    absl::StatusOr<LoadedModel> loaded = LoadModelDir(model_dir, at::kBFloat16);
    if (!loaded.ok()) {
      Emit({{"figure", "error"}, {"where", "load"}, {"status", loaded.status().ToString()}});
      return;
    }
    config = loaded->config;
    weights = std::move(loaded->weights);
  } else {
    config = PresetConfig("qwen2.5-0.5b").value();
    weights = DeviceRandomWeights(config, at::kBFloat16);
  }
  auto model = Transformer::Create(config, std::move(weights), at::kBFloat16, kGpu);
  if (!model.ok()) {
    Emit({{"figure", "error"}, {"where", "create"}, {"status", model.status().ToString()}});
    return;
  }
  const Transformer& m = **model;
  const int64_t params = Params(m.weights());
  const int64_t max_len = prompt_len + new_tokens + 1;
  const int64_t hd = m.config().head_dim, layers = m.config().num_hidden_layers;
  const int64_t q_width = m.config().num_attention_heads * hd;
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(7);
  for (int64_t b : batches) {
    auto cache = KvCache::Create(m.config(), b, max_len, at::kBFloat16, kGpu);
    if (!cache.ok()) {
      Emit({{"figure", "error"}, {"where", "kv cache"}, {"status", cache.status().ToString()}});
      continue;
    }
    std::vector<std::vector<int32_t>> prompts(b);
    at::Tensor ids = at::randint(0, m.config().vocab_size, {b, prompt_len}, gen, at::kInt);
    for (int64_t i = 0; i < b; ++i) {
      prompts[i].assign(ids[i].data_ptr<int32_t>(), ids[i].data_ptr<int32_t>() + prompt_len);
    }
    // Per step: all weights once + each sequence's K/V rows (mean context).
    const double ctx = prompt_len + new_tokens / 2.0;
    const double bytes = m.DecodeWeightBytes() + b * ctx * cache->BytesPerPosition();
    const double flops = 2.0 * params * b + 4.0 * layers * q_width * ctx * b;
    const double step_s = std::max(bytes / ceil.copy_bytes_per_s, flops / ceil.matmul_flops);
    const double roofline_tps = b / step_s;
    absl::StatusOr<std::unique_ptr<CudaGraphDecoder>> graphs = CudaGraphDecoder::Create(m, *cache);
    for (bool use_graphs : {false, true}) {
      if (use_graphs && !graphs.ok()) {
        Emit({{"figure", "error"}, {"where", "graphs"}, {"status", graphs.status().ToString()}});
        continue;
      }
      CudaGraphDecoder* g = use_graphs ? graphs->get() : nullptr;
      TimeDecode(m, *cache, g, prompts, std::min<int64_t>(new_tokens, 8));  // warm-up, capture
      DecodeRun run = TimeDecode(m, *cache, g, prompts, new_tokens);
      if (run.steps == 0) continue;
      const double tps = b * run.steps / run.seconds;
      Emit({{"figure", "decode"},
            {"model", "qwen2.5-0.5b"},
            {"batch", b},
            {"mode", use_graphs ? "cuda_graphs" : "eager"},
            {"prompt", prompt_len},
            {"new_tokens", new_tokens},
            {"tokens_per_s", tps},
            {"ms_per_step", 1e3 * run.seconds / run.steps},
            {"roofline_tokens_per_s", roofline_tps},
            {"roofline_fraction", tps / roofline_tps},
            {"bound",
             bytes / ceil.copy_bytes_per_s > flops / ceil.matmul_flops ? "memory" : "compute"}});
    }
  }
  // The engine end to end at the middle batch: scheduling, sampling on the
  // CPU (log-softmax + draw), CUDA graphs.
  const int64_t b = batches.size() > 1 ? batches[1] : batches[0];
  TensorMap copy;
  for (const auto& [name, t] : m.weights()) copy[name] = t;
  auto em = Transformer::Create(m.config(), copy, at::kBFloat16, kGpu).value();
  EngineOptions eo;
  eo.num_slots = b;
  eo.max_len = max_len;
  auto engine = Engine::Create(std::move(em), eo);
  if (!engine.ok()) return;
  std::vector<std::future<absl::StatusOr<GenerationResult>>> futures;
  auto t0 = Clock::now();
  for (int64_t i = 0; i < b; ++i) {
    GenerationRequest r;
    r.prompt.assign(prompt_len, static_cast<int32_t>(1 + i));
    r.params.temperature = 1.0;
    r.params.max_new_tokens = new_tokens;
    r.params.seed = i;
    futures.push_back((*engine)->Submit(std::move(r)));
  }
  (*engine)->RunUntilIdle();
  const double s = Seconds(t0);
  EngineStats st = (*engine)->stats();
  Emit({{"figure", "engine"},
        {"model", "qwen2.5-0.5b"},
        {"batch", b},
        {"tokens_per_s", st.generated_tokens / s},
        {"seconds", s},
        {"note", "sampling over the full vocabulary on the CPU, prefill one prompt at a time"}});
}

// --- train -------------------------------------------------------------------

ModelConfig Qwen15bConfig() {
  ModelConfig c = PresetConfig("qwen2.5-0.5b").value();
  c.hidden_size = 1536;
  c.intermediate_size = 8960;
  c.num_hidden_layers = 28;
  c.num_attention_heads = 12;
  c.num_key_value_heads = 2;
  c.head_dim = 128;
  return c;
}

void TrainSection(int64_t batch, int64_t len, int64_t steps, const Ceilings& ceil) {
  const ModelConfig config = Qwen15bConfig();
  auto model =
      Transformer::Create(config, DeviceRandomWeights(config, at::kBFloat16), at::kBFloat16, kGpu);
  if (!model.ok()) {
    Emit({{"figure", "error"}, {"where", "train create"}, {"status", model.status().ToString()}});
    return;
  }
  Transformer& m = **model;
  // fp32 master weights and AdamW moments; bf16 weights used by the model.
  std::vector<at::Tensor> params, master, m1, m2;
  for (auto& [name, t] : m.weights()) {
    t.set_requires_grad(true);
    params.push_back(t);
    master.push_back(t.detach().to(at::kFloat));
    m1.push_back(at::zeros_like(master.back()));
    m2.push_back(at::zeros_like(master.back()));
  }
  const int64_t n_params = Params(m.weights());
  at::Tensor tokens = at::randint(0, config.vocab_size, {batch, len},
                                  at::TensorOptions().dtype(at::kLong).device(kGpu));
  at::Tensor mask = at::ones({batch, len}, tokens.options());
  at::Tensor adv = at::randn({batch, 1}, at::TensorOptions().device(kGpu));
  at::Tensor old_lp;
  const double lr = 1e-6, b1 = 0.9, b2 = 0.999, eps = 1e-8, wd = 0.0;
  auto step = [&](int64_t t) -> bool {
    ScoreOptions so;
    so.keep_graph = true;
    absl::StatusOr<at::Tensor> lp = TokenLogProbs(m, tokens, mask, so);
    if (!lp.ok()) {
      Emit({{"figure", "error"}, {"where", "train score"}, {"status", lp.status().ToString()}});
      return false;
    }
    if (!old_lp.defined()) old_lp = lp->detach();
    at::Tensor ratio = at::exp(*lp - old_lp);
    at::Tensor surrogate = at::min(ratio * adv, at::clamp(ratio, 0.8, 1.28) * adv);
    at::Tensor loss = -surrogate.mean();
    loss.backward();
    at::NoGradGuard no_grad;
    const double c1 = 1 - std::pow(b1, t), c2 = 1 - std::pow(b2, t);
    for (size_t i = 0; i < params.size(); ++i) {
      at::Tensor g = params[i].grad().to(at::kFloat);
      m1[i].mul_(b1).add_(g, 1 - b1);
      m2[i].mul_(b2).addcmul_(g, g, 1 - b2);
      master[i].mul_(1 - lr * wd).addcdiv_(m1[i] / c1, (m2[i] / c2).sqrt_().add_(eps), -lr);
      params[i].copy_(master[i]);
      params[i].mutable_grad() = at::Tensor();
    }
    return true;
  };
  if (!step(1)) return;  // warm-up
  Sync();
  auto t0 = Clock::now();
  for (int64_t s = 0; s < steps; ++s) {
    if (!step(s + 2)) return;
  }
  Sync();
  const double seconds = Seconds(t0) / steps;
  const double tokens_per_step = static_cast<double>(batch * len);
  // PaLM's accounting: 6 N per token (N without the embedding lookup; the
  // tied output projection counted once) + 12 L d T for attention.
  const double n = static_cast<double>(n_params);
  const double flops_per_token = 6.0 * n + 12.0 * config.num_hidden_layers *
                                               config.num_attention_heads * config.head_dim * len;
  const double achieved = flops_per_token * tokens_per_step / seconds;
  Emit(
      {{"figure", "train"},
       {"model", "qwen2.5-1.5b shape"},
       {"params", n_params},
       {"batch", batch},
       {"seq_len", len},
       {"seconds_per_step", seconds},
       {"tokens_per_s", tokens_per_step / seconds},
       {"achieved_TFLOPs", achieved / 1e12},
       {"mfu_vs_989TF", achieved / kPeakBf16},
       {"mfu_vs_measured_matmul", achieved / ceil.matmul_flops},
       {"note", "bf16 weights, fp32 master + AdamW, fp32 log-probs and loss; no reference model"}});
}

// --- staging -----------------------------------------------------------------

void StagingSection() {
  const ModelConfig config = Qwen15bConfig();
  TensorMap w = DeviceRandomWeights(config, at::kBFloat16);
  double bytes = 0;
  std::vector<at::Tensor> host;
  for (const auto& [name, t] : w) {
    bytes += t.numel() * 2.0;
    host.push_back(
        at::empty(t.sizes(), at::TensorOptions().dtype(t.scalar_type()).pinned_memory(true)));
  }
  Sync();
  for (int rep = 0; rep < 2; ++rep) {  // the second is the figure (pinned pages touched)
    auto t0 = Clock::now();
    size_t i = 0;
    for (const auto& [name, t] : w) host[i++].copy_(t, /*non_blocking=*/true);
    Sync();
    const double d2h = Seconds(t0);
    t0 = Clock::now();
    i = 0;
    for (auto& [name, t] : w) t.copy_(host[i++], /*non_blocking=*/true);
    Sync();
    const double h2d = Seconds(t0);
    // A pageable copy (what a plain .cpu() gives).
    t0 = Clock::now();
    for (const auto& [name, t] : w) (void)t.cpu();
    const double pageable = Seconds(t0);
    if (rep == 1) {
      Emit({{"figure", "staging"},
            {"model", "qwen2.5-1.5b shape"},
            {"bytes", bytes},
            {"stage_seconds_pinned", d2h},
            {"d2h_GBps_pinned", bytes / d2h / 1e9},
            {"h2d_GBps_pinned", bytes / h2d / 1e9},
            {"stage_seconds_pageable", pageable},
            {"d2h_GBps_pageable", bytes / pageable / 1e9}});
    }
  }
#if COHORT_BENCH_CUDART
  const size_t n = size_t{1} << 30;
  void *h = nullptr, *d = nullptr;
  if (cudaMallocHost(&h, n) == cudaSuccess && cudaMalloc(&d, n) == cudaSuccess) {
    cudaMemcpy(d, h, n, cudaMemcpyHostToDevice);
    auto t0 = Clock::now();
    for (int i = 0; i < 5; ++i) cudaMemcpy(d, h, n, cudaMemcpyHostToDevice);
    const double h2d = Seconds(t0) / 5;
    t0 = Clock::now();
    for (int i = 0; i < 5; ++i) cudaMemcpy(h, d, n, cudaMemcpyDeviceToHost);
    const double d2h = Seconds(t0) / 5;
    Emit({{"figure", "cudamemcpy_peak"},
          {"bytes", static_cast<double>(n)},
          {"h2d_GBps", n / h2d / 1e9},
          {"d2h_GBps", n / d2h / 1e9}});
  }
  if (d != nullptr) cudaFree(d);
  if (h != nullptr) cudaFreeHost(h);
#endif
}

std::vector<int64_t> Ints(const std::string& s) {
  std::vector<int64_t> out;
  for (absl::string_view p : absl::StrSplit(s, ',', absl::SkipEmpty())) {
    out.push_back(std::stoll(std::string(p)));
  }
  return out;
}

int Main(int argc, char** argv) {
  std::string model_dir, sections = "roofline,decode,train,staging", batches = "1,64,256";
  int64_t prompt = 128, new_tokens = 128, train_batch = 8, train_len = 1024, train_steps = 3;
  FlagSet flags("gpu_bench", "GPU figures (docs/gpu.md) as JSON lines.");
  flags.String("model_dir", &model_dir, "qwen2.5-0.5b HF directory for decode (default random).");
  flags.String("sections", &sections, "Comma-separated: roofline, decode, train, staging.");
  flags.String("batches", &batches, "Decode batch sizes.");
  flags.Int("prompt", &prompt, "Prompt tokens per sequence (decode).");
  flags.Int("new_tokens", &new_tokens, "Generated tokens per sequence (decode).");
  flags.Int("train_batch", &train_batch, "Sequences per training step.");
  flags.Int("train_len", &train_len, "Tokens per training sequence.");
  flags.Int("train_steps", &train_steps, "Timed training steps.");
  ParseFlagsOrExit(flags, argc, argv);
  if (!CudaPresent()) {
    Emit({{"figure", "skipped"}, {"reason", "no CUDA (LibTorch without CUDA or no device)"}});
    return 0;
  }
  auto has = [&](const char* s) { return sections.find(s) != std::string::npos; };
  Ceilings ceil = MeasureCeilings();
  try {
    if (has("decode")) DecodeSection(model_dir, Ints(batches), prompt, new_tokens, ceil);
    if (has("train")) TrainSection(train_batch, train_len, train_steps, ceil);
    if (has("staging")) StagingSection();
  } catch (const std::exception& e) {
    Emit({{"figure", "error"}, {"where", "exception"}, {"status", e.what()}});
    return 1;
  }
  return 0;
}

}  // namespace
}  // namespace cohort::model

int main(int argc, char** argv) { return cohort::model::Main(argc, argv); }
