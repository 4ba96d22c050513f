#include "model/transformer.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <set>
#include <utility>

#include "model/aten.h"
#include <ATen/core/grad_mode.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/status.h"
#include "model/attention.h"
#include "model/fused_ops.h"
#include "model/kv_cache.h"
#include "model/torch_error.h"

namespace cohort::model {
namespace {

// FusedLayer's attention runs fused::Attention (loops over each row's
// allowed keys, the masked half skipped) up to these sizes; beyond them
// the batched matmuls, whose blocked GEMMs that kernel does not have.
// Forward + backward, one thread: 2.4x faster than the matmuls + masked
// softmax at tiny's shape (head_dim 16, 64 positions), 1.1x at
// qwen2.5-0.5b's (head_dim 64), even at 512 positions (head_dim 64 or 128).
constexpr int64_t kFusedAttentionMaxHeadDim = 128;
constexpr int64_t kFusedAttentionMaxPositions = 512;

std::string ShapeString(at::IntArrayRef shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

int64_t HeadDim(const ModelConfig& c) {
  if (c.head_dim > 0) return c.head_dim;
  return c.num_attention_heads > 0 ? c.hidden_size / c.num_attention_heads : 0;
}

absl::Status CheckConfig(const ModelConfig& c) {
  auto positive = [](const char* name, int64_t v) -> absl::Status {
    if (v <= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("model config: ", name, " must be positive, got ", v));
    }
    return absl::OkStatus();
  };
  RETURN_IF_ERROR(positive("vocab_size", c.vocab_size));
  RETURN_IF_ERROR(positive("hidden_size", c.hidden_size));
  RETURN_IF_ERROR(positive("intermediate_size", c.intermediate_size));
  RETURN_IF_ERROR(positive("num_hidden_layers", c.num_hidden_layers));
  RETURN_IF_ERROR(positive("num_attention_heads", c.num_attention_heads));
  RETURN_IF_ERROR(positive("num_key_value_heads", c.num_key_value_heads));
  RETURN_IF_ERROR(positive("head_dim", HeadDim(c)));
  if (c.num_attention_heads % c.num_key_value_heads != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("model config: num_attention_heads (", c.num_attention_heads,
                     ") is not a multiple of num_key_value_heads (", c.num_key_value_heads, ")"));
  }
  if (HeadDim(c) % 2 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("model config: head_dim must be even for RoPE, got ", HeadDim(c)));
  }
  if (!c.rope_scaling.type.empty() && c.rope_scaling.type != "llama3" &&
      c.rope_scaling.type != "default") {
    return absl::InvalidArgumentError(absl::StrCat("model config: unsupported rope_scaling type \"",
                                                   c.rope_scaling.type, "\" (supported: llama3)"));
  }
  if (c.rope_theta <= 0) {
    return absl::InvalidArgumentError("model config: rope_theta must be > 0");
  }
  return absl::OkStatus();
}

// Inverse RoPE frequencies, computed in fp32 the way Hugging Face does,
// with Llama 3 scaling when configured.
at::Tensor InverseFrequencies(const ModelConfig& c, int64_t head_dim) {
  at::Tensor exponent = at::arange(0, head_dim, 2, at::kLong).to(at::kFloat) / head_dim;
  at::Tensor inv_freq = at::reciprocal(at::pow(c.rope_theta, exponent));
  if (c.rope_scaling.type == "llama3") {
    const double factor = c.rope_scaling.factor;
    const double low = c.rope_scaling.low_freq_factor;
    const double high = c.rope_scaling.high_freq_factor;
    const double old_len = static_cast<double>(c.rope_scaling.original_max_position_embeddings);
    const double low_freq_wavelen = old_len / low;
    const double high_freq_wavelen = old_len / high;
    at::Tensor wavelen = 2 * M_PI / inv_freq;
    at::Tensor scaled = at::where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq);
    at::Tensor smooth = (old_len / wavelen - low) / (high - low);
    at::Tensor smoothed = (1 - smooth) * scaled / factor + smooth * scaled;
    at::Tensor medium = at::logical_and(at::logical_not(wavelen < high_freq_wavelen),
                                        at::logical_not(wavelen > low_freq_wavelen));
    inv_freq = at::where(medium, smoothed, scaled);
  }
  return inv_freq.contiguous();
}

// x @ weight^T (+ bias). A single row goes through a matrix-vector product:
// OpenBLAS's sgemv streams the weight several times faster than sgemm with
// one row, and batch-1 decoding is bound by that weight read.
at::Tensor Linear(const at::Tensor& x, const at::Tensor& weight,
                  const at::Tensor& bias = at::Tensor()) {
  const int64_t in = weight.size(1);
  if (x.numel() == in) {
    std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
    shape.back() = weight.size(0);
    at::Tensor y = at::mv(weight, x.reshape({in}));
    if (bias.defined()) y = y + bias;
    return y.view(shape);
  }
  return at::linear(x, weight, bias);
}

}  // namespace

