#include "learner/grpo_loss.h"

#include "model/aten.h"

#include "absl/strings/str_cat.h"

namespace cohort::learner {
namespace {

absl::Status TorchError(const char* where, const std::exception& e) {
  if (const auto* c10 = dynamic_cast<const c10::Error*>(&e)) {
    return absl::InternalError(absl::StrCat(where, ": ", c10->what_without_backtrace()));
  }
  return absl::InternalError(absl::StrCat(where, ": ", e.what()));
}

double Sum(const at::Tensor& t) { return t.sum().item<double>(); }

absl::Status CheckShape(const char* name, const at::Tensor& t, const at::Tensor& like) {
  if (!t.defined()) return absl::InvalidArgumentError(absl::StrCat("loss: ", name, " missing"));
  if (t.sizes() != like.sizes()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "loss: ", name, " has shape ", c10::str(t.sizes()), ", expected ", c10::str(like.sizes())));
  }
  return absl::OkStatus();
}

}  // namespace

void LossStats::Add(const LossStats& o) {
  tokens += o.tokens;
  sequences += o.sequences;
  kl_sum += o.kl_sum;
  clip_low += o.clip_low;
  clip_high += o.clip_high;
  ratio_sum += o.ratio_sum;
  tis_truncated += o.tis_truncated;
  loss += o.loss;
}

GrpoLossOptions GrpoLossOptions::FromConfig(const GrpoSection& grpo,
                                            const SamplingSection& sampling) {
  GrpoLossOptions o;
  o.loss_type = grpo.loss_type;
  o.epsilon = grpo.epsilon;
  o.epsilon_high = grpo.epsilon_high > 0 ? grpo.epsilon_high : grpo.epsilon;
  o.beta = grpo.beta;
  o.importance_sampling_level = grpo.importance_sampling_level;
  o.tis_cap = grpo.tis_cap;
  o.max_completion_length = sampling.max_new_tokens;
  return o;
}

absl::Status GrpoLossOptions::Validate() const {
  if (loss_type != "grpo" && loss_type != "dapo" && loss_type != "bnpo" && loss_type != "dr_grpo") {
    return absl::InvalidArgumentError(
        absl::StrCat("loss: unknown loss_type \"", loss_type, "\" (grpo | dapo | bnpo | dr_grpo)"));
  }
  if (importance_sampling_level != "token" && importance_sampling_level != "sequence") {
    return absl::InvalidArgumentError(absl::StrCat("loss: unknown importance_sampling_level \"",
                                                   importance_sampling_level,
                                                   "\" (token | sequence)"));
  }
  if (!(epsilon > 0) || !(epsilon_high > 0) || beta < 0 || tis_cap < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("loss: need epsilon > 0, epsilon_high > 0, beta >= 0, tis_cap >= 0; got ",
                     epsilon, ", ", epsilon_high, ", ", beta, ", ", tis_cap));
  }
  if (loss_type == "dr_grpo" && max_completion_length <= 0) {
    return absl::InvalidArgumentError("loss: dr_grpo needs max_completion_length > 0");
  }
  return absl::OkStatus();
}

