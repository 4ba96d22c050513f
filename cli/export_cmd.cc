// `cohort export CHECKPOINT --out DIR`: a Hugging Face model directory from
// a learner checkpoint. Runs as its own binary, cohort-export, which `cohort
// export` execs, so that `cohort` does not link LibTorch.
//
// CHECKPOINT is one of
//   * a checkpoint directory (<root>/step-NNNNNNNNNN, learner/checkpoint.h):
//     it must be complete (COMPLETE marker, meta.json, blobs that match);
//   * a checkpoint root (holding step-* directories): its newest complete
//     checkpoint;
//   * a run directory (holding checkpoints/, or the config's checkpoint.dir):
//     the newest complete checkpoint of the run.
// The weights are the trainer's model/ of that checkpoint (fp32), checked
// against the architecture (model::LoadModelDir) and written with
// model::SaveModelDir: config.json, model.safetensors (or shards + index
// above --max_shard_bytes), generation_config.json, tokenizer.json and
// tokenizer_config.json carrying the chat template twice: as
// `cohort_chat_template` (its name, what `cohort eval` reads) and as a Jinja
// `chat_template` (what transformers' apply_chat_template reads) that
// formats exactly as core/chat_template does.
//
// Where the tokenizer, template and generation settings come from, first
// match wins: the flags; the run config (--config: model.tokenizer or
// model.path, model.chat_template, sampling); the checkpoint's own model/;
// the run directory's model/ or data/ (a pipeline run); for the template,
// an existing cohort_chat_template, else the vocabulary (as `cohort eval`
// infers it).
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "cli/commands.h"
#include "core/chat_template.h"
#include "core/config.h"
#include "core/file.h"
#include "core/flags.h"
#include "core/logging.h"
#include "core/status.h"
#include "core/tokenizer.h"
#include "learner/checkpoint.h"
#include "model/checkpoint.h"
#include "nlohmann/json.hpp"

namespace cohort::cli {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

struct ExportFlags {
  std::string checkpoint, out, config, tokenizer, chat_template, dtype = "float32";
  std::vector<std::string> overrides;
  int64_t max_shard_bytes = static_cast<int64_t>(safetensors::kDefaultMaxShardBytes);
};

bool IsDir(const fs::path& p) {
  std::error_code ec;
  return fs::is_directory(p, ec);
}

bool HasStepDirs(const fs::path& root) {
  std::error_code ec;
  for (auto it = fs::directory_iterator(root, ec); !ec && it != fs::directory_iterator();
       it.increment(ec)) {
    if (absl::StartsWith(it->path().filename().string(), "step-")) return true;
  }
  return false;
}

// The checkpoint CHECKPOINT names (see the file comment), and the run
// directory it belongs to ("" when it is not inside one).
struct Resolved {
  learner::CheckpointInfo checkpoint;
  std::string run_dir;
};

absl::StatusOr<Resolved> ResolveCheckpoint(const std::string& arg,
                                           const std::optional<RunConfig>& config) {
  fs::path p = fs::absolute(fs::path(arg)).lexically_normal();
  if (p.filename().empty()) p = p.parent_path();
  if (!fs::exists(p)) {
    return absl::NotFoundError(absl::StrCat("CHECKPOINT '", arg, "' does not exist"));
  }
  if (!IsDir(p)) {
    return absl::InvalidArgumentError(
        absl::StrCat("CHECKPOINT '", arg,
                     "' is not a directory (expected a checkpoint, a checkpoint root or a run "
                     "directory)"));
  }
  Resolved r;
  // A single checkpoint: step-*/ or anything holding trainer/ or meta.json.
  if (absl::StartsWith(p.filename().string(), "step-") || IsDir(p / "trainer") ||
      fs::exists(p / "meta.json") || fs::exists(p / "COMPLETE")) {
    std::vector<std::string> missing;
    for (const char* f : {"COMPLETE", "meta.json", "trainer/model/config.json"}) {
      if (!fs::exists(p / f)) missing.push_back(f);
    }
    if (!missing.empty()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "checkpoint '", p.string(), "' is incomplete: no ", absl::StrJoin(missing, ", no "),
          " (an interrupted write; export the newest complete one by naming the "
          "checkpoint root or the run directory)"));
    }
    ASSIGN_OR_RETURN(std::vector<learner::CheckpointInfo> all,
                     learner::ListCheckpoints(p.parent_path().string()));
    for (const learner::CheckpointInfo& c : all) {
      if (fs::path(c.path).lexically_normal() == p) r.checkpoint = c;
    }
    if (r.checkpoint.path.empty()) {
      return absl::FailedPreconditionError(
          absl::StrCat("checkpoint '", p.string(),
                       "' is incomplete or corrupt: its blobs do not match meta.json"));
    }
    fs::path root = p.parent_path();
    r.run_dir = root.filename() == "checkpoints" ? root.parent_path().string() : "";
    return r;
  }
  // A run directory, or a checkpoint root.
  std::vector<fs::path> roots;
  if (config && !config->checkpoint.dir.empty()) roots.push_back(config->checkpoint.dir);
  roots.push_back(p / "checkpoints");
  fs::path root;
  for (const fs::path& candidate : roots) {
    if (IsDir(candidate)) {
      root = candidate;
      r.run_dir = p.string();
      break;
    }
  }
  if (root.empty() && HasStepDirs(p)) root = p;
  if (root.empty()) {
    return absl::NotFoundError(absl::StrCat(
        "'", arg,
        "' is neither a checkpoint (no COMPLETE, meta.json, trainer/), a checkpoint root (no "
        "step-* directories) nor a run directory (no checkpoints/)"));
  }
  if (r.run_dir.empty() && root.filename() == "checkpoints") {
    r.run_dir = root.parent_path().string();
  }
  ASSIGN_OR_RETURN(std::optional<learner::CheckpointInfo> latest,
                   learner::FindLatestCheckpoint(root.string()));
  if (!latest) {
    return absl::NotFoundError(absl::StrCat("no complete checkpoint under '", root.string(),
                                            "' (none written yet, or only interrupted ones)"));
  }
  r.checkpoint = *latest;
  return r;
}

