#include "learner/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <mutex>
#include <numeric>

#include "model/aten.h"
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <ATen/core/grad_mode.h>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "core/blas_threads.h"
#include "core/file.h"
#include "core/logging.h"
#include "core/malloc_tuning.h"
#include "core/safetensors.h"
#include "core/status.h"
#include "learner/advantages.h"
#include "learner/served_weights.h"
#include "model/checkpoint.h"
#include "model/fused_ops.h"

namespace cohort::learner {
namespace {

absl::Status TorchError(const char* where, const std::exception& e) {
  if (const auto* c10 = dynamic_cast<const c10::Error*>(&e)) {
    return absl::InternalError(absl::StrCat(where, ": ", c10->what_without_backtrace()));
  }
  return absl::InternalError(absl::StrCat(where, ": ", e.what()));
}

double Seconds(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
}

// Log-probs of `targets` under the output projection `w` from hidden rows
// h [N, d], in chunks of `chunk` rows; fp32, at temperature 1 / inv_temp.
// Adds the summed entropy to *entropy_sum when given (computed without
// autograd). log_softmax is one fused kernel forward and backward (a
// logsumexp-based version costs several passes over the logits).
// With `fused`, each chunk's log-softmax, gather and entropy are one kernel
// (model/fused_ops.h: no [rows, vocab] log-softmax tensor, one pass over
// the logits each way).
at::Tensor HeadLogProbs(const at::Tensor& h, const at::Tensor& w, const at::Tensor& targets,
                        double inv_temp, int64_t chunk, double* entropy_sum, bool fused) {
  const int64_t n = h.size(0);
  std::vector<at::Tensor> parts;
  for (int64_t r0 = 0; r0 < n; r0 += chunk) {
    const int64_t rows = std::min(chunk, n - r0);
    at::Tensor logits = at::linear(h.narrow(0, r0, rows), w).to(at::kFloat);
    if (fused && model::fused::FusedOpsSupport(logits)) {
      std::vector<at::Tensor> out =
          model::fused::LogSoftmaxGather(logits, targets.narrow(0, r0, rows), inv_temp);
      parts.push_back(out[0]);
      if (entropy_sum != nullptr) *entropy_sum += out[1].sum().item<double>();
      continue;
    }
    if (inv_temp != 1.0) logits = logits * inv_temp;
    at::Tensor logp = at::log_softmax(logits, -1);
    parts.push_back(logp.gather(1, targets.narrow(0, r0, rows).unsqueeze(1)).squeeze(1));
    if (entropy_sum != nullptr) {
      at::NoGradGuard no_grad;
      at::Tensor l = logp.detach();
      *entropy_sum -= (at::exp(l) * l).sum().item<double>();
    }
  }
  return parts.size() == 1 ? parts[0] : at::cat(parts);
}

// glibc returns freed heap memory above M_TRIM_THRESHOLD to the kernel and
// serves blocks above a (dynamic) M_MMAP_THRESHOLD with fresh mappings, so
// a training step that frees and reallocates the same activations faults
// in (and zeroes) tens of MB of pages every step: ~12k page faults per
// tiny step, ~10% of its CPU time. Blocks up to 32 MiB (glibc's maximum
// threshold) now come from the heap and freed memory is kept for the next
// step; the process's peak RSS is unchanged (it is reached every step).
// core/malloc_tuning.h, with up to 1 GiB kept per arena.
void KeepFreedMemory() {
  static std::once_flag once;
  std::call_once(once, [] { KeepLargeAllocations(size_t{1} << 30); });
}

std::vector<uint8_t> TensorBytes(const at::Tensor& t) {
  at::Tensor c = t.detach().to(at::kCPU).contiguous();
  std::vector<uint8_t> out(c.numel() * c.element_size());
  if (!out.empty()) std::memcpy(out.data(), c.data_ptr(), out.size());
  return out;
}

}  // namespace

// One trainable sequence of the batch.
struct Trainer::Sequence {
  const std::vector<int32_t>* prompt = nullptr;
  const TrainSample* sample = nullptr;
  double advantage = 0;
  int64_t length() const { return static_cast<int64_t>(prompt->size() + sample->tokens.size()); }
};

// The tensors of one micro-batch: rows of width T holding one sequence each
// (padded) or several (padding-free), segment ids marking which.
// Completion token k of the micro-batch's b-th sequence, which starts at
// column s of row r, is scored at flat position r * T + s + prompt - 1 + k
// and lands at [b, k] of the [B, Tc] loss layout.
struct Trainer::MicroBatch {
  at::Tensor tokens, segments;            // [R, T] long; segment 0 = padding
  model::Transformer::StackInputs stack;  // positions and attention of the rows
  at::Tensor flat_index;                  // [N] long into R * T
  at::Tensor targets;                     // [N] long
  at::Tensor row, col;                    // [N] long into [B, Tc]
  int64_t b = 0, tc = 0;
  at::Tensor mask, behaviour, advantages;  // [B, Tc], [B, Tc], [B]
  at::Tensor ref_logp, old_logp;           // cached after the first iteration
  int64_t padded_tokens = 0;
  int64_t real_tokens = 0;
};

// AdamW as torch.optim.AdamW (single-tensor path) computes it, on ATen.
struct Trainer::Adam {
  std::vector<at::Tensor> exp_avg, exp_avg_sq;  // per names_ entry
  int64_t step = 0;
};

TrainerOptions TrainerOptions::FromConfig(const RunConfig& config) {
  TrainerOptions o;
  o.grpo = config.grpo;
  o.optim = config.optim;
  o.temperature = config.sampling.temperature;
  o.max_completion_length = config.sampling.max_new_tokens;
  o.serve_dtype = config.model.dtype;
  o.determinism = config.learner.determinism;
  o.threads = config.learner.threads;
  o.padding_free = config.optim.padding_free;
  o.activation_checkpointing = config.optim.activation_checkpointing;
  return o;
}

Trainer::Trainer(const TrainerOptions& options, at::Device device)
    : options_([&] {
        TrainerOptions o = options;
        if (o.determinism && o.grpo.tis_cap > 0) {
          COHORT_LOG(WARNING) << "trainer: determinism turns TIS off (grpo.tis_cap "
                              << o.grpo.tis_cap << " ignored)";
          o.grpo.tis_cap = 0;
        }
        return o;
      }()),
      loss_options_([&] {
        SamplingSection sampling;
        sampling.max_new_tokens = static_cast<int>(options_.max_completion_length);
        return GrpoLossOptions::FromConfig(options_.grpo, sampling);
      }()),
      device_(device),
      recompute_old_(options_.determinism || options_.grpo.tis_cap > 0) {}

Trainer::~Trainer() = default;

absl::StatusOr<std::unique_ptr<Trainer>> Trainer::Create(const model::ModelConfig& config,
                                                         model::TensorMap weights,
                                                         const TrainerOptions& options,
                                                         at::Device device) {
  std::unique_ptr<Trainer> t(new Trainer(options, device));
  RETURN_IF_ERROR(t->loss_options_.Validate());
  const OptimSection& o = options.optim;
  if (!(o.lr > 0) || o.beta1 < 0 || o.beta1 >= 1 || o.beta2 < 0 || o.beta2 >= 1 || !(o.eps > 0) ||
      o.weight_decay < 0 || o.max_grad_norm < 0 || o.micro_batch_tokens < 1) {
    return absl::InvalidArgumentError("trainer: optim settings out of range (see config keys)");
  }
  if (options.logit_chunk_elements <= 0) {
    return absl::InvalidArgumentError("trainer: logit_chunk_elements must be > 0");
  }
  if (!(options.temperature > 0)) {
    return absl::InvalidArgumentError("trainer: temperature must be > 0");
  }
  if (options.serve_dtype != "float32" && options.serve_dtype != "bfloat16") {
    return absl::InvalidArgumentError(
        absl::StrCat("trainer: serve dtype must be float32 or "
                     "bfloat16, got \"",
                     options.serve_dtype, "\""));
  }
  if (options.threads > 0) {
    at::set_num_threads(options.threads);
    if (device.is_cpu()) SetBlasThreads(options.threads);
  }
  if (options.keep_freed_memory && device.is_cpu()) KeepFreedMemory();
  model::TensorMap reference_weights;
  try {
    at::NoGradGuard no_grad;
    for (auto& [name, w] : weights) {
      w = w.to(device, at::kFloat).contiguous();
      if (options.grpo.beta > 0) reference_weights[name] = w.clone();
    }
  } catch (const std::exception& e) {
    return TorchError("trainer: weights", e);
  }
  ASSIGN_OR_RETURN(t->policy_,
                   model::Transformer::Create(config, std::move(weights), at::kFloat, device));
  t->policy_->set_fused_stack(options.fused_kernels);
  if (options.grpo.beta > 0) {
    ASSIGN_OR_RETURN(t->reference_, model::Transformer::Create(config, std::move(reference_weights),
                                                               at::kFloat, device));
    t->reference_->set_fused_stack(options.fused_kernels);
  }
  t->fingerprint_ = config.Fingerprint();
  t->adam_ = std::make_unique<Adam>();
  for (auto& [name, w] : t->policy_->weights()) t->names_.push_back(name);
  std::sort(t->names_.begin(), t->names_.end());
  try {
    at::NoGradGuard no_grad;
    for (const std::string& name : t->names_) {
      at::Tensor& w = t->policy_->weights().at(name);
      w.set_requires_grad(true);
      t->adam_->exp_avg.push_back(at::zeros_like(w));
      t->adam_->exp_avg_sq.push_back(at::zeros_like(w));
    }
  } catch (const std::exception& e) {
    return TorchError("trainer: optimizer state", e);
  }
  return t;
}

TrainerInfo Trainer::info() const {
  TrainerInfo i;
  i.vocab_size = policy_->config().vocab_size;
  i.model_fingerprint = fingerprint_;
  i.config_json = policy_->config().ToJson();
  i.dtype = options_.serve_dtype;
  return i;
}

double Trainer::NextLearningRate() const {
  const OptimSection& o = options_.optim;
  const int64_t k = optimizer_steps_ + 1;
  if (o.warmup_steps > 0 && k <= o.warmup_steps) {
    return o.lr * static_cast<double>(k) / o.warmup_steps;
  }
  if (o.schedule == "cosine") {
    const int64_t total = o.total_steps > 0 ? o.total_steps : options_.planned_steps;
    if (total > o.warmup_steps) {
      const double progress = std::min(1.0, static_cast<double>(k - o.warmup_steps) /
                                                static_cast<double>(total - o.warmup_steps));
      return o.lr * 0.5 * (1.0 + std::cos(M_PI * progress));
    }
  }
  return o.lr;
}

absl::StatusOr<StepResult> Trainer::TrainStep(const std::vector<TrainGroup>& batch) {
  return RunBatch(batch, /*sft=*/false);
}

absl::StatusOr<StepResult> Trainer::SftStep(const std::vector<TrainGroup>& batch) {
  return RunBatch(batch, /*sft=*/true);
}

absl::StatusOr<StepResult> Trainer::RunBatch(const std::vector<TrainGroup>& batch, bool sft) {
  const auto start = std::chrono::steady_clock::now();
  StepResult result;
  // --- advantages and reward metrics
  std::vector<GroupRewards> rewards(batch.size());
  double reward_sum = 0, reward_sq = 0, accuracy_sum = 0, length_sum = 0;
  int64_t ok = 0, accuracy_n = 0, samples = 0, truncated = 0, zero_std = 0;
  for (size_t g = 0; g < batch.size(); ++g) {
    for (const TrainSample& s : batch[g].samples) {
      const bool sample_ok = s.ok && std::isfinite(s.reward);
      rewards[g].rewards.push_back(sample_ok ? s.reward : 0.0);
      rewards[g].ok.push_back(sample_ok);
      ++samples;
      length_sum += static_cast<double>(s.tokens.size());
      truncated += s.truncated() ? 1 : 0;
      if (s.tokens.size() != s.logprobs.size()) {
        return absl::InvalidArgumentError(
            absl::StrCat("trainer: group ", g, " (prompt ", batch[g].prompt_uid,
                         "): ", s.logprobs.size(), " logprobs for ", s.tokens.size(), " tokens"));
      }
      if (!sample_ok) continue;
      ++ok;
      reward_sum += s.reward;
      reward_sq += s.reward * s.reward;
      if (auto it = s.components.find("accuracy"); it != s.components.end()) {
        accuracy_sum += it->second;
        ++accuracy_n;
      }
    }
    if (batch[g].prompt_tokens.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("trainer: group ", g, " (prompt ", batch[g].prompt_uid, ") has no prompt"));
    }
    zero_std += AllRewardsEqual(rewards[g]) ? 1 : 0;
  }
  AdvantageOptions adv_options;
  adv_options.estimator = options_.grpo.advantage;
  adv_options.scale = options_.grpo.scale_rewards;
  ASSIGN_OR_RETURN(std::vector<std::vector<double>> advantages,
                   ComputeAdvantages(rewards, adv_options));