// Where one forward's attention reads keys and values.
struct Transformer::AttentionPlan {
  enum Kind { kFull, kPrefill, kDecode, kPrefillBatch } kind = kFull;
  // [B, 1, Tq, Tk] bool: query i may attend key j.
  at::Tensor allowed;
  KvCache* cache = nullptr;
  // kPrefill: the slot and the position of the first new token.
  int64_t slot = 0;
  int64_t start = 0;
  // kDecode: slots [n] (long), write positions [n] (long), keys to read.
  at::Tensor slot_index, write_pos;
  int64_t first_slot = -1;  // >= 0 when the slots are consecutive ascending
  int64_t read_len = 0;
};

std::vector<std::pair<std::string, std::vector<int64_t>>> Transformer::ExpectedWeightShapes(
    const ModelConfig& c) {
  const int64_t d = c.hidden_size, hd = HeadDim(c);
  const int64_t q_out = c.num_attention_heads * hd;
  const int64_t kv_out = c.num_key_value_heads * hd;
  std::vector<std::pair<std::string, std::vector<int64_t>>> out;
  out.push_back({"model.embed_tokens.weight", {c.vocab_size, d}});
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    const std::string p = absl::StrCat("model.layers.", i, ".");
    out.push_back({p + "input_layernorm.weight", {d}});
    out.push_back({p + "self_attn.q_proj.weight", {q_out, d}});
    out.push_back({p + "self_attn.k_proj.weight", {kv_out, d}});
    out.push_back({p + "self_attn.v_proj.weight", {kv_out, d}});
    if (c.attention_bias) {
      out.push_back({p + "self_attn.q_proj.bias", {q_out}});
      out.push_back({p + "self_attn.k_proj.bias", {kv_out}});
      out.push_back({p + "self_attn.v_proj.bias", {kv_out}});
    }
    if (c.qk_norm) {
      out.push_back({p + "self_attn.q_norm.weight", {hd}});
      out.push_back({p + "self_attn.k_norm.weight", {hd}});
    }
    out.push_back({p + "self_attn.o_proj.weight", {d, q_out}});
    out.push_back({p + "post_attention_layernorm.weight", {d}});
    out.push_back({p + "mlp.gate_proj.weight", {c.intermediate_size, d}});
    out.push_back({p + "mlp.up_proj.weight", {c.intermediate_size, d}});
    out.push_back({p + "mlp.down_proj.weight", {d, c.intermediate_size}});
  }
  out.push_back({"model.norm.weight", {d}});
  if (!c.tie_word_embeddings) {
    out.push_back({"lm_head.weight", {c.vocab_size, d}});
  }
  return out;
}

absl::Status Transformer::CheckWeights(const ModelConfig& config, const TensorMap& weights) {
  RETURN_IF_ERROR(CheckConfig(config));
  std::vector<std::string> missing;
  std::set<std::string> expected;
  for (const auto& [name, shape] : ExpectedWeightShapes(config)) {
    expected.insert(name);
    auto it = weights.find(name);
    if (it == weights.end() || !it->second.defined()) {
      missing.push_back(name);
      continue;
    }
    if (it->second.sizes() != at::IntArrayRef(shape)) {
      return absl::InvalidArgumentError(absl::StrCat("weight ", name, " has shape ",
                                                     ShapeString(it->second.sizes()), ", expected ",
                                                     ShapeString(shape)));
    }
    if (!at::isFloatingType(it->second.scalar_type())) {
      return absl::InvalidArgumentError(
          absl::StrCat("weight ", name, " is not a floating-point tensor"));
    }
  }
  if (!missing.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "missing weights (", missing.size(), "): ",
        absl::StrJoin(missing.begin(), missing.begin() + std::min<size_t>(missing.size(), 8), ", "),
        missing.size() > 8 ? ", ..." : ""));
  }
  std::vector<std::string> extra;
  for (const auto& [name, tensor] : weights) {
    // A tied checkpoint may still carry lm_head.weight; it is ignored.
    if (!expected.count(name) && !(config.tie_word_embeddings && name == "lm_head.weight")) {
      extra.push_back(name);
    }
  }
  if (!extra.empty()) {
    std::sort(extra.begin(), extra.end());
    return absl::InvalidArgumentError(absl::StrCat(
        "unexpected weights (", extra.size(), "): ",
        absl::StrJoin(extra.begin(), extra.begin() + std::min<size_t>(extra.size(), 8), ", "),
        extra.size() > 8 ? ", ..." : ""));
  }
  return absl::OkStatus();
}

Transformer::Transformer(const ModelConfig& config, at::ScalarType dtype, at::Device device)
    : config_([&] {
        ModelConfig c = config;
        c.head_dim = HeadDim(config);
        return c;
      }()),
      dtype_(dtype),
      device_(device) {}

