// Generation engine benchmark: decode tokens/s and the fraction of the
// memory-bandwidth roofline, prefill tokens/s, and the speed-up from prefix
// sharing, on random weights (no download). Prints one JSON object per line.
//
// Roofline: a decode step must read every weight it uses once (all layers,
// the final norm and the output projection) plus the K/V rows of each active
// sequence. roofline_tokens_per_s = batch * copy_bandwidth / bytes_per_step,
// where copy_bandwidth = 2 * bytes / seconds of a large tensor copy (read +
// write traffic) measured in the same run with the same threads (the best of
// the start of the run and right after each decode measurement).
//
//   engine_bench [--shapes tiny,qwen2.5-0.5b] [--batches 1,8,64]
//                [--threads N] [--quick]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/strings/str_split.h"
#include "model/aten.h"
#include <ATen/Parallel.h>
#include "model/checkpoint.h"
#include "core/flags.h"
#include "model/engine.h"
#include "model/kv_cache.h"
#include "model/model_config.h"
#include "model/tiny_model.h"
#include "model/transformer.h"

namespace cohort::model {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

void Emit(const nlohmann::json& j) {
  std::printf("%s\n", j.dump().c_str());
  std::fflush(stdout);
}

// The benchmark shapes are init-model's presets (model/checkpoint.h), plus
// `tiny-qwen3-vocab`: the tiny preset with the Qwen3 tokenizer's vocabulary
// (151,680), which is what the quickstart trains.
absl::StatusOr<ModelConfig> Shape(const std::string& name) {
  if (name == "tiny-qwen3-vocab") {
    absl::StatusOr<ModelConfig> c = PresetConfig("tiny");
    if (c.ok()) c->vocab_size = 151680;
    return c;
  }
  return PresetConfig(name);
}

// Bytes/s of a large tensor copy, counting read + write traffic; best of 5.
double CopyBandwidth() {
  const int64_t n = int64_t{256} << 20;  // 1 GiB of floats per buffer
  at::Tensor src = at::ones({n / 4}, at::kFloat);
  at::Tensor dst = at::empty({n / 4}, at::kFloat);
  dst.copy_(src);  // touch
  double best = 1e9;
  for (int i = 0; i < 5; ++i) {
    auto start = Clock::now();
    dst.copy_(src);
    best = std::min(best, Seconds(start));
  }
  return 2.0 * static_cast<double>(n) / best;
}

int Run(int argc, char** argv) {
  std::string shapes = "tiny,qwen2.5-0.5b";
  int64_t threads = 0;
  bool quick = false;
  std::string batches = "1,8,64";
  FlagSet flags("engine_bench",
                "Decode/prefill throughput and roofline of the generation "
                "engine on random weights; JSON lines on stdout.");
  flags.String("shapes", &shapes, "Comma-separated: tiny, tiny-qwen3-vocab, qwen2.5-0.5b.");
  flags.Int("threads", &threads, "ATen intra-op threads (0: keep default).");
  flags.Bool("quick", &quick, "Fewer steps (a smoke run).");
  flags.String("batches", &batches, "Comma-separated decode batch sizes.");
  ParseFlagsOrExit(flags, argc, argv);
  if (threads > 0) at::set_num_threads(static_cast<int>(threads));

  const double bandwidth = CopyBandwidth();
  Emit({{"bench", "copy_bandwidth"},
        {"threads", at::get_num_threads()},
        {"gbytes_per_s", bandwidth / 1e9}});

  for (const std::string& name : std::vector<std::string>(absl::StrSplit(shapes, ','))) {
    absl::StatusOr<ModelConfig> config = Shape(name);
    if (!config.ok()) {
      std::fprintf(stderr, "%s\n", std::string(config.status().message()).c_str());
      return 2;
    }
    const bool big = config->hidden_size >= 512;
    auto start = Clock::now();
    TensorMap weights = testing::RandomWeights(*config, 1, 0.02);
    auto created = Transformer::Create(*config, std::move(weights), at::kFloat, at::kCPU);
    if (!created.ok()) {
      std::fprintf(stderr, "%s\n", std::string(created.status().message()).c_str());
      return 1;
    }
    std::unique_ptr<Transformer> model = std::move(created).value();
    const double init_s = Seconds(start);
    const int64_t weight_bytes = model->DecodeWeightBytes();

    // Prefill throughput: one prompt into one slot.
    {
      const int64_t prompt_len = big ? 128 : 512;
      auto cache = KvCache::Create(*config, 1, prompt_len, at::kFloat, at::kCPU);
      std::vector<int32_t> prompt(prompt_len);
      for (int64_t i = 0; i < prompt_len; ++i) prompt[i] = (i * 7919) % 1000;
      (void)model->Prefill(*cache, 0, std::vector<int32_t>(prompt.begin(), prompt.begin() + 8));
      cache->Reset(0);
      start = Clock::now();
      auto logits = model->Prefill(*cache, 0, prompt);
      const double s = Seconds(start);
      if (!logits.ok()) return 1;
      Emit({{"bench", "prefill"},
            {"shape", name},
            {"prompt_tokens", prompt_len},
            {"tokens_per_s", prompt_len / s},
            {"init_s", init_s}});
    }

    // Decode throughput at batch 1, 8, 64 (model step + sampling).
    const int64_t context = 64;  // tokens already in each slot
    for (const std::string& batch_text : std::vector<std::string>(absl::StrSplit(batches, ','))) {
      const int64_t batch = std::stoll(batch_text);
      const int64_t steps = quick ? 2 : (big ? (batch == 64 ? 4 : 8) : 32);
      auto cache = KvCache::Create(*config, batch, context + steps + 2, at::kFloat, at::kCPU);
      std::vector<int32_t> prompt(context);
      for (int64_t i = 0; i < context; ++i) prompt[i] = (i * 31 + 5) % 1000;
      if (!model->Prefill(*cache, 0, prompt).ok()) return 1;
      for (int64_t s = 1; s < batch; ++s) cache->CopyPrefix(0, s, context);
      std::vector<int64_t> slots(batch);
      std::vector<int32_t> tokens(batch);
      for (int64_t s = 0; s < batch; ++s) {
        slots[s] = s;
        tokens[s] = static_cast<int32_t>(s % 1000);
      }
      SamplingParams params;
      std::vector<SampleRng> rngs;
      for (int64_t s = 0; s < batch; ++s) rngs.push_back(SampleRng::ForSample(1, s));
      std::vector<double> temps(batch, 1.0);
      double model_s = 0, logprob_s = 0, sample_s = 0;
      auto step = [&]() -> bool {
        auto t0 = Clock::now();
        auto logits = model->Decode(*cache, slots, tokens);
        if (!logits.ok()) return false;
        model_s += Seconds(t0);
        t0 = Clock::now();
        at::Tensor lp = TemperatureLogProbs(*logits, temps);
        logprob_s += Seconds(t0);
        t0 = Clock::now();
        for (int64_t s = 0; s < batch; ++s) {
          tokens[s] =
              SampleFromLogProbs(lp[s].data_ptr<float>(), config->vocab_size, params, rngs[s]).id;
        }
        sample_s += Seconds(t0);
        return true;
      };
      if (!step()) return 1;  // warm-up
      model_s = logprob_s = sample_s = 0;
      start = Clock::now();
      for (int64_t i = 0; i < steps; ++i) {
        if (!step()) return 1;
      }
      const double s = Seconds(start);
      const double tokens_per_s = batch * steps / s;
      // Bandwidth again right after, under the same machine load.
      const double bw = std::max(bandwidth, CopyBandwidth());
      // Average K/V rows read per sequence during the timed steps.
      const double kv_rows = context + 1 + (steps + 1) / 2.0;
      const double bytes_per_step = weight_bytes + batch * kv_rows * cache->BytesPerPosition();
      const double roofline = batch * bw / bytes_per_step;
      Emit({{"bench", "decode"},
            {"shape", name},
            {"batch", batch},
            {"steps", steps},
            {"ms_per_step", 1e3 * s / steps},
            {"model_ms_per_step", 1e3 * model_s / steps},
            {"logprob_ms_per_step", 1e3 * logprob_s / steps},
            {"sample_ms_per_step", 1e3 * sample_s / steps},
            {"tokens_per_s", tokens_per_s},
            {"weight_mbytes", weight_bytes / 1e6},
            {"bytes_per_step_mb", bytes_per_step / 1e6},
            {"copy_gbytes_per_s", bw / 1e9},
            {"roofline_tokens_per_s", roofline},
            {"roofline_fraction", tokens_per_s / roofline}});
    }

    // Prefix sharing: G = 8 samples of one prompt as one group (prefilled
    // once) vs 8 separate requests (prefilled 8 times); 4 new tokens each.
    {
      const int64_t prompt_len = big ? 32 : 256;
      std::vector<int32_t> prompt(prompt_len);
      for (int64_t i = 0; i < prompt_len; ++i) prompt[i] = (i * 13 + 1) % 1000;
      double seconds[2] = {0, 0};
      for (int shared = 1; shared >= 0; --shared) {
        TensorMap w = model->weights();
        auto m = Transformer::Create(*config, w, at::kFloat, at::kCPU);
        EngineOptions options;
        options.num_slots = 8;
        options.max_len = prompt_len + 8;
        auto engine = Engine::Create(std::move(m).value(), options);
        if (!engine.ok()) return 1;
        GenerationRequest r;
        r.prompt = prompt;
        r.params.max_new_tokens = 4;
        start = Clock::now();
        std::vector<std::future<absl::StatusOr<GenerationResult>>> futures;
        if (shared) {
          r.num_samples = 8;
          futures.push_back((*engine)->Submit(r));
        } else {
          for (int i = 0; i < 8; ++i) {
            r.params.seed = i;
            futures.push_back((*engine)->Submit(r));
          }
        }
        (*engine)->RunUntilIdle();
        for (auto& f : futures) {
          if (!f.get().ok()) return 1;
        }
        seconds[shared] = Seconds(start);
      }
      Emit({{"bench", "prefix_sharing"},
            {"shape", name},
            {"group_size", 8},
            {"prompt_tokens", prompt_len},
            {"new_tokens", 4},
            {"shared_s", seconds[1]},
            {"independent_s", seconds[0]},
            {"speedup", seconds[0] / seconds[1]}});
    }
  }
  return 0;
}

}  // namespace
}  // namespace cohort::model

int main(int argc, char** argv) { return cohort::model::Run(argc, argv); }