  // --- trainable sequences
  std::vector<Sequence> seqs;
  int64_t counted_sequences = 0;
  const int64_t max_pos = policy_->config().max_position_embeddings;
  for (size_t g = 0; g < batch.size(); ++g) {
    for (size_t i = 0; i < batch[g].samples.size(); ++i) {
      const TrainSample& s = batch[g].samples[i];
      if (!sft && !rewards[g].ok[i]) continue;
      ++counted_sequences;
      if (s.tokens.empty()) continue;
      if (!sft && options_.grpo.mask_truncated_completions && s.truncated()) continue;
      Sequence q{&batch[g].prompt_tokens, &s, sft ? 0.0 : advantages[g][i]};
      if (max_pos > 0 && q.length() > max_pos) {
        return absl::InvalidArgumentError(
            absl::StrCat("trainer: prompt ", batch[g].prompt_uid, " sample ", i, " has ",
                         q.length(), " tokens, more than max_position_embeddings ", max_pos));
      }
      seqs.push_back(q);
    }
  }
  result.metrics["reward_mean"] = ok > 0 ? reward_sum / ok : 0.0;
  result.metrics["reward_std"] =
      ok > 1 ? std::sqrt(std::max(0.0, (reward_sq - reward_sum * reward_sum / ok) / (ok - 1)))
             : 0.0;
  if (accuracy_n > 0) result.metrics["accuracy"] = accuracy_sum / accuracy_n;
  result.metrics["zero_std_fraction"] =
      batch.empty() ? 0.0 : static_cast<double>(zero_std) / static_cast<double>(batch.size());
  result.metrics["response_length_mean"] = samples > 0 ? length_sum / samples : 0.0;
  result.metrics["truncated_fraction"] =
      samples > 0 ? static_cast<double>(truncated) / samples : 0.0;
  result.metrics["non_ok_fraction"] =
      samples > 0 ? static_cast<double>(samples - ok) / samples : 0.0;
  if (seqs.empty()) {
    result.skipped = true;
    result.skip_reason = "no trainable sequence in the batch (all non-OK, empty or masked)";
    COHORT_LOG(WARNING) << "trainer: step skipped: " << result.skip_reason;
    return result;
  }
  // Longest first (stable: ties keep the given order), so padding is small.
  std::stable_sort(seqs.begin(), seqs.end(),
                   [](const Sequence& a, const Sequence& b) { return a.length() > b.length(); });