// The first existing tokenizer.json of the sources in the file comment.
absl::StatusOr<std::string> FindTokenizer(const ExportFlags& f,
                                          const std::optional<RunConfig>& config,
                                          const Resolved& r) {
  std::vector<std::string> tried;
  auto pick = [&](const std::string& path) -> bool {
    if (path.empty()) return false;
    std::string file = IsDir(path) ? path + "/tokenizer.json" : path;
    tried.push_back(file);
    return fs::exists(file);
  };
  if (!f.tokenizer.empty()) {
    if (pick(f.tokenizer)) return tried.back();
    return absl::NotFoundError(absl::StrCat("--tokenizer: ", tried.back(), " does not exist"));
  }
  std::vector<std::string> candidates;
  if (config) {
    candidates.push_back(!config->model.tokenizer.empty() ? config->model.tokenizer
                                                          : config->model.path);
  }
  candidates.push_back(r.checkpoint.trainer_dir() + "/model");
  if (!r.run_dir.empty()) {
    candidates.push_back(r.run_dir + "/model");
    candidates.push_back(r.run_dir + "/data");
  }
  for (const std::string& c : candidates) {
    if (pick(c)) return tried.back();
  }
  return absl::NotFoundError(absl::StrCat(
      "no tokenizer.json for the export (tried ", absl::StrJoin(tried, ", "),
      "): pass --tokenizer PATH or --config with the run's config (model.tokenizer / model.path)"));
}

absl::StatusOr<Json> ReadJsonObject(const std::string& path) {
  ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  Json j = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat("'", path, "' is not a JSON object"));
  }
  return j;
}

// Jinja templates that format as FormatChat (core/chat_template.cc) does.
std::string JinjaChatTemplate(const std::string& name) {
  if (name == "chatml") {
    return "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + "
           "message['content'] + '<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}"
           "{{ '<|im_start|>assistant\\n' }}{% endif %}";
  }
  if (name == "llama3") {
    return "{{ '<|begin_of_text|>' }}{% for message in messages %}{{ '<|start_header_id|>' + "
           "message['role'] + '<|end_header_id|>\\n\\n' + (message['content'] | trim) + "
           "'<|eot_id|>' }}{% endfor %}{% if add_generation_prompt %}"
           "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}";
  }
  if (name == "r1-zero") {
    absl::StatusOr<std::string> preamble = FormatChat("r1-zero", {{"user", ""}}, false);
    std::string p = preamble.ok() ? *preamble : "";
    p = p.substr(0, p.size() - std::string(". Assistant:").size());
    p = absl::StrReplaceAll(p, {{"\\", "\\\\"}, {"'", "\\'"}});
    return absl::StrCat("{{ '", p,
                        "' + messages[0]['content'] + '. Assistant:' }}{% if messages | length > "
                        "1 %}{{ ' ' + messages[1]['content'] }}{% endif %}");
  }
  return "{% for message in messages %}{% if not loop.first %}{{ '\\n' }}{% endif %}"
         "{{ message['content'] }}{% endfor %}";
}

