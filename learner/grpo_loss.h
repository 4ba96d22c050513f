// The GRPO policy loss and its variants, and the SFT loss, on one
// micro-batch of completion tokens. LibTorch.
//
// Per token t of sequence s (mask[s, t] = 1):
//   log ρ = logp - old_logp                        (importance_sampling_level: token)
//   log ρ = Σ_t mask·(logp - old_logp) / Σ_t mask  (sequence: GSPO, one ratio per sequence)
//   pg    = -min(ρ·A_s, clip(ρ, 1 - epsilon, 1 + epsilon_high)·A_s)
//   pg   *= min(exp(old_logp - behaviour_logp), tis_cap)   (TIS; tis_cap > 0, weight detached)
//   kl    = exp(d) - d - 1,  d = ref_logp - logp     (k3; only when beta > 0)
//   ℓ     = pg + beta·kl
// and the micro-batch's share of the batch loss, by loss_type (TRL's):
//   grpo     Σ_s (Σ_t mask·ℓ / Σ_t mask) / batch sequences
//   dapo     Σ mask·ℓ / batch tokens
//   bnpo     (Σ mask·ℓ / micro-batch tokens) / micro-batches
//   dr_grpo  Σ mask·ℓ / (batch sequences · max_completion_length)
// so the shares of all micro-batches of a batch add up to the batch loss and
// gradient accumulation needs no rescaling. Sequences that carry no loss
// (masked truncated completions) still count in `sequences` (as in TRL).
//
// Thread-safety: pure functions.
#ifndef COHORT_LEARNER_GRPO_LOSS_H_
#define COHORT_LEARNER_GRPO_LOSS_H_

#include <cstdint>
#include <string>

#include <ATen/core/Tensor.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/config.h"

namespace cohort::learner {

struct GrpoLossOptions {
  std::string loss_type = "dapo";  // grpo | dapo | bnpo | dr_grpo
  double epsilon = 0.2;
  double epsilon_high = 0.2;  // already resolved (config's 0 = epsilon)
  double beta = 0.0;
  std::string importance_sampling_level = "token";  // token | sequence
  double tis_cap = 0.0;                             // 0 = off
  int64_t max_completion_length = 0;                // dr_grpo's constant; > 0 for it

  static GrpoLossOptions FromConfig(const GrpoSection& grpo, const SamplingSection& sampling);
  absl::Status Validate() const;
};

// Sizes of the whole training batch the micro-batch belongs to.
struct BatchTotals {
  int64_t sequences = 0;  // sequences of the batch (incl. fully masked ones)
  double tokens = 0;      // loss tokens (Σ mask) of the batch
  int64_t micro_batches = 1;
};

// All [S, T] fp32 on one device; mask is 0/1.
struct LossInputs {
  at::Tensor logp;            // current policy, with autograd history
  at::Tensor old_logp;        // the ratio's denominator (no grad)
  at::Tensor behaviour_logp;  // the actor's log-probs; needed when tis_cap > 0
  at::Tensor ref_logp;        // reference policy; needed when beta > 0
  at::Tensor mask;
  at::Tensor advantages;  // [S]
};

// Sums over the micro-batch's loss tokens (add them up over a batch).
struct LossStats {
  double tokens = 0;
  double sequences = 0;
  double kl_sum = 0;         // Σ mask·kl
  double clip_low = 0;       // tokens with ρ < 1 - epsilon and A < 0
  double clip_high = 0;      // tokens with ρ > 1 + epsilon_high and A > 0
  double ratio_sum = 0;      // Σ mask·ρ
  double tis_truncated = 0;  // tokens whose TIS weight hit the cap
  double loss = 0;           // this micro-batch's share of the batch loss

  void Add(const LossStats& other);
};

struct LossOutput {
  at::Tensor loss;  // scalar, differentiable
  LossStats stats;
};

absl::StatusOr<LossOutput> GrpoLoss(const LossInputs& in, const GrpoLossOptions& options,
                                    const BatchTotals& totals);

// SFT: Σ -mask·logp / batch tokens (NLL per completion token over the batch).
absl::StatusOr<LossOutput> SftLoss(const at::Tensor& logp, const at::Tensor& mask,
                                   const BatchTotals& totals);

}  // namespace cohort::learner

#endif  // COHORT_LEARNER_GRPO_LOSS_H_