absl::StatusOr<std::unique_ptr<Transformer>> Transformer::Create(const ModelConfig& config,
                                                                 TensorMap weights,
                                                                 at::ScalarType dtype,
                                                                 at::Device device) {
  if (dtype != at::kFloat && dtype != at::kBFloat16) {
    return absl::InvalidArgumentError(
        absl::StrCat("transformer: dtype must be float32 or bfloat16, got ", c10::toString(dtype)));
  }
  RETURN_IF_ERROR(CheckConfig(config));
  std::unique_ptr<Transformer> model(new Transformer(config, dtype, device));
  try {
    at::NoGradGuard no_grad;
    model->inv_freq_ = InverseFrequencies(model->config_, model->config_.head_dim).to(device);
  } catch (const std::exception& e) {
    return TorchError("transformer: rope frequencies", e);
  }
  RETURN_IF_ERROR(model->Install(std::move(weights)));
  return model;
}

absl::Status Transformer::Install(TensorMap weights) {
  RETURN_IF_ERROR(CheckWeights(config_, weights));
  if (config_.tie_word_embeddings) weights.erase("lm_head.weight");
  try {
    at::NoGradGuard no_grad;
    for (auto& [name, tensor] : weights) {
      tensor = tensor.to(device_, dtype_).contiguous();
    }
    auto get = [&](const std::string& name) { return weights.at(name); };
    std::vector<Layer> layers(config_.num_hidden_layers);
    for (int64_t i = 0; i < config_.num_hidden_layers; ++i) {
      const std::string p = absl::StrCat("model.layers.", i, ".");
      Layer& l = layers[i];
      l.input_norm = get(p + "input_layernorm.weight");
      l.post_norm = get(p + "post_attention_layernorm.weight");
      l.wq = get(p + "self_attn.q_proj.weight");
      l.wk = get(p + "self_attn.k_proj.weight");
      l.wv = get(p + "self_attn.v_proj.weight");
      l.wo = get(p + "self_attn.o_proj.weight");
      if (config_.attention_bias) {
        l.bq = get(p + "self_attn.q_proj.bias");
        l.bk = get(p + "self_attn.k_proj.bias");
        l.bv = get(p + "self_attn.v_proj.bias");
      }
      if (config_.qk_norm) {
        l.q_norm = get(p + "self_attn.q_norm.weight");
        l.k_norm = get(p + "self_attn.k_norm.weight");
      }
      l.w_gate = get(p + "mlp.gate_proj.weight");
      l.w_up = get(p + "mlp.up_proj.weight");
      l.w_down = get(p + "mlp.down_proj.weight");
    }
    embed_ = get("model.embed_tokens.weight");
    final_norm_ = get("model.norm.weight");
    lm_head_ = config_.tie_word_embeddings ? embed_ : get("lm_head.weight");
    layers_ = std::move(layers);
    weights_ = std::move(weights);
  } catch (const std::exception& e) {
    return TorchError("transformer: installing weights", e);
  }
  return absl::OkStatus();
}

absl::Status Transformer::SwapWeights(TensorMap weights, int64_t version) {
  RETURN_IF_ERROR(Install(std::move(weights)));
  version_ = version;
  return absl::OkStatus();
}

int64_t Transformer::DecodeWeightBytes() const {
  int64_t bytes = 0;
  auto add = [&](const at::Tensor& t) {
    if (t.defined()) bytes += t.numel() * static_cast<int64_t>(t.element_size());
  };
  for (const Layer& l : layers_) {
    for (const at::Tensor* t :
         {&l.input_norm, &l.post_norm, &l.wq, &l.wk, &l.wv, &l.wo, &l.bq, &l.bk, &l.bv, &l.q_norm,
          &l.k_norm, &l.w_gate, &l.w_up, &l.w_down}) {
      add(*t);
    }
  }
  add(final_norm_);
  add(lm_head_);
  return bytes;
}

at::Tensor Transformer::RmsNorm(const at::Tensor& x, const at::Tensor& weight) const {
  at::Tensor xf = x.to(at::kFloat);
  at::Tensor variance = xf.pow(2).mean(-1, /*keepdim=*/true);
  xf = xf * at::rsqrt(variance + config_.rms_norm_eps);
  return weight * xf.to(dtype_);
}

at::Tensor Transformer::ApplyRope(const at::Tensor& x, const at::Tensor& cos,
                                  const at::Tensor& sin) const {
  const int64_t half = config_.head_dim / 2;
  at::Tensor x1 = x.narrow(-1, 0, half);
  at::Tensor x2 = x.narrow(-1, half, half);
  at::Tensor rotated = at::cat({-x2, x1}, -1);
  return x * cos + rotated * sin;
}

