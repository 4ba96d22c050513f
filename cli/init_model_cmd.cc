// `cohort init-model`: writes a randomly initialised model directory in the
// Hugging Face layout (config.json, safetensors, generation_config.json and
// the tokenizer files), for tests, benchmarks and the quickstart.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "cli/commands.h"
#include "core/file.h"
#include "core/flags.h"
#include "core/logging.h"
#include "core/status.h"
#include "model/checkpoint.h"
#include "nlohmann/json.hpp"

namespace cohort::cli {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

constexpr int64_t kVocabMultiple = 64;

struct TokenizerInfo {
  std::string tokenizer_json;         // path
  std::string tokenizer_config_json;  // path, or "" when absent
  int64_t padded_vocab = 0;           // max id + 1, rounded up to kVocabMultiple
  int64_t bos = -1;
  std::vector<int64_t> eos;
};

absl::StatusOr<Json> ReadJson(const std::string& path) {
  ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  try {
    return Json::parse(text);
  } catch (const Json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("'", path, "' is not valid JSON: ", e.what()));
  }
}

// tokenizer_config.json names special tokens as a string or as
// {"content": "..."}.
std::string TokenContent(const Json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end()) return "";
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) {
    return (*it)["content"].get<std::string>();
  }
  return "";
}

// `path` is a tokenizer.json or a directory holding one.
absl::StatusOr<TokenizerInfo> ReadTokenizer(const std::string& path) {
  TokenizerInfo info;
  std::error_code ec;
  fs::path file = fs::is_directory(path, ec) ? fs::path(path) / "tokenizer.json" : fs::path(path);
  info.tokenizer_json = file.string();
  ASSIGN_OR_RETURN(Json tok, ReadJson(info.tokenizer_json));
  auto bad = [&](const std::string& what) {
    return absl::InvalidArgumentError(
        absl::StrCat("tokenizer '", info.tokenizer_json, "': ", what));
  };
  if (!tok.is_object() || !tok.contains("model") || !tok["model"].is_object() ||
      !tok["model"].contains("vocab") || !tok["model"]["vocab"].is_object()) {
    return bad("no model.vocab object (expected a Hugging Face tokenizer.json)");
  }
  std::map<std::string, int64_t> ids;
  int64_t max_id = -1;
  for (auto& [token, id] : tok["model"]["vocab"].items()) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0) {
      return bad(absl::StrCat("vocab id of '", token, "' is not a non-negative integer"));
    }
    ids[token] = id.get<int64_t>();
    max_id = std::max(max_id, id.get<int64_t>());
  }
  if (tok.contains("added_tokens") && tok["added_tokens"].is_array()) {
    for (const Json& t : tok["added_tokens"]) {
      if (!t.is_object() || !t.contains("id") || !t["id"].is_number_integer() ||
          !t.contains("content") || !t["content"].is_string()) {
        return bad("an added_tokens entry lacks an integer \"id\" or a string \"content\"");
      }
      ids[t["content"].get<std::string>()] = t["id"].get<int64_t>();
      max_id = std::max(max_id, t["id"].get<int64_t>());
    }
  }
  if (max_id < 0) return bad("the vocabulary is empty");
  info.padded_vocab = (max_id + 1 + kVocabMultiple - 1) / kVocabMultiple * kVocabMultiple;

  fs::path cfg_path = file.parent_path() / "tokenizer_config.json";
  std::string eos_text, bos_text;
  if (fs::exists(cfg_path, ec)) {
    info.tokenizer_config_json = cfg_path.string();
    ASSIGN_OR_RETURN(Json cfg, ReadJson(info.tokenizer_config_json));
    if (cfg.is_object()) {
      eos_text = TokenContent(cfg, "eos_token");
      bos_text = TokenContent(cfg, "bos_token");
    }
  }
  auto id_of = [&](const std::string& text) -> int64_t {
    auto it = ids.find(text);
    return it == ids.end() ? -1 : it->second;
  };
  if (!bos_text.empty()) info.bos = id_of(bos_text);
  if (int64_t id = id_of(eos_text); !eos_text.empty() && id >= 0) info.eos.push_back(id);
  // The end-of-document token of Qwen / Llama 3 / GPT-2 style vocabularies
  // also ends generation.
  for (const char* text : {"<|endoftext|>", "<|end_of_text|>", "</s>"}) {
    int64_t id = id_of(text);
    if (id >= 0 && std::find(info.eos.begin(), info.eos.end(), id) == info.eos.end()) {
      info.eos.push_back(id);
      break;
    }
  }
  return info;
}

