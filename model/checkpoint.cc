#include "model/checkpoint.h"

#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

// <ATen/core/ivalue.h> must precede <ATen/ATen.h> with clang 14 in C++20
// mode (otherwise: "arithmetic on a pointer to an incomplete type IValue").
// clang-format off
#include <ATen/core/ivalue.h>
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
// clang-format on

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/status.h"
#include "nlohmann/json.hpp"

namespace cohort::model {
namespace {

namespace fs = std::filesystem;

std::string ShapeText(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

bool IgnoredName(const ModelConfig& config, const std::string& name) {
  if (config.tie_word_embeddings && name == "lm_head.weight") return true;
  return absl::EndsWith(name, ".rotary_emb.inv_freq");
}

std::string TorchDtypeName(at::ScalarType t) {
  switch (t) {
    case at::kBFloat16:
      return "bfloat16";
    case at::kHalf:
      return "float16";
    default:
      return "float32";
  }
}

absl::Status CheckFloatType(at::ScalarType t, const char* what) {
  if (t != at::kFloat && t != at::kBFloat16 && t != at::kHalf) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, " dtype ", c10::toString(t), " is not supported (use float32, bfloat16 or float16)"));
  }
  return absl::OkStatus();
}

absl::Status WriteText(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
  out.close();
  if (!out) return absl::InternalError(absl::StrCat("writing '", path.string(), "' failed"));
  return absl::OkStatus();
}

absl::Status CopyInto(const std::string& from, const fs::path& dir, const char* name) {
  std::error_code ec;
  if (!fs::is_regular_file(from, ec)) {
    return absl::NotFoundError(absl::StrCat("cannot copy '", from, "': not a file"));
  }
  fs::copy_file(from, dir / name, fs::copy_options::overwrite_existing, ec);
  if (ec) {
    return absl::InternalError(
        absl::StrCat("copying '", from, "' to '", (dir / name).string(), "': ", ec.message()));
  }
  return absl::OkStatus();
}

std::string GenerationConfigJson(const ModelConfig& config) {
  nlohmann::ordered_json j = nlohmann::ordered_json::object();
  if (config.bos_token_id >= 0) j["bos_token_id"] = config.bos_token_id;
  if (config.eos_token_ids.size() == 1) {
    j["eos_token_id"] = config.eos_token_ids[0];
  } else if (!config.eos_token_ids.empty()) {
    j["eos_token_id"] = config.eos_token_ids;
  }
  return j.dump(2) + "\n";
}

// A sibling of `dir` no other writer uses.
fs::path TempSibling(const fs::path& dir) {
  static std::atomic<int> counter{0};
  fs::path parent = dir.parent_path();
  std::string name =
      absl::StrCat(".", dir.filename().string(), ".tmp-", ::getpid(), "-", counter.fetch_add(1));
  return parent.empty() ? fs::path(name) : parent / name;
}

}  // namespace

std::vector<TensorSpec> ExpectedTensors(const ModelConfig& c) {
  const int64_t q_out = c.num_attention_heads * c.head_dim;
  const int64_t kv_out = c.num_key_value_heads * c.head_dim;
  std::vector<TensorSpec> out;
  out.push_back({"model.embed_tokens.weight", {c.vocab_size, c.hidden_size}});
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    const std::string p = absl::StrCat("model.layers.", i, ".");
    out.push_back({p + "self_attn.q_proj.weight", {q_out, c.hidden_size}});
    out.push_back({p + "self_attn.k_proj.weight", {kv_out, c.hidden_size}});
    out.push_back({p + "self_attn.v_proj.weight", {kv_out, c.hidden_size}});
    out.push_back({p + "self_attn.o_proj.weight", {c.hidden_size, q_out}});
    if (c.attention_bias) {
      out.push_back({p + "self_attn.q_proj.bias", {q_out}});
      out.push_back({p + "self_attn.k_proj.bias", {kv_out}});
      out.push_back({p + "self_attn.v_proj.bias", {kv_out}});
    }
    if (c.qk_norm) {
      out.push_back({p + "self_attn.q_norm.weight", {c.head_dim}});
      out.push_back({p + "self_attn.k_norm.weight", {c.head_dim}});
    }
    out.push_back({p + "mlp.gate_proj.weight", {c.intermediate_size, c.hidden_size}});
    out.push_back({p + "mlp.up_proj.weight", {c.intermediate_size, c.hidden_size}});
    out.push_back({p + "mlp.down_proj.weight", {c.hidden_size, c.intermediate_size}});
    out.push_back({p + "input_layernorm.weight", {c.hidden_size}});
    out.push_back({p + "post_attention_layernorm.weight", {c.hidden_size}});
  }
  out.push_back({"model.norm.weight", {c.hidden_size}});
  if (!c.tie_word_embeddings) out.push_back({"lm_head.weight", {c.vocab_size, c.hidden_size}});
  return out;
}