at::Tensor Transformer::Logits(const at::Tensor& hidden) const {
  return Linear(hidden, lm_head_).to(at::kFloat);
}

at::Tensor Transformer::Attention(int64_t layer_index, const Layer& layer, const at::Tensor& normed,
                                  const at::Tensor& rope, const AttentionPlan& plan) const {
  const int64_t b = normed.size(0), t = normed.size(1);
  const int64_t h = config_.num_attention_heads;
  const int64_t kvh = config_.num_key_value_heads;
  const int64_t hd = config_.head_dim;
  at::Tensor q = Linear(normed, layer.wq, layer.bq).view({b, t, h, hd});
  at::Tensor k = Linear(normed, layer.wk, layer.bk).view({b, t, kvh, hd});
  at::Tensor v = Linear(normed, layer.wv, layer.bv).view({b, t, kvh, hd});
  if (config_.qk_norm) {
    q = RmsNorm(q, layer.q_norm);
    k = RmsNorm(k, layer.k_norm);
  }
  // rope: [2, B, T, 1, hd] (cos, sin).
  q = ApplyRope(q, rope[0], rope[1]);
  k = ApplyRope(k, rope[0], rope[1]);
  q = q.transpose(1, 2);  // [B, H, T, hd]
  k = k.transpose(1, 2);  // [B, kvh, T, hd]
  v = v.transpose(1, 2);

  at::Tensor keys, values;
  switch (plan.kind) {
    case AttentionPlan::kFull:
      keys = k;
      values = v;
      break;
    case AttentionPlan::kPrefillBatch:
      // Fresh slots: row i's K/V go to positions [0, T) of slot_index[i]
      // (padding rows past a prompt's end are never read: the slot's
      // length stops at the prompt).
      plan.cache->k(layer_index).narrow(2, 0, t).index_copy_(0, plan.slot_index, k);
      plan.cache->v(layer_index).narrow(2, 0, t).index_copy_(0, plan.slot_index, v);
      keys = k;
      values = v;
      break;
    case AttentionPlan::kPrefill: {
      at::Tensor& ck = plan.cache->k(layer_index);
      at::Tensor& cv = plan.cache->v(layer_index);
      ck[plan.slot].narrow(1, plan.start, t).copy_(k[0]);
      cv[plan.slot].narrow(1, plan.start, t).copy_(v[0]);
      keys = ck.narrow(0, plan.slot, 1).narrow(2, 0, plan.start + t);
      values = cv.narrow(0, plan.slot, 1).narrow(2, 0, plan.start + t);
      break;
    }
    case AttentionPlan::kDecode: {
      using at::indexing::Slice;
      at::Tensor& ck = plan.cache->k(layer_index);
      at::Tensor& cv = plan.cache->v(layer_index);
      ck.index_put_({plan.slot_index, Slice(), plan.write_pos}, k.select(2, 0));
      cv.index_put_({plan.slot_index, Slice(), plan.write_pos}, v.select(2, 0));
      if (plan.first_slot >= 0) {
        keys = ck.narrow(0, plan.first_slot, b).narrow(2, 0, plan.read_len);
        values = cv.narrow(0, plan.first_slot, b).narrow(2, 0, plan.read_len);
      } else {
        keys = ck.narrow(2, 0, plan.read_len).index_select(0, plan.slot_index);
        values = cv.narrow(2, 0, plan.read_len).index_select(0, plan.slot_index);
      }
      break;
    }
  }
  // Grouped-query attention without repeating K/V (model/attention.h):
  // fused SDPA kernels on CUDA with LibTorch 2, the explicit math otherwise.
  at::Tensor out = GroupedAttention(q, keys, values, plan.allowed);  // [B, H, T, hd]
  out = out.transpose(1, 2).reshape({b, t, h * hd});
  return Linear(out, layer.wo);
}

at::Tensor Transformer::RopeTable(const at::Tensor& positions) const {
  // cos/sin in fp32 (as Hugging Face computes them), then the model dtype.
  at::Tensor freqs = positions.to(at::kFloat).unsqueeze(-1) * inv_freq_;
  at::Tensor emb = at::cat({freqs, freqs}, -1).unsqueeze(2);  // [B,T,1,hd]
  return at::stack({emb.cos().to(dtype_), emb.sin().to(dtype_)});
}

at::Tensor Transformer::RunLayer(int64_t i, const at::Tensor& hidden, const at::Tensor& rope,
                                 const AttentionPlan& plan) const {
  const Layer& layer = layers_[i];
  at::Tensor h = hidden + Attention(i, layer, RmsNorm(hidden, layer.input_norm), rope, plan);
  at::Tensor x = RmsNorm(h, layer.post_norm);
  at::Tensor mlp = Linear(at::silu(Linear(x, layer.w_gate)) * Linear(x, layer.w_up), layer.w_down);
  return h + mlp;
}

