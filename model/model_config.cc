#include "model/model_config.h"

#include <cmath>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/file.h"
#include "core/status.h"
#include "nlohmann/json.hpp"

namespace cohort::model {
namespace {

using Json = nlohmann::json;
using OrderedJson = nlohmann::ordered_json;

absl::Status KeyError(const std::string& key, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("config.json: \"", key, "\" ", what));
}

// Reads an optional integer; null counts as absent.
absl::Status GetInt(const Json& j, const std::string& key, bool required, int64_t* out) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) {
    return required ? KeyError(key, "is missing (expected an integer)") : absl::OkStatus();
  }
  if (!it->is_number_integer()) {
    return KeyError(key, absl::StrCat("is ", it->dump(), ", expected an integer"));
  }
  *out = it->get<int64_t>();
  return absl::OkStatus();
}

absl::Status GetPositive(const Json& j, const std::string& key, bool required, int64_t* out) {
  RETURN_IF_ERROR(GetInt(j, key, required, out));
  if (j.contains(key) && !j[key].is_null() && *out <= 0) {
    return KeyError(key, absl::StrCat("is ", *out, ", expected a positive integer"));
  }
  return absl::OkStatus();
}

absl::Status GetDouble(const Json& j, const std::string& key, double* out) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_number())
    return KeyError(key, absl::StrCat("is ", it->dump(), ", expected a number"));
  *out = it->get<double>();
  return absl::OkStatus();
}

absl::Status GetBool(const Json& j, const std::string& key, bool* out) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_boolean())
    return KeyError(key, absl::StrCat("is ", it->dump(), ", expected true or false"));
  *out = it->get<bool>();
  return absl::OkStatus();
}

absl::Status GetString(const Json& j, const std::string& key, std::string* out) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_string())
    return KeyError(key, absl::StrCat("is ", it->dump(), ", expected a string"));
  *out = it->get<std::string>();
  return absl::OkStatus();
}

absl::Status ParseRopeScaling(const Json& rs, const std::string& key, RopeScaling* out) {
  if (rs.is_null()) return absl::OkStatus();
  if (!rs.is_object()) return KeyError(key, "must be an object or null");
  std::string type;
  // transformers writes "rope_type"; older configs say "type".
  RETURN_IF_ERROR(GetString(rs, "rope_type", &type));
  if (type.empty()) RETURN_IF_ERROR(GetString(rs, "type", &type));
  if (type.empty() || type == "default") return absl::OkStatus();
  if (type != "llama3") {
    return KeyError(key, absl::StrCat("has rope_type \"", type,
                                      "\", which cohort does not support (supported: "
                                      "default, llama3)"));
  }
  out->type = "llama3";
  RETURN_IF_ERROR(GetDouble(rs, "factor", &out->factor));
  RETURN_IF_ERROR(GetDouble(rs, "low_freq_factor", &out->low_freq_factor));
  RETURN_IF_ERROR(GetDouble(rs, "high_freq_factor", &out->high_freq_factor));
  RETURN_IF_ERROR(GetInt(rs, "original_max_position_embeddings", false,
                         &out->original_max_position_embeddings));
  if (out->factor <= 0 || out->low_freq_factor <= 0 ||
      out->high_freq_factor <= out->low_freq_factor || out->original_max_position_embeddings <= 0) {
    return KeyError(key,
                    "has llama3 parameters out of range (need factor > 0, "
                    "0 < low_freq_factor < high_freq_factor, "
                    "original_max_position_embeddings > 0)");
  }
  return absl::OkStatus();
}

absl::Status ParseTokenIds(const Json& j, const std::string& key, std::vector<int64_t>* out) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  if (it->is_number_integer()) {
    out->push_back(it->get<int64_t>());
    return absl::OkStatus();
  }
  if (it->is_array()) {
    for (const Json& v : *it) {
      if (!v.is_number_integer()) {
        return KeyError(key, absl::StrCat("has ", v.dump(), ", expected integer token ids"));
      }
      out->push_back(v.get<int64_t>());
    }
    return absl::OkStatus();
  }
  return KeyError(key, absl::StrCat("is ", it->dump(), ", expected an integer or a list"));
}

std::string DefaultArchitecture(const std::string& model_type) {
  if (model_type == "qwen2") return "Qwen2ForCausalLM";
  if (model_type == "qwen3") return "Qwen3ForCausalLM";
  return "LlamaForCausalLM";
}

// Shortest decimal text that reads back as the same double.
std::string DoubleText(double v) {
  char buf[64];
  for (int precision = 1; precision <= 17; ++precision) {
    std::snprintf(buf, sizeof(buf), "%.*g", precision, v);
    if (std::strtod(buf, nullptr) == v) break;
  }
  return buf;
}

}  // namespace

