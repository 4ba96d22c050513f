// `cohort eval`: pass@1, cons@K, unbiased pass@K and format rate of a model
// directory on a JSONL dataset. Runs as its own binary, cohort-eval, which
// `cohort eval` execs, so that `cohort` does not link LibTorch.
//
// Everything generation needs comes from the model directory: the tokenizer
// (tokenizer.json + tokenizer_config.json), the chat template (the
// `cohort_chat_template` key of tokenizer_config.json, else inferred from
// the vocabulary: <|im_start|> -> chatml, <|start_header_id|> -> llama3,
// otherwise plain), EOS ids (generation_config.json / config.json) and the
// generation length (generation_config.json `max_new_tokens`).
#include <algorithm>
#include <cstdio>
#include <fstream>
#include <future>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cli/commands.h"
#include "cli/eval_metrics.h"
#include "core/chat_template.h"
#include "core/file.h"
#include "core/flags.h"
#include "core/logging.h"
#include "core/status.h"
#include "core/tokenizer.h"
#include "model/checkpoint.h"
#include "model/engine.h"
#include "model/transformer.h"
#include "nlohmann/json.hpp"
#include "reward_server/verifiers/extract.h"
#include "reward_server/verifiers/format.h"
#include "reward_server/verifiers/math_accuracy.h"