at::Tensor Transformer::RunLayers(at::Tensor hidden, const at::Tensor& positions,
                                  const AttentionPlan& plan) const {
  at::Tensor rope = RopeTable(positions);
  for (size_t i = 0; i < layers_.size(); ++i) {
    hidden = RunLayer(static_cast<int64_t>(i), hidden, rope, plan);
  }
  return RmsNorm(hidden, final_norm_);
}

absl::StatusOr<Transformer::StackInputs> Transformer::PrepareStack(
    const at::Tensor& tokens, const at::Tensor& segments) const {
  if (tokens.dim() != 2 || segments.sizes() != tokens.sizes()) {
    return absl::InvalidArgumentError(absl::StrCat("stack: tokens ", ShapeString(tokens.sizes()),
                                                   " and segments ", ShapeString(segments.sizes()),
                                                   " must both be [batch, time]"));
  }
  if (tokens.numel() == 0) return absl::InvalidArgumentError("stack: empty batch");
  try {
    at::Tensor ids = tokens.to(device_, at::kLong);
    const int64_t lo = ids.min().item<int64_t>();
    const int64_t hi = ids.max().item<int64_t>();
    if (lo < 0 || hi >= config_.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("stack: token id ", lo < 0 ? lo : hi,
                                                     " outside the vocabulary [0, ",
                                                     config_.vocab_size, ")"));
    }
    const int64_t b = ids.size(0), t = ids.size(1);
    auto long_opts = at::TensorOptions().dtype(at::kLong).device(device_);
    at::Tensor seg = segments.to(device_, at::kLong);
    // A sequence starts where the id changes; its positions count from there.
    at::Tensor index = at::arange(t, long_opts).unsqueeze(0).expand({b, t});
    at::Tensor starts = at::ones({b, t}, at::TensorOptions().dtype(at::kBool).device(device_));
    if (t > 1) starts.narrow(1, 1, t - 1).copy_(seg.narrow(1, 1, t - 1) != seg.narrow(1, 0, t - 1));
    at::Tensor first = std::get<0>(at::where(starts, index, at::zeros_like(index)).cummax(1));
    at::Tensor positions = index - first;
    const int64_t longest = positions.max().item<int64_t>() + 1;
    if (config_.max_position_embeddings > 0 && longest > config_.max_position_embeddings) {
      return absl::InvalidArgumentError(absl::StrCat("stack: a sequence of ", longest,
                                                     " tokens exceeds max_position_embeddings ",
                                                     config_.max_position_embeddings));
    }
    at::Tensor causal =
        at::ones({t, t}, at::TensorOptions().dtype(at::kBool).device(device_)).tril();
    at::Tensor eye = at::eye(t, at::TensorOptions().dtype(at::kBool).device(device_));
    at::Tensor same = (seg.unsqueeze(2) == seg.unsqueeze(1)) & (seg != 0).unsqueeze(1);  // [B,T,T]
    StackInputs in;
    in.rope = RopeTable(positions);
    // Padding queries attend to themselves only, so no row is all -inf.
    in.allowed = at::logical_or(at::logical_and(causal.unsqueeze(0), same), eye.unsqueeze(0))
                     .unsqueeze(1);  // [B, 1, T, T]
    return in;
  } catch (const std::exception& e) {
    return TorchError("stack", e);
  }
}

at::Tensor Transformer::StackLayer(int64_t i, const at::Tensor& hidden,
                                   const StackInputs& in) const {
  TORCH_CHECK(i >= 0 && i < num_layers(), "stack: layer ", i, " out of range");
  if (UseFused(hidden)) return FusedLayer(i, hidden, in);
  AttentionPlan plan;
  plan.kind = AttentionPlan::kFull;
  plan.allowed = in.allowed;
  return RunLayer(i, hidden, in.rope, plan);
}

at::Tensor Transformer::FinalNorm(const at::Tensor& hidden) const {
  if (UseFused(hidden)) return fused::RmsNorm(hidden, final_norm_, config_.rms_norm_eps);
  return RmsNorm(hidden, final_norm_);
}

bool Transformer::UseFused(const at::Tensor& hidden) const {
  return fused_stack_ && fused::FusedOpsSupport(hidden) && hidden.scalar_type() == dtype_;
}