  // --- micro-batches by token budget: rows of the micro-batch's longest
  // sequence, R rows x T <= optim.micro_batch_tokens. Padding-free, each
  // row takes further sequences while they fit (first fit, longest first);
  // padded, one sequence per row.
  std::vector<MicroBatch> mbs;
  double total_tokens = 0;
  int64_t real_tokens = 0;
  try {
    size_t i = 0;
    while (i < seqs.size()) {
      const int64_t t = seqs[i].length();  // longest of this micro-batch
      const int64_t max_rows = std::max<int64_t>(1, options_.optim.micro_batch_tokens / t);
      struct Placed {
        const Sequence* seq;
        int64_t row, start;
      };
      std::vector<Placed> placed;
      std::vector<int64_t> used;  // per row
      size_t j = i;
      for (; j < seqs.size(); ++j) {
        const int64_t len = seqs[j].length();
        int64_t row = -1;
        if (options_.padding_free) {
          for (size_t r = 0; r < used.size() && row < 0; ++r) {
            if (used[r] + len <= t) row = static_cast<int64_t>(r);
          }
        }
        if (row < 0) {
          if (static_cast<int64_t>(used.size()) >= max_rows) break;
          row = static_cast<int64_t>(used.size());
          used.push_back(0);
        }
        placed.push_back({&seqs[j], row, used[row]});
        used[row] += len;
      }
      const int64_t rows = static_cast<int64_t>(used.size());
      const int64_t b = static_cast<int64_t>(placed.size());
      int64_t tc = 0;
      for (const Placed& q : placed) {
        tc = std::max<int64_t>(tc, static_cast<int64_t>(q.seq->sample->tokens.size()));
      }
      MicroBatch mb;
      mb.b = b;
      mb.tc = tc;
      mb.padded_tokens = rows * t;
      at::Tensor tokens = at::zeros({rows, t}, at::kLong);
      at::Tensor segments = at::zeros({rows, t}, at::kLong);
      at::Tensor mask = at::zeros({b, tc}, at::kFloat);
      at::Tensor behaviour = at::zeros({b, tc}, at::kFloat);
      at::Tensor adv = at::zeros({b}, at::kFloat);
      auto tok = tokens.accessor<int64_t, 2>();
      auto seg = segments.accessor<int64_t, 2>();
      auto msk = mask.accessor<float, 2>();
      auto beh = behaviour.accessor<float, 2>();
      std::vector<int64_t> flat, targets, rows_of, cols;
      for (int64_t k = 0; k < b; ++k) {
        const Sequence& q = *placed[k].seq;
        const int64_t r = placed[k].row;
        const int64_t p = static_cast<int64_t>(q.prompt->size());
        int64_t c = placed[k].start;
        for (int32_t id : *q.prompt) {
          tok[r][c] = id;
          seg[r][c++] = k + 1;
        }
        for (size_t m = 0; m < q.sample->tokens.size(); ++m) {
          tok[r][c] = q.sample->tokens[m];
          seg[r][c++] = k + 1;
          flat.push_back(r * t + placed[k].start + p - 1 + static_cast<int64_t>(m));
          targets.push_back(q.sample->tokens[m]);
          rows_of.push_back(k);
          cols.push_back(static_cast<int64_t>(m));
          msk[k][m] = 1.0f;
          beh[k][m] = q.sample->logprobs[m];
        }
        adv[k] = static_cast<float>(q.advantage);
        mb.real_tokens += c - placed[k].start;
      }
      auto to_dev = [&](const std::vector<int64_t>& v) {
        return at::tensor(at::ArrayRef<int64_t>(v), at::kLong).to(device_);
      };
      mb.tokens = tokens.to(device_);
      mb.segments = segments.to(device_);
      ASSIGN_OR_RETURN(mb.stack, policy_->PrepareStack(mb.tokens, mb.segments));
      mb.flat_index = to_dev(flat);
      mb.targets = to_dev(targets);
      mb.row = to_dev(rows_of);
      mb.col = to_dev(cols);
      mb.mask = mask.to(device_);
      mb.behaviour = behaviour.to(device_);
      mb.advantages = adv.to(device_);
      total_tokens += static_cast<double>(flat.size());
      real_tokens += mb.real_tokens;
      mbs.push_back(std::move(mb));
      i = j;
    }
  } catch (const std::exception& e) {
    return TorchError("trainer: packing", e);
  }
  const BatchTotals totals{counted_sequences, total_tokens, static_cast<int64_t>(mbs.size())};
  const int64_t iterations = sft ? 1 : options_.grpo.num_iterations;
  const double inv_temp = 1.0 / options_.temperature;
  const int64_t vocab = policy_->config().vocab_size;
  const int64_t chunk_rows = std::max<int64_t>(1, options_.logit_chunk_elements / vocab);
  const bool fused = options_.fused_kernels;