absl::Status Export(const ExportFlags& f) {
  at::ScalarType dtype;
  if (f.dtype == "float32") {
    dtype = at::kFloat;
  } else if (f.dtype == "bfloat16") {
    dtype = at::kBFloat16;
  } else if (f.dtype == "float16") {
    dtype = at::kHalf;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("--dtype is '", f.dtype, "', expected float32, bfloat16 or float16"));
  }
  if (f.max_shard_bytes <= 0) {
    return absl::InvalidArgumentError("--max_shard_bytes must be positive");
  }
  std::optional<RunConfig> config;
  if (!f.config.empty()) {
    ASSIGN_OR_RETURN(RunConfig c, LoadConfig(f.config, f.overrides));
    config = std::move(c);
  }
  ASSIGN_OR_RETURN(Resolved r, ResolveCheckpoint(f.checkpoint, config));
  const fs::path out = fs::absolute(fs::path(f.out)).lexically_normal();
  if (absl::StartsWith(out.string() + "/", r.checkpoint.path + "/")) {
    return absl::InvalidArgumentError(
        absl::StrCat("--out '", f.out, "' lies inside the checkpoint ", r.checkpoint.path));
  }
  ASSIGN_OR_RETURN(std::string tokenizer_json, FindTokenizer(f, config, r));
  const std::string tokenizer_dir = fs::path(tokenizer_json).parent_path().string();
  ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tokenizer, Tokenizer::FromFile(tokenizer_json));
  Json tok_cfg = Json::object();
  if (PathExists(tokenizer_dir + "/tokenizer_config.json")) {
    ASSIGN_OR_RETURN(tok_cfg, ReadJsonObject(tokenizer_dir + "/tokenizer_config.json"));
  }
  // The chat template the run trained with.
  std::string chat = f.chat_template, chat_from = "--chat_template";
  if (chat.empty() && config) {
    chat = config->model.chat_template;
    chat_from = "the run config";
  }
  if (chat.empty() && tok_cfg.contains("cohort_chat_template") &&
      tok_cfg["cohort_chat_template"].is_string()) {
    chat = tok_cfg["cohort_chat_template"].get<std::string>();
    chat_from = "the tokenizer's tokenizer_config.json";
  }
  if (chat.empty()) {
    chat = tokenizer->TokenToId("<|im_start|>") >= 0          ? "chatml"
           : tokenizer->TokenToId("<|start_header_id|>") >= 0 ? "llama3"
                                                              : "plain";
    chat_from = "inferred from the vocabulary (pass --config or --chat_template to name it)";
  }
  ASSIGN_OR_RETURN(ChatTemplateInfo chat_info, GetChatTemplateInfo(chat));

  const std::string model_dir = r.checkpoint.trainer_dir() + "/model";
  ASSIGN_OR_RETURN(model::LoadedModel loaded, model::LoadModelDir(model_dir, dtype));
  // The chat template's end-of-turn tokens also end generation.
  for (const std::string& t : chat_info.eos_tokens) {
    int64_t id = tokenizer->TokenToId(t);
    std::vector<int64_t>& eos = loaded.config.eos_token_ids;
    if (id >= 0 && std::find(eos.begin(), eos.end(), id) == eos.end()) eos.push_back(id);
  }
  model::SaveOptions options;
  options.dtype = dtype;
  options.max_shard_bytes = static_cast<uint64_t>(f.max_shard_bytes);
  options.tokenizer_json = tokenizer_json;
  RETURN_IF_ERROR(model::SaveModelDir(out.string(), loaded.config, loaded.weights, options));

  // The chat template, by name and as Jinja. A tokenizer's own Jinja
  // template is kept when it is the same format (Qwen's, Llama 3's).
  tok_cfg["cohort_chat_template"] = chat;
  const std::string marker = chat == "chatml"   ? "<|im_start|>"
                             : chat == "llama3" ? "<|start_header_id|>"
                                                : "";
  const bool keep = !marker.empty() && tok_cfg.contains("chat_template") &&
                    tok_cfg["chat_template"].is_string() &&
                    absl::StrContains(tok_cfg["chat_template"].get<std::string>(), marker);
  if (!keep) tok_cfg["chat_template"] = JinjaChatTemplate(chat);
  RETURN_IF_ERROR(
      WriteFileAtomically(out.string() + "/tokenizer_config.json", tok_cfg.dump(2) + "\n"));
  // Generation settings of the run.
  Json gen = Json::object();
  if (PathExists(out.string() + "/generation_config.json")) {
    ASSIGN_OR_RETURN(gen, ReadJsonObject(out.string() + "/generation_config.json"));
  }
  if (config) {
    gen["max_new_tokens"] = config->sampling.max_new_tokens;
    gen["temperature"] = config->sampling.temperature;
    gen["top_p"] = config->sampling.top_p;
    gen["top_k"] = config->sampling.top_k;
    gen["do_sample"] = true;
  }
  RETURN_IF_ERROR(
      WriteFileAtomically(out.string() + "/generation_config.json", gen.dump(2) + "\n"));
  int64_t params = 0;
  for (const auto& [name, t] : loaded.weights) params += t.numel();
  std::printf(
      "exported %s (step %lld, policy version %lld) to %s: %s, %lld parameters, %s, chat "
      "template %s (%s), tokenizer %s\n",
      r.checkpoint.path.c_str(), static_cast<long long>(r.checkpoint.step),
      static_cast<long long>(r.checkpoint.version), out.string().c_str(),
      loaded.config.architecture.c_str(), static_cast<long long>(params), f.dtype.c_str(),
      chat.c_str(), chat_from.c_str(), tokenizer_json.c_str());
  return absl::OkStatus();
}

}  // namespace