absl::Status InitModel(const std::string& preset, const std::string& tokenizer,
                       const std::string& out, int64_t seed, const std::string& dtype_name,
                       int64_t max_shard_bytes, double init_std) {
  ASSIGN_OR_RETURN(model::ModelConfig config, model::PresetConfig(preset));
  model::SaveOptions options;
  if (dtype_name == "float32") {
    options.dtype = at::kFloat;
  } else if (dtype_name == "bfloat16") {
    options.dtype = at::kBFloat16;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("--dtype is '", dtype_name, "', expected float32 or bfloat16"));
  }
  if (max_shard_bytes <= 0) {
    return absl::InvalidArgumentError("--max-shard-bytes must be positive");
  }
  options.max_shard_bytes = static_cast<uint64_t>(max_shard_bytes);
  if (seed < 0) return absl::InvalidArgumentError("--seed must be non-negative");
  if (!(init_std > 0)) return absl::InvalidArgumentError("--init_std must be positive");

  if (!tokenizer.empty()) {
    ASSIGN_OR_RETURN(TokenizerInfo tok, ReadTokenizer(tokenizer));
    options.tokenizer_json = tok.tokenizer_json;
    options.tokenizer_config_json = tok.tokenizer_config_json;
    // `tiny` and `tiny-quickstart` take the tokenizer's vocabulary; real shapes keep theirs
    // unless the tokenizer needs more.
    if (preset == "tiny" || preset == "tiny-quickstart" || tok.padded_vocab > config.vocab_size) {
      config.vocab_size = tok.padded_vocab;
    }
    config.bos_token_id = tok.bos;
    config.eos_token_ids = tok.eos;
  }
  COHORT_LOG(INFO) << "init-model: preset " << preset << ", vocab " << config.vocab_size << ", "
                   << config.num_hidden_layers << " layers, hidden " << config.hidden_size
                   << ", seed " << seed << ", " << dtype_name << " -> " << out;
  model::TensorMap weights =
      model::RandomInitWeights(config, static_cast<uint64_t>(seed), init_std);
  RETURN_IF_ERROR(model::SaveModelDir(out, config, weights, options));
  int64_t params = 0;
  for (const auto& [name, t] : weights) params += t.numel();
  std::printf("wrote %s: %s (%s), %lld parameters, vocab %lld, fingerprint %s\n", out.c_str(),
              preset.c_str(), config.architecture.c_str(), static_cast<long long>(params),
              static_cast<long long>(config.vocab_size), config.Fingerprint().c_str());
  return absl::OkStatus();
}

}  // namespace

int InitModelMain(int argc, char** argv) {
  std::string preset, tokenizer, out, dtype = "float32";
  int64_t seed = 0;
  double init_std = 0.02;
  int64_t max_shard_bytes = static_cast<int64_t>(safetensors::kDefaultMaxShardBytes);
  FlagSet flags(argv[0],
                "Writes a randomly initialised model directory in the Hugging Face layout "
                "(config.json, model.safetensors or shards + index, generation_config.json, "
                "tokenizer files). Weights: normal(0, 0.02) for linear and embedding "
                "matrices, ones for norms, zeros for biases.");
  flags.String("preset", &preset,
               "Architecture: " + absl::StrJoin(model::PresetNames(), ", ") +
                   " (tiny: qwen3-style, hidden 64, 2 layers; see docs/models.md).");
  flags.String("tokenizer", &tokenizer,
               "tokenizer.json (or its directory). Sets the vocabulary size (tiny: max id + 1 "
               "rounded up to 64; other presets grow only if needed) and bos/eos from "
               "tokenizer_config.json; both files are copied into --out.");
  flags.String("out", &out, "Output directory (replaced atomically if it exists).");
  flags.Int("seed", &seed, "Random seed; the same seed writes the same weights.");
  flags.String("dtype", &dtype, "Weight dtype in the files: float32 or bfloat16.");
  flags.Int("max_shard_bytes", &max_shard_bytes,
            "Shard the safetensors above this many bytes (Hugging Face's default 5 GB).");
  flags.Double("init_std", &init_std,
               "Standard deviation of the normal init (Hugging Face's initializer_range). "
               "Larger values (0.2) give the non-trivial activations reference checks need.");
  std::vector<std::string> positional = ParseFlagsOrExit(flags, argc, argv);
  if (!positional.empty()) {
    std::fprintf(stderr, "%s: unexpected argument '%s'\n", argv[0], positional[0].c_str());
    return 2;
  }
  if (preset.empty() || out.empty()) {
    std::fprintf(stderr, "%s: --preset and --out are required (see --help)\n", argv[0]);
    return 2;
  }
  absl::Status s = InitModel(preset, tokenizer, out, seed, dtype, max_shard_bytes, init_std);
  if (!s.ok()) {
    std::fprintf(stderr, "%s: %s\n", argv[0], std::string(s.message()).c_str());
    return 1;
  }
  return 0;
}

}  // namespace cohort::cli