  LossStats all_stats;
  double loss_sum = 0, entropy_sum = 0, mismatch_sum = 0, grad_norm_sum = 0, lr_last = 0;
  int64_t steps_done = 0;
  std::string skip_reason;
  try {
    for (int64_t it = 0; it < iterations && skip_reason.empty(); ++it) {
      LossStats iter_stats;
      for (MicroBatch& mb : mbs) {
        if (it == 0 && reference_ && !sft) {
          at::NoGradGuard no_grad;
          at::Tensor h = at::embedding(reference_->token_embedding(), mb.tokens);
          for (int64_t l = 0; l < reference_->num_layers(); ++l) {
            h = reference_->StackLayer(l, h, mb.stack);
          }
          h = reference_->FinalNorm(h);
          at::Tensor hs = h.reshape({-1, h.size(-1)}).index_select(0, mb.flat_index);
          at::Tensor lp = HeadLogProbs(hs, reference_->output_embedding(), mb.targets, inv_temp,
                                       chunk_rows, nullptr, fused);
          mb.ref_logp =
              at::zeros({mb.b, mb.tc}, at::kFloat).to(device_).index_put({mb.row, mb.col}, lp);
        }
        // The trunk from a leaf of embedded tokens, whose gradient goes into
        // the embedding's rows by index_add_ (no dense [vocab, hidden]
        // temporary, which a tied embedding would hold twice). With
        // checkpointing, only each layer's input is kept; the layers are
        // rerun with autograd in backward (BackwardTrunk).
        const at::Tensor& embed = policy_->token_embedding();
        at::Tensor embedded = at::embedding(embed.detach(), mb.tokens).set_requires_grad(true);
        std::vector<at::Tensor> layer_inputs;
        at::Tensor top;  // the last layer's output (a leaf with checkpointing)
        if (options_.activation_checkpointing) {
          at::NoGradGuard no_grad;
          at::Tensor h = embedded.detach();
          for (int64_t l = 0; l < policy_->num_layers(); ++l) {
            layer_inputs.push_back(h);
            h = policy_->StackLayer(l, h, mb.stack);
          }
          top = h.set_requires_grad(true);
        } else {
          top = embedded;
          for (int64_t l = 0; l < policy_->num_layers(); ++l) {
            top = policy_->StackLayer(l, top, mb.stack);
          }
        }
        at::Tensor hidden = policy_->FinalNorm(top);
        at::Tensor h_sel = hidden.reshape({-1, hidden.size(-1)}).index_select(0, mb.flat_index);
        const at::Tensor& w = policy_->output_embedding();
        const int64_t n = h_sel.size(0);
        const bool single = n <= chunk_rows;
        at::Tensor h_leaf;
        at::Tensor logp_flat;
        double* entropy = it == 0 ? &entropy_sum : nullptr;
        if (single) {
          logp_flat = HeadLogProbs(h_sel, w, mb.targets, inv_temp, chunk_rows, entropy, fused);
        } else {
          h_leaf = h_sel.detach().set_requires_grad(true);
          at::NoGradGuard no_grad;
          logp_flat = HeadLogProbs(h_leaf, w, mb.targets, inv_temp, chunk_rows, entropy, fused);
        }
        at::Tensor logp = at::zeros({mb.b, mb.tc}, logp_flat.options().requires_grad(false))
                              .index_put({mb.row, mb.col}, logp_flat);
        if (!single) logp = logp.detach().set_requires_grad(true);
        if (it == 0) {
          at::NoGradGuard no_grad;
          at::Tensor d = logp.detach() - mb.behaviour;
          mismatch_sum += ((at::exp(d) - d - 1.0) * mb.mask).sum().item<double>();
          if (recompute_old_) mb.old_logp = logp.detach().clone();
        }
        absl::StatusOr<LossOutput> out;
        if (sft) {
          out = SftLoss(logp, mb.mask, totals);
        } else {
          LossInputs in;
          in.logp = logp;
          in.old_logp = recompute_old_ ? mb.old_logp : mb.behaviour;
          in.behaviour_logp = mb.behaviour;
          in.ref_logp = mb.ref_logp;
          in.mask = mb.mask;
          in.advantages = mb.advantages;
          out = GrpoLoss(in, loss_options_, totals);
        }
        if (!out.ok()) return out.status();
        iter_stats.Add(out->stats);
        if (!std::isfinite(out->stats.loss)) {
          skip_reason = absl::StrCat("non-finite loss (", out->stats.loss, ") at iteration ", it);
          break;
        }
        out->loss.backward();
        if (!single) {
          at::Tensor g = logp.grad().index({mb.row, mb.col});
          for (int64_t r0 = 0; r0 < n; r0 += chunk_rows) {
            const int64_t rows = std::min(chunk_rows, n - r0);
            at::Tensor lp =
                HeadLogProbs(h_leaf.narrow(0, r0, rows), w, mb.targets.narrow(0, r0, rows),
                             inv_temp, chunk_rows, nullptr, fused);
            lp.backward(g.narrow(0, r0, rows));
          }
          h_sel.backward(h_leaf.grad());
        }
        at::Tensor grad_in;
        if (options_.activation_checkpointing) {
          at::Tensor grad = top.grad();
          top = at::Tensor();
          for (int64_t l = policy_->num_layers() - 1; l >= 0; --l) {
            at::Tensor x = l == 0 ? embedded : layer_inputs[l].set_requires_grad(true);
            layer_inputs[l] = at::Tensor();
            policy_->StackLayer(l, x, mb.stack).backward(grad);
            grad = x.grad();
          }
          grad_in = grad;
        } else {
          grad_in = embedded.grad();
        }
        {
          at::NoGradGuard no_grad;
          at::Tensor& eg = embed.mutable_grad();
          if (!eg.defined()) eg = at::zeros_like(embed);
          eg.index_add_(0, mb.tokens.reshape({-1}), grad_in.reshape({-1, grad_in.size(-1)}));
        }
      }
      std::vector<at::Tensor*> params;
      for (const std::string& name : names_) params.push_back(&policy_->weights().at(name));
      double grad_norm = 0;
      if (skip_reason.empty()) {
        at::NoGradGuard no_grad;
        std::vector<at::Tensor> norms;
        for (at::Tensor* p : params) {
          if (p->grad().defined()) norms.push_back(p->grad().norm(2).to(at::kDouble));
        }
        grad_norm = norms.empty() ? 0.0 : at::stack(norms).norm(2).item<double>();
        if (!std::isfinite(grad_norm)) {
          skip_reason =
              absl::StrCat("non-finite gradient norm (", grad_norm, ") at iteration ", it);
        }
      }
      if (!skip_reason.empty()) {
        for (at::Tensor* p : params) p->mutable_grad() = at::Tensor();
        break;
      }
      {
        at::NoGradGuard no_grad;
        const double max_norm = options_.optim.max_grad_norm;
        if (max_norm > 0 && grad_norm > max_norm) {
          const double coef = max_norm / (grad_norm + 1e-6);
          for (at::Tensor* p : params) {
            if (p->grad().defined()) p->mutable_grad().mul_(coef);
          }
        }
        const double lr = NextLearningRate();
        const OptimSection& o = options_.optim;
        ++adam_->step;
        const double bc1 = 1.0 - std::pow(o.beta1, static_cast<double>(adam_->step));
        const double bc2_sqrt =
            std::sqrt(1.0 - std::pow(o.beta2, static_cast<double>(adam_->step)));
        // Element-wise, so done in slices of at most kAdamSlice elements:
        // the temporaries (denominator) stay small (the 0.5B embedding alone
        // is 136M elements) and the result is the same bits.
        constexpr int64_t kAdamSlice = int64_t{8} << 20;
        for (size_t k = 0; k < params.size(); ++k) {
          at::Tensor& p = *params[k];
          if (!p.grad().defined()) continue;
          if (fused && p.device().is_cpu() && p.scalar_type() == at::kFloat && p.is_contiguous()) {
            // One pass over p, g, m, v instead of six ATen ops.
            model::fused::AdamWUpdate(p, p.grad(), adam_->exp_avg[k], adam_->exp_avg_sq[k], lr,
                                      o.beta1, o.beta2, o.eps, o.weight_decay, bc1, bc2_sqrt);
            p.mutable_grad() = at::Tensor();
            continue;
          }
          const at::Tensor pv = p.view({-1}), gv = p.grad().contiguous().view({-1});
          const at::Tensor mv = adam_->exp_avg[k].view({-1}), vv = adam_->exp_avg_sq[k].view({-1});
          const int64_t n = pv.numel();
          for (int64_t s0 = 0; s0 < n; s0 += kAdamSlice) {
            const int64_t len = std::min(kAdamSlice, n - s0);
            at::Tensor pc = pv.narrow(0, s0, len), gc = gv.narrow(0, s0, len);
            at::Tensor mc = mv.narrow(0, s0, len), vc = vv.narrow(0, s0, len);
            if (o.weight_decay > 0) pc.mul_(1.0 - lr * o.weight_decay);
            mc.mul_(o.beta1).add_(gc, 1.0 - o.beta1);
            vc.mul_(o.beta2).addcmul_(gc, gc, 1.0 - o.beta2);
            at::Tensor denom = (vc.sqrt() / bc2_sqrt).add_(o.eps);
            pc.addcdiv_(mc, denom, -lr / bc1);
          }
          p.mutable_grad() = at::Tensor();
        }
        lr_last = lr;
      }
      ++optimizer_steps_;
      ++steps_done;
      grad_norm_sum += grad_norm;
      loss_sum += iter_stats.loss;
      all_stats.Add(iter_stats);
    }
  } catch (const std::exception& e) {
    return TorchError("trainer: step", e);
  }
  ++batches_;
  const double secs = Seconds(start);
  result.optimizer_steps = steps_done;
  result.tokens = static_cast<int64_t>(total_tokens);
  if (!skip_reason.empty()) {
    result.skipped = steps_done == 0;
    result.skip_reason = skip_reason;
    COHORT_LOG(WARNING) << "trainer: " << (result.skipped ? "step skipped" : "batch stopped early")
                        << " (" << steps_done << " of " << iterations
                        << " updates applied): " << skip_reason;
  }
  const double tok = std::max(all_stats.tokens, 1.0);
  if (steps_done > 0) {
    result.metrics["loss"] = loss_sum / steps_done;
    result.metrics["grad_norm"] = grad_norm_sum / steps_done;
    result.metrics["lr"] = lr_last;
    result.metrics["clip_low"] = all_stats.clip_low / tok;
    result.metrics["clip_high"] = all_stats.clip_high / tok;
    result.metrics["clip_fraction"] = (all_stats.clip_low + all_stats.clip_high) / tok;
    result.metrics["ratio_mean"] = all_stats.ratio_sum / tok;
    result.metrics["kl"] = all_stats.kl_sum / tok;
    if (options_.grpo.tis_cap > 0)
      result.metrics["tis_truncated_fraction"] = all_stats.tis_truncated / tok;
  }
  result.metrics["entropy"] = entropy_sum / std::max(total_tokens, 1.0);
  result.metrics["mismatch_kl"] = mismatch_sum / std::max(total_tokens, 1.0);
  result.metrics["tokens"] = total_tokens;
  result.metrics["micro_batches"] = static_cast<double>(mbs.size());
  double row_tokens = 0;  // rows x width computed (padding included)
  for (const MicroBatch& mb : mbs) row_tokens += static_cast<double>(mb.padded_tokens);
  result.metrics["row_tokens"] = row_tokens;
  result.metrics["step_seconds"] = secs;
  result.metrics["tokens_per_s"] = total_tokens * steps_done / std::max(secs, 1e-9);
  result.metrics["sequence_tokens_per_s"] =
      static_cast<double>(real_tokens) * steps_done / std::max(secs, 1e-9);
  return result;
}