absl::StatusOr<ModelConfig> ModelConfig::FromJson(const std::string& text) {
  Json j;
  try {
    j = Json::parse(text);
  } catch (const Json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("config.json is not valid JSON: ", e.what()));
  }
  if (!j.is_object()) return absl::InvalidArgumentError("config.json is not a JSON object");

  ModelConfig c;
  RETURN_IF_ERROR(GetString(j, "model_type", &c.model_type));
  if (c.model_type.empty())
    return KeyError("model_type", "is missing (expected qwen2, qwen3 or llama)");
  if (c.model_type != "qwen2" && c.model_type != "qwen3" && c.model_type != "llama") {
    return KeyError("model_type", absl::StrCat("is \"", c.model_type,
                                               "\", which cohort does not support "
                                               "(supported: qwen2, qwen3, llama)"));
  }
  auto arch = j.find("architectures");
  if (arch != j.end() && !arch->is_null()) {
    if (!arch->is_array() || arch->empty() || !(*arch)[0].is_string()) {
      return KeyError("architectures", "must be a non-empty list of strings");
    }
    c.architecture = (*arch)[0].get<std::string>();
  } else {
    c.architecture = DefaultArchitecture(c.model_type);
  }
  if (c.architecture.find("ForCausalLM") == std::string::npos) {
    return KeyError("architectures",
                    absl::StrCat("is \"", c.architecture, "\", expected a *ForCausalLM model"));
  }

  RETURN_IF_ERROR(GetPositive(j, "vocab_size", true, &c.vocab_size));
  RETURN_IF_ERROR(GetPositive(j, "hidden_size", true, &c.hidden_size));
  RETURN_IF_ERROR(GetPositive(j, "intermediate_size", true, &c.intermediate_size));
  RETURN_IF_ERROR(GetPositive(j, "num_hidden_layers", true, &c.num_hidden_layers));
  RETURN_IF_ERROR(GetPositive(j, "num_attention_heads", true, &c.num_attention_heads));
  c.num_key_value_heads = c.num_attention_heads;
  RETURN_IF_ERROR(GetPositive(j, "num_key_value_heads", false, &c.num_key_value_heads));
  if (c.num_attention_heads % c.num_key_value_heads != 0) {
    return KeyError(
        "num_key_value_heads",
        absl::StrCat("is ", c.num_key_value_heads, ", which does not divide num_attention_heads ",
                     c.num_attention_heads));
  }
  if (j.contains("head_dim") && !j["head_dim"].is_null()) {
    RETURN_IF_ERROR(GetPositive(j, "head_dim", true, &c.head_dim));
  } else {
    if (c.hidden_size % c.num_attention_heads != 0) {
      return KeyError("head_dim", absl::StrCat("is missing and hidden_size ", c.hidden_size,
                                               " is not divisible by num_attention_heads ",
                                               c.num_attention_heads));
    }
    c.head_dim = c.hidden_size / c.num_attention_heads;
  }
  if (c.head_dim % 2 != 0) {
    return KeyError("head_dim", absl::StrCat("is ", c.head_dim, ", RoPE needs an even head_dim"));
  }
  // transformers' defaults when the key is absent.
  c.max_position_embeddings = c.model_type == "llama" ? 2048 : 32768;
  RETURN_IF_ERROR(GetPositive(j, "max_position_embeddings", false, &c.max_position_embeddings));
  RETURN_IF_ERROR(GetDouble(j, "rms_norm_eps", &c.rms_norm_eps));
  if (!(c.rms_norm_eps > 0)) return KeyError("rms_norm_eps", "must be positive");

  // RoPE: "rope_theta" + "rope_scaling" (transformers 4.x) or
  // "rope_parameters" {rope_type, rope_theta, ...} (transformers 5).
  RETURN_IF_ERROR(GetDouble(j, "rope_theta", &c.rope_theta));
  if (auto rp = j.find("rope_parameters"); rp != j.end() && rp->is_object()) {
    RETURN_IF_ERROR(GetDouble(*rp, "rope_theta", &c.rope_theta));
    RETURN_IF_ERROR(ParseRopeScaling(*rp, "rope_parameters", &c.rope_scaling));
  }
  if (auto rs = j.find("rope_scaling"); rs != j.end()) {
    RETURN_IF_ERROR(ParseRopeScaling(*rs, "rope_scaling", &c.rope_scaling));
  }
  if (!(c.rope_theta > 0)) return KeyError("rope_theta", "must be positive");

  RETURN_IF_ERROR(GetBool(j, "tie_word_embeddings", &c.tie_word_embeddings));
  if (c.model_type == "qwen2") {
    c.attention_bias = true;  // Qwen2's q/k/v projections always have biases
  } else {
    RETURN_IF_ERROR(GetBool(j, "attention_bias", &c.attention_bias));
  }
  c.qk_norm = c.model_type == "qwen3";

  std::string act = "silu";
  RETURN_IF_ERROR(GetString(j, "hidden_act", &act));
  if (act != "silu") {
    return KeyError("hidden_act", absl::StrCat("is \"", act, "\", cohort supports only silu"));
  }
  bool mlp_bias = false;
  RETURN_IF_ERROR(GetBool(j, "mlp_bias", &mlp_bias));
  if (mlp_bias) return KeyError("mlp_bias", "is true, which cohort does not support");
  bool sliding = false;
  RETURN_IF_ERROR(GetBool(j, "use_sliding_window", &sliding));
  if (sliding) {
    return KeyError("use_sliding_window", "is true, which cohort does not support");
  }

  // transformers 5 writes "dtype"; 4.x "torch_dtype".
  RETURN_IF_ERROR(GetString(j, "torch_dtype", &c.torch_dtype));
  if (!j.contains("torch_dtype")) RETURN_IF_ERROR(GetString(j, "dtype", &c.torch_dtype));
  if (c.torch_dtype != "float32" && c.torch_dtype != "bfloat16" && c.torch_dtype != "float16") {
    return KeyError("torch_dtype", absl::StrCat("is \"", c.torch_dtype,
                                                "\", expected float32, bfloat16 or float16"));
  }
  RETURN_IF_ERROR(GetInt(j, "bos_token_id", false, &c.bos_token_id));
  RETURN_IF_ERROR(ParseTokenIds(j, "eos_token_id", &c.eos_token_ids));
  return c;
}