absl::Status CheckTensorSet(const ModelConfig& config, const std::vector<TensorSpec>& present) {
  std::map<std::string, std::vector<int64_t>> have;
  for (const TensorSpec& t : present) have[t.name] = t.shape;
  std::vector<std::string> missing, wrong;
  std::set<std::string> expected_names;
  for (const TensorSpec& want : ExpectedTensors(config)) {
    expected_names.insert(want.name);
    auto it = have.find(want.name);
    if (it == have.end()) {
      missing.push_back(want.name);
    } else if (it->second != want.shape) {
      wrong.push_back(absl::StrCat(want.name, " is ", ShapeText(it->second), ", expected ",
                                   ShapeText(want.shape)));
    }
  }
  std::vector<std::string> extra;
  for (const auto& [name, shape] : have) {
    if (!expected_names.count(name) && !IgnoredName(config, name)) extra.push_back(name);
  }
  if (missing.empty() && extra.empty() && wrong.empty()) return absl::OkStatus();
  // Long lists are cut so the message stays readable; the counts are exact.
  auto list = [](const std::vector<std::string>& v) {
    const size_t kMax = 20;
    std::vector<std::string> head(v.begin(), v.begin() + std::min(v.size(), kMax));
    std::string s = absl::StrJoin(head, ", ");
    if (v.size() > kMax) absl::StrAppend(&s, ", ... (", v.size() - kMax, " more)");
    return s;
  };
  std::vector<std::string> parts;
  if (!missing.empty()) parts.push_back(absl::StrCat(missing.size(), " missing: ", list(missing)));
  if (!extra.empty()) parts.push_back(absl::StrCat(extra.size(), " unexpected: ", list(extra)));
  if (!wrong.empty())
    parts.push_back(absl::StrCat(wrong.size(), " with the wrong shape: ", list(wrong)));
  return absl::InvalidArgumentError(absl::StrCat(
      "weights do not match the ", config.model_type, " config (", config.num_hidden_layers,
      " layers, hidden ", config.hidden_size, "): ", absl::StrJoin(parts, "; ")));
}

TensorMap RandomInitWeights(const ModelConfig& config, uint64_t seed, double std) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  TensorMap weights;
  for (const TensorSpec& spec : ExpectedTensors(config)) {
    at::Tensor t;
    if (absl::EndsWith(spec.name, "norm.weight")) {
      t = at::ones(spec.shape, at::kFloat);
    } else if (absl::EndsWith(spec.name, ".bias")) {
      t = at::zeros(spec.shape, at::kFloat);
    } else {
      t = at::empty(spec.shape, at::kFloat);
      t.normal_(0.0, std, gen);
    }
    weights.emplace(spec.name, std::move(t));
  }
  return weights;
}

absl::StatusOr<at::ScalarType> ScalarTypeFromSafetensors(const std::string& dtype) {
  if (dtype == "F32") return at::kFloat;
  if (dtype == "BF16") return at::kBFloat16;
  if (dtype == "F16") return at::kHalf;
  if (dtype == "F64") return at::kDouble;
  return absl::InvalidArgumentError(absl::StrCat("dtype ", dtype,
                                                 " is not a floating-point type cohort loads "
                                                 "(F32, BF16, F16, F64)"));
}

absl::StatusOr<std::string> SafetensorsDtype(at::ScalarType type) {
  switch (type) {
    case at::kFloat:
      return std::string("F32");
    case at::kBFloat16:
      return std::string("BF16");
    case at::kHalf:
      return std::string("F16");
    case at::kDouble:
      return std::string("F64");
    case at::kLong:
      return std::string("I64");
    case at::kInt:
      return std::string("I32");
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("dtype ", c10::toString(type), " has no safetensors equivalent here"));
  }
}