model::TensorMap Trainer::PolicyWeights() const {
  at::NoGradGuard no_grad;
  model::TensorMap out;
  for (const auto& [name, w] : policy_->weights()) out[name] = w.detach().clone();
  return out;
}

absl::StatusOr<WeightSnapshot> Trainer::ExportWeights() {
  WeightSnapshot snap;
  try {
    at::NoGradGuard no_grad;
    const bool bf16 = options_.serve_dtype == "bfloat16";
    for (const std::string& name : names_) {
      // Converted (or copied) straight into the snapshot's buffer: the
      // training loop's one copy of the parameters.
      snap.tensors.push_back(ServedWeightTensor(name, policy_->weights().at(name), bf16));
    }
  } catch (const std::exception& e) {
    return TorchError("trainer: export weights", e);
  }
  return snap;
}

namespace {

// Writes named fp32/uint8 tensors as one safetensors file.
absl::Status WriteTensors(const std::string& path,
                          const std::vector<std::pair<std::string, at::Tensor>>& tensors) {
  std::vector<std::vector<uint8_t>> storage;
  std::vector<safetensors::TensorView> views;
  storage.reserve(tensors.size());
  for (const auto& [name, t] : tensors) {
    storage.push_back(TensorBytes(t));
    safetensors::TensorView v;
    v.name = name;
    v.dtype = t.scalar_type() == at::kByte ? "U8" : "F32";
    v.shape.assign(t.sizes().begin(), t.sizes().end());
    v.data = storage.back().data();
    v.size_bytes = storage.back().size();
    views.push_back(std::move(v));
  }
  return safetensors::WriteFile(path, views);
}

// Copies tensor `name` of `file` into `dst` (same shape and dtype).
absl::Status ReadInto(const safetensors::File& file, const std::string& name, at::Tensor& dst) {
  const safetensors::TensorInfo* info = file.Find(name);
  if (info == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(file.path(), ": missing tensor ", name));
  }
  const int64_t bytes = dst.numel() * static_cast<int64_t>(dst.element_size());
  if (static_cast<int64_t>(info->size_bytes) != bytes ||
      std::vector<int64_t>(dst.sizes().begin(), dst.sizes().end()) != info->shape) {
    return absl::InvalidArgumentError(
        absl::StrCat(file.path(), ": tensor ", name, " does not match the model's shape"));
  }
  at::Tensor cpu = at::empty(dst.sizes(), at::TensorOptions().dtype(dst.scalar_type()));
  std::memcpy(cpu.data_ptr(), info->data, bytes);
  at::NoGradGuard no_grad;
  dst.copy_(cpu.to(dst.device()));
  return absl::OkStatus();
}

}  // namespace