int ExportMain(int argc, char** argv) {
  ExportFlags f;
  FlagSet flags(argv[0],
                "Writes a Hugging Face model directory (config.json, model.safetensors or "
                "shards + index, generation_config.json, tokenizer.json, tokenizer_config.json "
                "with the chat template) from a learner checkpoint: a checkpoint directory "
                "(must be complete), a checkpoint root or a run directory (its newest complete "
                "checkpoint). Exit 0 written, 1 failed, 2 bad flags.",
                "CHECKPOINT");
  flags.String("out", &f.out, "Output directory (replaced atomically if it exists).");
  AddConfigFlags(flags, &f.config, &f.overrides,
                 "The run's config (YAML): tokenizer (model.tokenizer / model.path), "
                 "model.chat_template, sampling (generation_config.json) and checkpoint.dir. "
                 "Optional.");
  flags.String("tokenizer", &f.tokenizer,
               "tokenizer.json (or its directory; its tokenizer_config.json comes along). "
               "Default: from --config, the checkpoint, or the run directory's model/ or data/.");
  flags.String("chat_template", &f.chat_template,
               "Chat template the model was trained with (chatml, llama3, r1-zero, plain). "
               "Default: --config's model.chat_template, else the tokenizer's, else inferred.");
  flags.String("dtype", &f.dtype,
               "Weight dtype of the files: float32 (the trainer's weights, lossless), bfloat16 "
               "or float16.");
  flags.Int("max_shard_bytes", &f.max_shard_bytes,
            "Shard the safetensors above this many bytes (Hugging Face's default 5 GB).");
  std::vector<std::string> positional = ParseFlagsOrExit(flags, argc, argv);
  if (positional.size() != 1) {
    std::fprintf(stderr, "%s: expected one CHECKPOINT (see --help), got %zu arguments\n", argv[0],
                 positional.size());
    return 2;
  }
  if (f.out.empty()) {
    std::fprintf(stderr, "%s: --out DIR is required\n", argv[0]);
    return 2;
  }
  f.checkpoint = positional[0];
  absl::Status s = Export(f);
  if (!s.ok()) {
    std::fprintf(stderr, "%s: %s\n", argv[0], std::string(s.message()).c_str());
    return 1;
  }
  return 0;
}

}  // namespace cohort::cli