// RunLayer's computation for the kFull plan through the fused kernels: the
// same ops in the same order, each chain of element-wise ops one node.
at::Tensor Transformer::FusedLayer(int64_t i, const at::Tensor& hidden,
                                   const StackInputs& in) const {
  const Layer& layer = layers_[i];
  const double eps = config_.rms_norm_eps;
  const int64_t b = hidden.size(0), t = hidden.size(1);
  const int64_t h = config_.num_attention_heads;
  const int64_t kvh = config_.num_key_value_heads;
  const int64_t hd = config_.head_dim;
  // q/k/v (and gate/up) as one projection when the concatenated weights
  // are smaller than the activations they produce (small models: fewer,
  // larger matmuls); otherwise concatenating (and keeping for backward) the
  // weights would cost more than it saves, and the outputs are concatenated.
  const bool merge = b * t >= config_.hidden_size;
  at::Tensor normed = fused::RmsNorm(hidden, layer.input_norm, eps);
  at::Tensor packed;
  if (merge) {
    at::Tensor bias;
    if (layer.bq.defined()) bias = at::cat({layer.bq, layer.bk, layer.bv});
    packed = at::linear(normed, at::cat({layer.wq, layer.wk, layer.wv}), bias);
  } else {
    packed =
        at::cat({at::linear(normed, layer.wq, layer.bq), at::linear(normed, layer.wk, layer.bk),
                 at::linear(normed, layer.wv, layer.bv)},
                -1);
  }
  std::vector<at::Tensor> qkv =
      fused::QkvRope(packed, layer.q_norm, layer.k_norm, in.rope[0], in.rope[1], h, kvh, eps);
  const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
  at::Tensor attn;
  if (hd <= kFusedAttentionMaxHeadDim && t <= kFusedAttentionMaxPositions) {
    // One node for q.k^T, softmax and .v over each row's allowed keys.
    attn = fused::Attention(qkv[0], qkv[1], qkv[2], in.allowed, scale);
  } else {
    // Grouped-query attention as GroupedAttentionMath folds it: the g query
    // heads of a KV head are rows of one [g*T, hd] block.
    at::Tensor q4 = qkv[0].view({b, kvh, (h / kvh) * t, hd});
    at::Tensor scores = at::matmul(q4, qkv[1].transpose(-1, -2));
    at::Tensor probs = fused::MaskedSoftmax(scores, in.allowed, scale);
    attn = at::matmul(probs, qkv[2]).view({b, h, t, hd}).transpose(1, 2).reshape({b, t, h * hd});
  }
  at::Tensor mid = hidden + at::linear(attn, layer.wo);
  at::Tensor x = fused::RmsNorm(mid, layer.post_norm, eps);
  at::Tensor gate_up = merge
                           ? at::linear(x, at::cat({layer.w_gate, layer.w_up}))
                           : at::cat({at::linear(x, layer.w_gate), at::linear(x, layer.w_up)}, -1);
  return mid + at::linear(fused::SiluMul(gate_up), layer.w_down);
}

absl::StatusOr<at::Tensor> Transformer::Forward(const at::Tensor& tokens,
                                                const at::Tensor& attention_mask) const {
  ASSIGN_OR_RETURN(at::Tensor hidden, ForwardHidden(tokens, attention_mask));
  try {
    return Logits(hidden);
  } catch (const std::exception& e) {
    return TorchError("forward", e);
  }
}

absl::StatusOr<at::Tensor> Transformer::ForwardHidden(const at::Tensor& tokens,
                                                      const at::Tensor& attention_mask) const {
  if (tokens.dim() != 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("forward: tokens must be [batch, time], got ", ShapeString(tokens.sizes())));
  }
  if (attention_mask.sizes() != tokens.sizes()) {
    return absl::InvalidArgumentError(
        absl::StrCat("forward: attention_mask shape ", ShapeString(attention_mask.sizes()),
                     " differs from tokens shape ", ShapeString(tokens.sizes())));
  }
  if (tokens.numel() == 0) {
    return absl::InvalidArgumentError("forward: empty batch");
  }
  try {
    at::Tensor ids = tokens.to(device_, at::kLong);
    const int64_t lo = ids.min().item<int64_t>();
    const int64_t hi = ids.max().item<int64_t>();
    if (lo < 0 || hi >= config_.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("forward: token id ", lo < 0 ? lo : hi,
                                                     " outside the vocabulary [0, ",
                                                     config_.vocab_size, ")"));
    }
    const int64_t t = ids.size(1);
    if (config_.max_position_embeddings > 0 && t > config_.max_position_embeddings) {
      return absl::InvalidArgumentError(absl::StrCat("forward: sequence length ", t,
                                                     " exceeds max_position_embeddings ",
                                                     config_.max_position_embeddings));
    }
    at::Tensor mask = attention_mask.to(device_).to(at::kBool);
    at::Tensor positions = (mask.to(at::kLong).cumsum(1) - 1).clamp_min(0);  // [B, T]
    at::Tensor causal =
        at::ones({t, t}, at::TensorOptions().dtype(at::kBool).device(device_)).tril();
    at::Tensor eye = at::eye(t, at::TensorOptions().dtype(at::kBool).device(device_));
    // Padding queries attend to themselves only, so no row is all -inf.
    AttentionPlan plan;
    plan.kind = AttentionPlan::kFull;
    plan.allowed = at::logical_or(at::logical_and(causal.unsqueeze(0), mask.unsqueeze(1)),
                                  eye.unsqueeze(0))
                       .unsqueeze(1);  // [B, 1, T, T]
    at::Tensor hidden = at::embedding(embed_, ids);
    return RunLayers(hidden, positions, plan);
  } catch (const std::exception& e) {
    return TorchError("forward", e);
  }
}