absl::Status Trainer::SaveCheckpoint(const std::string& dir) {
  try {
    model::TensorMap weights = PolicyWeights();
    RETURN_IF_ERROR(model::SaveModelDir(dir + "/model", policy_->config(), weights));
    std::vector<std::pair<std::string, at::Tensor>> opt;
    for (size_t k = 0; k < names_.size(); ++k) {
      opt.push_back({"exp_avg." + names_[k], adam_->exp_avg[k]});
      opt.push_back({"exp_avg_sq." + names_[k], adam_->exp_avg_sq[k]});
    }
    RETURN_IF_ERROR(WriteTensors(dir + "/optimizer.safetensors", opt));
    if (reference_) {
      std::vector<std::pair<std::string, at::Tensor>> ref;
      for (const std::string& name : names_) ref.push_back({name, reference_->weights().at(name)});
      RETURN_IF_ERROR(WriteTensors(dir + "/reference.safetensors", ref));
    }
    at::Tensor rng = at::detail::getDefaultCPUGenerator().get_state();
    RETURN_IF_ERROR(WriteTensors(dir + "/rng.safetensors", {{"cpu", rng}}));
    nlohmann::json state = {{"optimizer_steps", optimizer_steps_},
                            {"adam_step", adam_->step},
                            {"batches", batches_},
                            {"model_fingerprint", fingerprint_}};
    return WriteFileAtomically(dir + "/trainer_state.json", state.dump(2) + "\n");
  } catch (const std::exception& e) {
    return TorchError("trainer: save checkpoint", e);
  }
}