absl::StatusOr<LoadedModel> LoadModelDir(const std::string& dir, at::ScalarType dtype) {
  auto in_dir = [&](const absl::Status& s) {
    return Annotate(s, absl::StrCat("loading model directory '", dir, "'"));
  };
  RETURN_IF_ERROR(in_dir(CheckFloatType(dtype, "requested")));
  LoadedModel model;
  {
    auto config = ModelConfig::FromFile((fs::path(dir) / "config.json").string());
    if (!config.ok()) return in_dir(config.status());
    model.config = *std::move(config);
  }
  auto ckpt = safetensors::Checkpoint::Open(dir);
  if (!ckpt.ok()) return in_dir(ckpt.status());
  std::vector<TensorSpec> present;
  for (const safetensors::TensorInfo* t : (*ckpt)->tensors())
    present.push_back({t->name, t->shape});
  RETURN_IF_ERROR(in_dir(CheckTensorSet(model.config, present)));

  try {
    for (const TensorSpec& spec : ExpectedTensors(model.config)) {
      const safetensors::TensorInfo* t = (*ckpt)->Find(spec.name);
      auto file_type = ScalarTypeFromSafetensors(t->dtype);
      if (!file_type.ok()) {
        return in_dir(Annotate(file_type.status(), absl::StrCat("tensor '", spec.name, "'")));
      }
      // Copy out of the mapping first: it is only 1-byte aligned in general
      // and is unmapped when this function returns.
      at::Tensor raw = at::empty(spec.shape, at::TensorOptions().dtype(*file_type));
      if (t->size_bytes > 0) std::memcpy(raw.data_ptr(), t->data, t->size_bytes);
      model.weights.emplace(spec.name, *file_type == dtype ? raw : raw.to(dtype));
    }
  } catch (const c10::Error& e) {
    return in_dir(
        absl::InternalError(absl::StrCat("converting weights: ", e.what_without_backtrace())));
  }
  return model;
}

absl::Status SaveModelDir(const std::string& dir, const ModelConfig& config,
                          const TensorMap& weights, const SaveOptions& options) {
  auto in_dir = [&](const absl::Status& s) {
    return Annotate(s, absl::StrCat("saving model directory '", dir, "'"));
  };
  RETURN_IF_ERROR(in_dir(CheckFloatType(options.dtype, "save")));
  std::vector<TensorSpec> present;
  for (const auto& [name, t] : weights) {
    present.push_back({name, std::vector<int64_t>(t.sizes().begin(), t.sizes().end())});
  }
  RETURN_IF_ERROR(in_dir(CheckTensorSet(config, present)));
  ASSIGN_OR_RETURN(std::string st_dtype, SafetensorsDtype(options.dtype));

  std::vector<at::Tensor> keep;  // owns the converted data the views point at
  std::vector<safetensors::TensorView> views;
  try {
    for (const TensorSpec& spec : ExpectedTensors(config)) {
      at::Tensor t = weights.at(spec.name).detach().to(at::kCPU, options.dtype).contiguous();
      keep.push_back(t);
      views.push_back({spec.name, st_dtype, spec.shape, t.data_ptr(),
                       static_cast<size_t>(t.numel()) * t.element_size()});
    }
  } catch (const c10::Error& e) {
    return in_dir(
        absl::InternalError(absl::StrCat("converting weights: ", e.what_without_backtrace())));
  }

  const fs::path target(dir);
  std::error_code ec;
  if (fs::exists(target, ec) && !fs::is_directory(target, ec)) {
    return in_dir(absl::FailedPreconditionError("exists and is not a directory"));
  }
  if (!target.parent_path().empty()) fs::create_directories(target.parent_path(), ec);
  const fs::path tmp = TempSibling(target);
  fs::remove_all(tmp, ec);
  if (!fs::create_directory(tmp, ec)) {
    return in_dir(
        absl::InternalError(absl::StrCat("cannot create '", tmp.string(), "': ", ec.message())));
  }
  auto write_all = [&]() -> absl::Status {
    ModelConfig written = config;
    written.torch_dtype = TorchDtypeName(options.dtype);
    RETURN_IF_ERROR(WriteText(tmp / "config.json", written.ToJson()));
    RETURN_IF_ERROR(WriteText(tmp / "generation_config.json", GenerationConfigJson(config)));
    if (!options.tokenizer_json.empty()) {
      RETURN_IF_ERROR(CopyInto(options.tokenizer_json, tmp, "tokenizer.json"));
    }
    if (!options.tokenizer_config_json.empty()) {
      RETURN_IF_ERROR(CopyInto(options.tokenizer_config_json, tmp, "tokenizer_config.json"));
    }
    auto files = safetensors::WriteSharded(tmp.string(), views, options.max_shard_bytes);
    return files.status();
  };
  absl::Status s = write_all();
  if (!s.ok()) {
    fs::remove_all(tmp, ec);
    return in_dir(s);
  }
  keep.clear();
  views.clear();
  if (fs::exists(target, ec)) {
    // Swap the new directory in atomically, then delete the old one.
    if (::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, target.c_str(), RENAME_EXCHANGE) != 0) {
      std::string err = std::strerror(errno);
      fs::remove_all(tmp, ec);
      return in_dir(absl::InternalError(absl::StrCat("renameat2(RENAME_EXCHANGE): ", err)));
    }
    fs::remove_all(tmp, ec);  // now holds the old directory
  } else if (::rename(tmp.c_str(), target.c_str()) != 0) {
    std::string err = std::strerror(errno);
    fs::remove_all(tmp, ec);
    return in_dir(absl::InternalError(absl::StrCat("rename: ", err)));
  }
  return absl::OkStatus();
}

}  // namespace cohort::model