absl::StatusOr<at::Tensor> Transformer::Prefill(KvCache& cache, int64_t slot,
                                                const std::vector<int32_t>& tokens,
                                                bool all_logits) const {
  if (slot < 0 || slot >= cache.num_slots()) {
    return absl::InvalidArgumentError(absl::StrCat("prefill: slot ", slot, " out of range"));
  }
  if (tokens.empty()) {
    return absl::InvalidArgumentError("prefill: no tokens");
  }
  const int64_t start = cache.length(slot);
  const int64_t t = static_cast<int64_t>(tokens.size());
  if (start + t > cache.max_len()) {
    return absl::OutOfRangeError(absl::StrCat(
        "prefill: ", start, " + ", t, " tokens exceed the cache's max_len ", cache.max_len()));
  }
  for (int32_t id : tokens) {
    if (id < 0 || id >= config_.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat(
          "prefill: token id ", id, " outside the vocabulary [0, ", config_.vocab_size, ")"));
    }
  }
  try {
    at::NoGradGuard no_grad;
    at::Tensor ids = at::tensor(at::ArrayRef<int32_t>(tokens), at::kInt)
                         .to(device_, at::kLong)
                         .unsqueeze(0);  // [1, T]
    auto long_opts = at::TensorOptions().dtype(at::kLong).device(device_);
    at::Tensor positions = at::arange(start, start + t, long_opts).unsqueeze(0);
    AttentionPlan plan;
    plan.kind = AttentionPlan::kPrefill;
    plan.cache = &cache;
    plan.slot = slot;
    plan.start = start;
    at::Tensor key_pos = at::arange(start + t, long_opts);
    plan.allowed =
        (key_pos.unsqueeze(0) <= positions.squeeze(0).unsqueeze(1)).view({1, 1, t, start + t});
    at::Tensor hidden = RunLayers(at::embedding(embed_, ids), positions, plan);
    cache.set_length(slot, start + t);
    if (all_logits) return Logits(hidden[0]);
    return Logits(hidden[0][t - 1]);
  } catch (const std::exception& e) {
    return TorchError("prefill", e);
  }
}

absl::StatusOr<at::Tensor> Transformer::Decode(KvCache& cache, const std::vector<int64_t>& slots,
                                               const std::vector<int32_t>& tokens) const {
  if (slots.empty() || slots.size() != tokens.size()) {
    return absl::InvalidArgumentError(absl::StrCat("decode: need one token per slot, got ",
                                                   slots.size(), " slots and ", tokens.size(),
                                                   " tokens"));
  }
  const int64_t n = static_cast<int64_t>(slots.size());
  std::vector<int64_t> lengths(n);
  bool consecutive = true;
  int64_t read_len = 0;
  std::set<int64_t> seen;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t s = slots[i];
    if (s < 0 || s >= cache.num_slots() || !seen.insert(s).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("decode: slot ", s, " out of range or repeated"));
    }
    if (tokens[i] < 0 || tokens[i] >= config_.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat(
          "decode: token id ", tokens[i], " outside the vocabulary [0, ", config_.vocab_size, ")"));
    }
    lengths[i] = cache.length(s);
    if (lengths[i] >= cache.max_len()) {
      return absl::OutOfRangeError(
          absl::StrCat("decode: slot ", s, " is full (", cache.max_len(), " positions)"));
    }
    read_len = std::max(read_len, lengths[i] + 1);
    if (i > 0 && s != slots[i - 1] + 1) consecutive = false;
  }
  try {
    at::NoGradGuard no_grad;
    at::Tensor ids = at::tensor(at::ArrayRef<int32_t>(tokens), at::kInt)
                         .to(device_, at::kLong)
                         .unsqueeze(1);                                                  // [n, 1]
    at::Tensor pos = at::tensor(at::ArrayRef<int64_t>(lengths), at::kLong).to(device_);  // [n]
    at::Tensor slot_index = at::tensor(at::ArrayRef<int64_t>(slots), at::kLong).to(device_);
    at::Tensor logits =
        DecodeOnDevice(cache, ids, pos, slot_index, consecutive ? slots[0] : -1, read_len);
    for (int64_t i = 0; i < n; ++i) cache.set_length(slots[i], lengths[i] + 1);
    return logits;
  } catch (const std::exception& e) {
    return TorchError("decode", e);
  }
}