absl::Status Trainer::LoadCheckpoint(const std::string& dir) {
  ASSIGN_OR_RETURN(std::string text, ReadFile(dir + "/trainer_state.json"));
  nlohmann::json state = nlohmann::json::parse(text, nullptr, false);
  if (state.is_discarded() || !state.is_object() || !state.contains("optimizer_steps") ||
      !state.contains("adam_step")) {
    return absl::InvalidArgumentError(
        absl::StrCat(dir, "/trainer_state.json: malformed (needs optimizer_steps, adam_step)"));
  }
  if (state.value("model_fingerprint", fingerprint_) != fingerprint_) {
    return absl::FailedPreconditionError(absl::StrCat(
        dir, ": checkpoint of another model (fingerprint ",
        state.value("model_fingerprint", std::string()), ", this model ", fingerprint_, ")"));
  }
  ASSIGN_OR_RETURN(model::LoadedModel loaded, model::LoadModelDir(dir + "/model", at::kFloat));
  try {
    at::NoGradGuard no_grad;
    for (const std::string& name : names_) {
      auto it = loaded.weights.find(name);
      if (it == loaded.weights.end()) {
        return absl::InvalidArgumentError(absl::StrCat(dir, "/model: missing ", name));
      }
      policy_->weights().at(name).copy_(it->second);
    }
    ASSIGN_OR_RETURN(auto opt, safetensors::File::Open(dir + "/optimizer.safetensors"));
    for (size_t k = 0; k < names_.size(); ++k) {
      RETURN_IF_ERROR(ReadInto(*opt, "exp_avg." + names_[k], adam_->exp_avg[k]));
      RETURN_IF_ERROR(ReadInto(*opt, "exp_avg_sq." + names_[k], adam_->exp_avg_sq[k]));
    }
    if (reference_) {
      ASSIGN_OR_RETURN(auto ref, safetensors::File::Open(dir + "/reference.safetensors"));
      for (const std::string& name : names_) {
        RETURN_IF_ERROR(ReadInto(*ref, name, reference_->weights().at(name)));
      }
    }
    ASSIGN_OR_RETURN(auto rng_file, safetensors::File::Open(dir + "/rng.safetensors"));
    at::Tensor rng = at::detail::getDefaultCPUGenerator().get_state();
    RETURN_IF_ERROR(ReadInto(*rng_file, "cpu", rng));
    at::Generator gen = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_state(rng);
  } catch (const std::exception& e) {
    return TorchError("trainer: load checkpoint", e);
  }
  optimizer_steps_ = state["optimizer_steps"].get<int64_t>();
  adam_->step = state["adam_step"].get<int64_t>();
  batches_ = state.value("batches", int64_t{0});
  return absl::OkStatus();
}

}  // namespace cohort::learner