absl::StatusOr<LossOutput> GrpoLoss(const LossInputs& in, const GrpoLossOptions& o,
                                    const BatchTotals& totals) {
  if (absl::Status s = o.Validate(); !s.ok()) return s;
  if (!in.logp.defined() || in.logp.dim() != 2) {
    return absl::InvalidArgumentError("loss: logp must be [sequences, tokens]");
  }
  if (absl::Status s = CheckShape("old_logp", in.old_logp, in.logp); !s.ok()) return s;
  if (absl::Status s = CheckShape("mask", in.mask, in.logp); !s.ok()) return s;
  if (o.beta > 0) {
    if (absl::Status s = CheckShape("ref_logp", in.ref_logp, in.logp); !s.ok()) return s;
  }
  if (o.tis_cap > 0) {
    if (absl::Status s = CheckShape("behaviour_logp", in.behaviour_logp, in.logp); !s.ok()) {
      return s;
    }
  }
  if (!in.advantages.defined() || in.advantages.dim() != 1 ||
      in.advantages.size(0) != in.logp.size(0)) {
    return absl::InvalidArgumentError("loss: advantages must be [sequences]");
  }
  if (totals.sequences <= 0 || totals.micro_batches <= 0) {
    return absl::InvalidArgumentError("loss: batch totals must count at least one sequence");
  }
  try {
    const at::Tensor mask = in.mask.to(at::kFloat);
    const at::Tensor adv = in.advantages.to(at::kFloat).unsqueeze(1);  // [S, 1]
    const at::Tensor tokens_per_seq = mask.sum(-1);
    at::Tensor log_ratio = in.logp - in.old_logp.detach();
    if (o.importance_sampling_level == "sequence") {
      log_ratio = ((log_ratio * mask).sum(-1) / tokens_per_seq.clamp_min(1.0)).unsqueeze(-1);
    }
    const at::Tensor ratio = at::exp(log_ratio);  // [S, T] or [S, 1]
    const at::Tensor clipped = at::clamp(ratio, 1.0 - o.epsilon, 1.0 + o.epsilon_high);
    at::Tensor per_token = -at::min(ratio * adv, clipped * adv).expand_as(mask);
    LossStats stats;
    if (o.tis_cap > 0) {
      at::Tensor w = at::exp(in.old_logp - in.behaviour_logp).detach();
      stats.tis_truncated = Sum((w > o.tis_cap).to(at::kFloat) * mask);
      per_token = per_token * at::clamp_max(w, o.tis_cap);
    }
    at::Tensor kl;
    if (o.beta > 0) {
      at::Tensor d = in.ref_logp.detach() - in.logp;
      kl = at::exp(d) - d - 1.0;
      per_token = per_token + o.beta * kl;
    }
    const at::Tensor masked = per_token * mask;
    at::Tensor loss;
    if (o.loss_type == "grpo") {
      loss = (masked.sum(-1) / tokens_per_seq.clamp_min(1.0)).sum() /
             static_cast<double>(totals.sequences);
    } else if (o.loss_type == "dapo") {
      loss = masked.sum() / std::max(totals.tokens, 1.0);
    } else if (o.loss_type == "bnpo") {
      loss = masked.sum() / mask.sum().clamp_min(1.0) / static_cast<double>(totals.micro_batches);
    } else {  // dr_grpo
      loss = masked.sum() /
             (static_cast<double>(totals.sequences) * static_cast<double>(o.max_completion_length));
    }
    {
      at::NoGradGuard no_grad;
      const at::Tensor r = ratio.detach().expand_as(mask);
      const at::Tensor a = adv.expand_as(mask);
      stats.tokens = Sum(mask);
      stats.sequences = static_cast<double>(in.logp.size(0));
      stats.clip_low = Sum(at::logical_and(r < 1.0 - o.epsilon, a < 0).to(at::kFloat) * mask);
      stats.clip_high = Sum(at::logical_and(r > 1.0 + o.epsilon_high, a > 0).to(at::kFloat) * mask);
      stats.ratio_sum = Sum(r * mask);
      if (kl.defined()) stats.kl_sum = Sum(kl.detach() * mask);
      stats.loss = loss.item<double>();
    }
    return LossOutput{loss, stats};
  } catch (const std::exception& e) {
    return TorchError("grpo loss", e);
  }
}

absl::StatusOr<LossOutput> SftLoss(const at::Tensor& logp, const at::Tensor& mask,
                                   const BatchTotals& totals) {
  if (absl::Status s = CheckShape("mask", mask, logp); !s.ok()) return s;
  try {
    at::Tensor m = mask.to(at::kFloat);
    at::Tensor loss = -(logp * m).sum() / std::max(totals.tokens, 1.0);
    LossStats stats;
    stats.tokens = Sum(m);
    stats.sequences = static_cast<double>(logp.size(0));
    stats.loss = loss.item<double>();
    return LossOutput{loss, stats};
  } catch (const std::exception& e) {
    return TorchError("sft loss", e);
  }
}

}  // namespace cohort::learner