namespace cohort::cli {
namespace {

using Json = nlohmann::json;

struct EvalFlags {
  std::string model, dataset, task = "math", prompt_key, answer_key, chat_template;
  int64_t samples = 1, k = 0, limit = 0, max_new_tokens = 0, slots = 32, seed = 0;
  double temperature = -1;
  bool greedy = false, json = false;
};

struct Problem {
  std::string prompt, answer;
};

absl::StatusOr<std::vector<Problem>> ReadDataset(const EvalFlags& f) {
  std::ifstream in(f.dataset);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read --dataset ", f.dataset));
  std::string prompt_key = f.prompt_key, answer_key = f.answer_key;
  if (prompt_key.empty())
    prompt_key = f.task == "gsm8k" ? "question" : (f.task == "math" ? "problem" : "prompt");
  if (answer_key.empty()) answer_key = "answer";
  std::vector<Problem> out;
  std::string line;
  int64_t n = 0;
  while (std::getline(in, line)) {
    ++n;
    if (line.empty()) continue;
    Json j = Json::parse(line, nullptr, false);
    // MATH-style sets name the prompt "problem", others "prompt"/"question".
    std::string pk = prompt_key;
    if (j.is_object() && !j.contains(pk) && f.prompt_key.empty()) {
      for (const char* alt : {"prompt", "problem", "question"}) {
        if (j.contains(alt)) {
          pk = alt;
          break;
        }
      }
    }
    if (!j.is_object() || !j.contains(pk) || !j[pk].is_string() || !j.contains(answer_key)) {
      return absl::InvalidArgumentError(
          absl::StrCat(f.dataset, ":", n, ": expected an object with ", "string \"", pk,
                       "\" and \"", answer_key, "\" (set --prompt_key / --answer_key)"));
    }
    Problem p;
    p.prompt = j[pk].get<std::string>();
    p.answer = j[answer_key].is_string() ? j[answer_key].get<std::string>() : j[answer_key].dump();
    out.push_back(std::move(p));
    if (f.limit > 0 && static_cast<int64_t>(out.size()) >= f.limit) break;
  }
  if (out.empty()) return absl::InvalidArgumentError(absl::StrCat(f.dataset, ": no problems"));
  return out;
}

Json ReadJsonOr(const std::string& path) {
  auto text = ReadFile(path);
  if (!text.ok()) return Json::object();
  Json j = Json::parse(*text, nullptr, false);
  return j.is_object() ? j : Json::object();
}

absl::Status Run(const EvalFlags& f) {
  if (f.task != "math" && f.task != "gsm8k" && f.task != "addition") {
    return absl::InvalidArgumentError(
        absl::StrCat("--task is '", f.task, "', expected math, gsm8k or addition"));
  }
  const int64_t n = f.greedy ? 1 : f.samples;
  const int64_t k = f.k > 0 ? f.k : n;
  if (n < 1) return absl::InvalidArgumentError("--samples must be >= 1");
  if (k > n) {
    return absl::InvalidArgumentError(
        absl::StrCat("--k (", k, ") must not exceed the samples per problem (", n, ")"));
  }
  ASSIGN_OR_RETURN(std::vector<Problem> problems, ReadDataset(f));
  ASSIGN_OR_RETURN(auto tokenizer, Tokenizer::FromFile(f.model + "/tokenizer.json"));
  Json tok_cfg = ReadJsonOr(f.model + "/tokenizer_config.json");
  Json gen_cfg = ReadJsonOr(f.model + "/generation_config.json");
  std::string chat = f.chat_template;
  if (chat.empty() && tok_cfg.contains("cohort_chat_template") &&
      tok_cfg["cohort_chat_template"].is_string()) {
    chat = tok_cfg["cohort_chat_template"].get<std::string>();
  }
  if (chat.empty()) {
    chat = tokenizer->TokenToId("<|im_start|>") >= 0          ? "chatml"
           : tokenizer->TokenToId("<|start_header_id|>") >= 0 ? "llama3"
                                                              : "plain";
  }
  ASSIGN_OR_RETURN(ChatTemplateInfo chat_info, GetChatTemplateInfo(chat));
  ASSIGN_OR_RETURN(model::LoadedModel loaded, model::LoadModelDir(f.model, at::kFloat));
  std::vector<int32_t> eos;
  for (int64_t id : loaded.config.eos_token_ids) eos.push_back(static_cast<int32_t>(id));
  if (auto id = tokenizer->eos_id(); id && std::find(eos.begin(), eos.end(), *id) == eos.end()) {
    eos.push_back(*id);
  }
  for (const std::string& t : chat_info.eos_tokens) {
    int32_t id = tokenizer->TokenToId(t);
    if (id >= 0 && std::find(eos.begin(), eos.end(), id) == eos.end()) eos.push_back(id);
  }
  int64_t max_new = f.max_new_tokens;
  if (max_new <= 0 && gen_cfg.contains("max_new_tokens") && gen_cfg["max_new_tokens"].is_number())
    max_new = gen_cfg["max_new_tokens"].get<int64_t>();
  if (max_new <= 0) max_new = 256;
  double temperature = f.temperature;
  if (temperature < 0 && gen_cfg.contains("temperature") && gen_cfg["temperature"].is_number())
    temperature = gen_cfg["temperature"].get<double>();
  if (temperature < 0) temperature = 1.0;
  if (f.greedy) temperature = 0;

  const int64_t max_len = std::min<int64_t>(
      loaded.config.max_position_embeddings > 0 ? loaded.config.max_position_embeddings : 4096,
      4096);
  ASSIGN_OR_RETURN(auto transformer,
                   model::Transformer::Create(loaded.config, std::move(loaded.weights), at::kFloat,
                                              at::Device("cpu")));
  model::EngineOptions eo;
  eo.num_slots = f.slots;
  eo.max_len = max_len;
  eo.decode = [&](const std::vector<int32_t>& ids) { return tokenizer->Decode(ids); };
  ASSIGN_OR_RETURN(auto engine, model::Engine::Create(std::move(transformer), eo));
  engine->Start();

  std::vector<std::future<absl::StatusOr<model::GenerationResult>>> futures;
  for (size_t i = 0; i < problems.size(); ++i) {
    ASSIGN_OR_RETURN(std::string text, FormatChat(chat, {{"user", problems[i].prompt}},
                                                  /*add_generation_prompt=*/true));
    model::GenerationRequest req;
    req.prompt = tokenizer->Encode(text);
    req.num_samples = n;
    req.params.temperature = temperature;
    req.params.max_new_tokens = std::min<int64_t>(max_new, max_len - 1 - req.prompt.size());
    if (req.params.max_new_tokens < 1) {
      return absl::InvalidArgumentError(absl::StrCat("problem ", i + 1, ": its prompt (",
                                                     req.prompt.size(),
                                                     " tokens) fills the model's context"));
    }
    req.params.stop = chat_info.stop_strings;
    req.params.seed = static_cast<uint64_t>(f.seed) * 1000003u + i;
    req.eos_ids = eos;
    futures.push_back(engine->Submit(std::move(req)));
  }
  std::vector<std::vector<SampleOutcome>> outcomes(problems.size());
  double length_sum = 0;
  int64_t length_count = 0;
  auto kind = reward::FormatKind::kR1Zero;
  for (size_t i = 0; i < problems.size(); ++i) {
    auto result = futures[i].get();
    if (!result.ok()) return result.status();
    for (const model::Completion& c : result->completions) {
      std::vector<int32_t> ids = c.tokens;
      while (!ids.empty() && std::find(eos.begin(), eos.end(), ids.back()) != eos.end()) {
        ids.pop_back();
      }
      reward::Sample s;
      s.task = f.task;
      s.prompt = problems[i].prompt;
      s.completion = tokenizer->Decode(ids);
      s.answer = problems[i].answer;
      SampleOutcome o;
      o.correct =
          (f.task == "gsm8k" ? reward::Gsm8kAccuracy(s) : reward::MathAccuracy(s)).value > 0.5;
      o.formatted = reward::FormatReward(s, kind).value > 0.5;
      o.answer = reward::ExtractAnswer(s.completion).value_or("");
      outcomes[i].push_back(std::move(o));
      length_sum += c.tokens.size();
      ++length_count;
    }
  }
  engine->Stop();
  EvalMetrics m = ComputeEvalMetrics(outcomes, static_cast<int>(k));
  m.mean_length = length_count ? length_sum / length_count : 0;
  if (f.json) {
    Json j = {{"pass_at_1", m.pass_at_1},
              {"cons_at_k", m.cons_at_k},
              {"pass_at_k", m.pass_at_k},
              {"format_rate", m.format_rate},
              {"k", m.k},
              {"n", m.n},
              {"problems", m.problems},
              {"mean_length", m.mean_length},
              {"greedy", f.greedy},
              {"temperature", temperature},
              {"task", f.task},
              {"chat_template", chat}};
    std::printf("%s\n", j.dump().c_str());
  } else {
    std::printf("%-12s %s\n", "model", f.model.c_str());
    std::printf("%-12s %s (%d problems, task %s)\n", "dataset", f.dataset.c_str(), m.problems,
                f.task.c_str());
    std::printf("%-12s n=%d k=%d %s\n", "samples", m.n, m.k,
                f.greedy ? "greedy" : absl::StrFormat("T=%.2f", temperature).c_str());
    std::printf("%-12s %.4f\n", f.greedy ? "accuracy" : "pass@1", m.pass_at_1);
    std::printf("%-12s %.4f\n", absl::StrCat("cons@", m.n).c_str(), m.cons_at_k);
    std::printf("%-12s %.4f\n", absl::StrCat("pass@", m.k).c_str(), m.pass_at_k);
    std::printf("%-12s %.4f\n", "format rate", m.format_rate);
    std::printf("%-12s %.1f tokens\n", "mean length", m.mean_length);
  }
  return absl::OkStatus();
}

}  // namespace

int EvalMain(int argc, char** argv) {
  EvalFlags f;
  FlagSet flags(argv[0],
                "Evaluates a model directory on a JSONL dataset: pass@1 (mean over the "
                "samples), cons@K (majority vote), unbiased pass@K (n >= k) and the format rate "
                "(<think>…</think><answer>…</answer>). Tokenizer, chat template, EOS and "
                "generation length come from the model directory. --json prints one JSON line "
                "(the last on stdout) with pass_at_1, cons_at_k, pass_at_k, format_rate, k, n.");
  flags.String("model", &f.model, "Hugging Face model directory (with tokenizer.json).");
  flags.String("dataset", &f.dataset, "JSONL problems.");
  flags.String("task", &f.task, "Answer checking: math, gsm8k or addition.");
  flags.Int("samples", &f.samples, "Samples per problem (n).");
  flags.Int("k", &f.k, "k of pass@k; 0 = n.");
  flags.Bool("greedy", &f.greedy, "Greedy decoding (one sample; pass_at_1 is greedy accuracy).");
  flags.Bool("json", &f.json, "Print one JSON line instead of a table.");
  flags.Double("temperature", &f.temperature,
               "Sampling temperature; < 0 = generation_config.json's, else 1.");
  flags.Int("max_new_tokens", &f.max_new_tokens,
            "Completion limit; 0 = generation_config.json's, else 256.");
  flags.Int("limit", &f.limit, "Evaluate the first N problems only; 0 = all.");
  flags.String("prompt_key", &f.prompt_key,
               "Prompt field; \"\" = question (gsm8k), problem (math), prompt (addition).");
  flags.String("answer_key", &f.answer_key, "Reference answer field; \"\" = answer.");
  flags.String("chat_template", &f.chat_template,
               "chatml, llama3, r1-zero or plain; \"\" = from the model directory.");
  flags.Int("slots", &f.slots, "Sequences decoded together.");
  flags.Int("seed", &f.seed, "Sampling seed.");
  std::vector<std::string> positional = ParseFlagsOrExit(flags, argc, argv);
  if (!positional.empty()) {
    std::fprintf(stderr, "%s: unexpected argument '%s'\n", argv[0], positional[0].c_str());
    return 2;
  }
  if (f.model.empty() || f.dataset.empty()) {
    std::fprintf(stderr, "%s: --model and --dataset are required (see --help)\n", argv[0]);
    return 2;
  }
  absl::Status s = Run(f);
  if (!s.ok()) {
    std::fprintf(stderr, "%s: %s\n", argv[0], std::string(s.message()).c_str());
    return 1;
  }
  return 0;
}

}  // namespace cohort::cli