absl::StatusOr<ModelConfig> ModelConfig::FromFile(const std::string& path) {
  ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  auto config = FromJson(text);
  if (!config.ok()) return Annotate(config.status(), path);
  return config;
}

std::string ModelConfig::ToJson() const {
  OrderedJson j;
  j["architectures"] = {architecture.empty() ? DefaultArchitecture(model_type) : architecture};
  j["model_type"] = model_type;
  j["vocab_size"] = vocab_size;
  j["hidden_size"] = hidden_size;
  j["intermediate_size"] = intermediate_size;
  j["num_hidden_layers"] = num_hidden_layers;
  j["num_attention_heads"] = num_attention_heads;
  j["num_key_value_heads"] = num_key_value_heads;
  j["head_dim"] = head_dim;
  j["hidden_act"] = "silu";
  j["max_position_embeddings"] = max_position_embeddings;
  j["rms_norm_eps"] = rms_norm_eps;
  j["rope_theta"] = rope_theta;
  if (rope_scaling.type == "llama3") {
    j["rope_scaling"] = {
        {"rope_type", "llama3"},
        {"factor", rope_scaling.factor},
        {"low_freq_factor", rope_scaling.low_freq_factor},
        {"high_freq_factor", rope_scaling.high_freq_factor},
        {"original_max_position_embeddings", rope_scaling.original_max_position_embeddings}};
  } else {
    j["rope_scaling"] = nullptr;
  }
  j["tie_word_embeddings"] = tie_word_embeddings;
  if (model_type != "qwen2") j["attention_bias"] = attention_bias;
  if (model_type == "llama") j["mlp_bias"] = false;
  if (model_type != "llama") j["use_sliding_window"] = false;
  j["attention_dropout"] = 0.0;
  j["initializer_range"] = 0.02;
  j["use_cache"] = true;
  j["torch_dtype"] = torch_dtype;
  if (bos_token_id >= 0) {
    j["bos_token_id"] = bos_token_id;
  } else {
    j["bos_token_id"] = nullptr;
  }
  if (eos_token_ids.size() == 1) {
    j["eos_token_id"] = eos_token_ids[0];
  } else if (eos_token_ids.empty()) {
    j["eos_token_id"] = nullptr;
  } else {
    j["eos_token_id"] = eos_token_ids;
  }
  return j.dump(2) + "\n";
}

std::string ModelConfig::Fingerprint() const {
  // Every field that changes the tensors or the forward pass, in a fixed
  // text form; dtype and token ids are left out (they do not change which
  // weights fit). FNV-1a 64 over that text.
  std::string canon = absl::StrCat(
      "type=", model_type, ";vocab=", vocab_size, ";hidden=", hidden_size,
      ";inter=", intermediate_size, ";layers=", num_hidden_layers, ";heads=", num_attention_heads,
      ";kv=", num_key_value_heads, ";hd=", head_dim, ";eps=", DoubleText(rms_norm_eps),
      ";theta=", DoubleText(rope_theta), ";rs=", rope_scaling.type);
  if (rope_scaling.type == "llama3") {
    absl::StrAppend(&canon, ",", DoubleText(rope_scaling.factor), ",",
                    DoubleText(rope_scaling.low_freq_factor), ",",
                    DoubleText(rope_scaling.high_freq_factor), ",",
                    rope_scaling.original_max_position_embeddings);
  }
  absl::StrAppend(&canon, ";tie=", tie_word_embeddings, ";bias=", attention_bias,
                  ";qknorm=", qk_norm);
  uint64_t h = 1469598103934665603ULL;
  for (unsigned char ch : canon) {
    h ^= ch;
    h *= 1099511628211ULL;
  }
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

}  // namespace cohort::model