at::Tensor Transformer::DecodeOnDevice(KvCache& cache, const at::Tensor& ids, const at::Tensor& pos,
                                       const at::Tensor& slot_index, int64_t first_slot,
                                       int64_t read_len) const {
  at::NoGradGuard no_grad;
  const int64_t n = ids.size(0);
  auto long_opts = at::TensorOptions().dtype(at::kLong).device(device_);
  AttentionPlan plan;
  plan.kind = AttentionPlan::kDecode;
  plan.cache = &cache;
  plan.slot_index = slot_index;
  plan.write_pos = pos;
  plan.first_slot = first_slot;
  plan.read_len = read_len;
  plan.allowed =
      (at::arange(read_len, long_opts).unsqueeze(0) <= pos.unsqueeze(1)).view({n, 1, 1, read_len});
  at::Tensor hidden = RunLayers(at::embedding(embed_, ids), pos.unsqueeze(1), plan);
  return Logits(hidden.select(1, 0));
}

absl::StatusOr<at::Tensor> Transformer::PrefillBatch(
    KvCache& cache, const std::vector<int64_t>& slots,
    const std::vector<std::vector<int32_t>>& prompts) const {
  if (slots.empty() || slots.size() != prompts.size()) {
    return absl::InvalidArgumentError(absl::StrCat("prefill batch: need one prompt per slot, got ",
                                                   slots.size(), " slots and ", prompts.size(),
                                                   " prompts"));
  }
  const int64_t n = static_cast<int64_t>(slots.size());
  int64_t t = 0;
  std::set<int64_t> seen;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t s = slots[i];
    if (s < 0 || s >= cache.num_slots() || !seen.insert(s).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("prefill batch: slot ", s, " out of range or repeated"));
    }
    if (cache.length(s) != 0) {
      return absl::FailedPreconditionError(
          absl::StrCat("prefill batch: slot ", s, " is not empty (length ", cache.length(s), ")"));
    }
    if (prompts[i].empty()) return absl::InvalidArgumentError("prefill batch: empty prompt");
    for (int32_t id : prompts[i]) {
      if (id < 0 || id >= config_.vocab_size) {
        return absl::InvalidArgumentError(absl::StrCat("prefill batch: token id ", id,
                                                       " outside the vocabulary [0, ",
                                                       config_.vocab_size, ")"));
      }
    }
    t = std::max<int64_t>(t, prompts[i].size());
  }
  if (t > cache.max_len()) {
    return absl::OutOfRangeError(absl::StrCat(
        "prefill batch: a prompt of ", t, " tokens exceeds the cache's max_len ", cache.max_len()));
  }
  return GuardTorch("prefill batch", [&]() -> absl::StatusOr<at::Tensor> {
    at::NoGradGuard no_grad;
    // Right-padded: real tokens at [0, len_i), so positions and cache rows
    // are those of an unbatched Prefill.
    at::Tensor tokens = at::zeros({n, t}, at::kLong);
    at::Tensor mask = at::zeros({n, t}, at::kLong);
    auto tok = tokens.accessor<int64_t, 2>();
    auto msk = mask.accessor<int64_t, 2>();
    for (int64_t i = 0; i < n; ++i) {
      for (size_t j = 0; j < prompts[i].size(); ++j) {
        tok[i][j] = prompts[i][j];
        msk[i][j] = 1;
      }
    }
    at::Tensor ids = tokens.to(device_);
    at::Tensor real = mask.to(device_).to(at::kBool);
    auto bool_opts = at::TensorOptions().dtype(at::kBool).device(device_);
    at::Tensor positions = at::arange(t, ids.options()).unsqueeze(0).expand({n, t});
    at::Tensor causal = at::ones({t, t}, bool_opts).tril();
    at::Tensor eye = at::eye(t, bool_opts);
    AttentionPlan plan;
    plan.kind = AttentionPlan::kPrefillBatch;
    plan.cache = &cache;
    plan.slot_index = at::tensor(at::ArrayRef<int64_t>(slots), at::kLong).to(device_);
    plan.allowed = at::logical_or(at::logical_and(causal.unsqueeze(0), real.unsqueeze(1)),
                                  eye.unsqueeze(0))
                       .unsqueeze(1);  // [n, 1, T, T]
    at::Tensor hidden = RunLayers(at::embedding(embed_, ids), positions, plan);
    std::vector<int64_t> last(n);
    for (int64_t i = 0; i < n; ++i) {
      last[i] = static_cast<int64_t>(prompts[i].size()) - 1;
      cache.set_length(slots[i], last[i] + 1);
    }
    at::Tensor last_index = at::tensor(at::ArrayRef<int64_t>(last), at::kLong).to(device_);
    at::Tensor rows = hidden.gather(
        1, last_index.view({n, 1, 1}).expand({n, 1, hidden.size(2)}));  // [n, 1, hidden]
    return Logits(rows.squeeze(1));
  });
}

}  // namespace cohort::model
