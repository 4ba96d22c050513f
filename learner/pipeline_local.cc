// In-process stages. See pipeline_local.h.
#include "learner/pipeline_local.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "core/chat_template.h"
#include "core/file.h"
#include "core/logging.h"
#include "core/status.h"
#include "core/tokenizer.h"
#include "learner/trainer.h"
#include "model/checkpoint.h"
#include "model/engine.h"
#include "model/transformer.h"
#include "reward_server/scorer.h"
#include "reward_server/verifiers/format.h"

namespace cohort::learner {
namespace {

using Json = nlohmann::json;

struct Record {
  std::string id, prompt, answer, completion;
};

absl::StatusOr<std::vector<Record>> ReadRecords(const PipelineDataset& d, bool need_completion) {
  std::ifstream in(d.spec.path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", d.spec.path));
  std::vector<Record> out;
  std::string line;
  int64_t n = 0;
  auto text = [](const Json& v) { return v.is_string() ? v.get<std::string>() : v.dump(); };
  while (std::getline(in, line)) {
    ++n;
    if (line.empty()) continue;
    Json j = Json::parse(line, nullptr, false);
    if (!j.is_object() || !j.contains(d.spec.prompt_key) ||
        (need_completion && !j.contains(d.spec.completion_key))) {
      return absl::InvalidArgumentError(
          absl::StrCat(d.spec.path, ":", n, ": missing \"", d.spec.prompt_key, "\"",
                       need_completion ? " or \"" + d.spec.completion_key + "\"" : ""));
    }
    Record r;
    r.id = !d.spec.id_key.empty() && j.contains(d.spec.id_key) ? text(j[d.spec.id_key])
                                                               : std::to_string(n);
    r.prompt = text(j[d.spec.prompt_key]);
    if (!d.spec.answer_key.empty() && j.contains(d.spec.answer_key)) {
      r.answer = text(j[d.spec.answer_key]);
    }
    if (need_completion) r.completion = text(j[d.spec.completion_key]);
    out.push_back(std::move(r));
  }
  if (out.empty()) return absl::InvalidArgumentError(absl::StrCat(d.spec.path, ": no records"));
  return out;
}

// splitmix64, for batch draws the same on every platform.
struct Rng {
  uint64_t s;
  uint64_t Next() {
    uint64_t z = (s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
  }
};

std::vector<int64_t> EpochOrder(int64_t n, uint64_t seed) {
  std::vector<int64_t> order(n);
  for (int64_t i = 0; i < n; ++i) order[i] = i;
  Rng rng{seed};
  for (int64_t i = n - 1; i > 0; --i) std::swap(order[i], order[rng.Next() % (i + 1)]);
  return order;
}

// Model, tokenizer and generation settings of one model directory.
struct Loaded {
  model::ModelConfig config;
  model::TensorMap weights;
  std::unique_ptr<Tokenizer> tokenizer;
  std::vector<int32_t> eos;
  std::string dir;
};

absl::StatusOr<Loaded> Load(const std::string& dir) {
  Loaded l;
  l.dir = dir;
  ASSIGN_OR_RETURN(model::LoadedModel m, model::LoadModelDir(dir, at::kFloat));
  l.config = m.config;
  l.weights = std::move(m.weights);
  ASSIGN_OR_RETURN(l.tokenizer, Tokenizer::FromFile(dir + "/tokenizer.json"));
  for (int64_t id : l.config.eos_token_ids) l.eos.push_back(static_cast<int32_t>(id));
  if (auto id = l.tokenizer->eos_id();
      id && std::find(l.eos.begin(), l.eos.end(), *id) == l.eos.end()) {
    l.eos.push_back(*id);
  }
  if (l.eos.empty()) return absl::InvalidArgumentError(absl::StrCat(dir, ": no EOS token"));
  return l;
}

model::SaveOptions SaveFrom(const std::string& dir) {
  model::SaveOptions o;
  if (PathExists(dir + "/tokenizer.json")) o.tokenizer_json = dir + "/tokenizer.json";
  if (PathExists(dir + "/tokenizer_config.json")) {
    o.tokenizer_config_json = dir + "/tokenizer_config.json";
  }
  return o;
}

absl::StatusOr<std::vector<int32_t>> PromptTokens(const RunConfig& c, const Tokenizer& tok,
                                                  const std::string& prompt) {
  ASSIGN_OR_RETURN(std::string text, FormatChat(c.model.chat_template, {{"user", prompt}},
                                                /*add_generation_prompt=*/true));
  return tok.Encode(text);
}

absl::StatusOr<std::unique_ptr<model::Engine>> MakeEngine(const model::ModelConfig& config,
                                                          model::TensorMap weights, int64_t slots,
                                                          int64_t max_len, int64_t version) {
  ASSIGN_OR_RETURN(auto t, model::Transformer::Create(config, std::move(weights), at::kFloat,
                                                      at::Device(at::kCPU)));
  model::EngineOptions o;
  o.num_slots = slots;
  o.max_len = max_len;
  o.initial_version = version;
  return model::Engine::Create(std::move(t), o);
}

SampleFinish Finish(model::FinishReason r) {
  switch (r) {
    case model::FinishReason::kEos:
      return SampleFinish::kEos;
    case model::FinishReason::kStop:
      return SampleFinish::kStop;
    case model::FinishReason::kLength:
      return SampleFinish::kLength;
    case model::FinishReason::kContext:
      return SampleFinish::kContext;
  }
  return SampleFinish::kLength;
}

std::string CompletionText(const Loaded& l, std::vector<int32_t> ids) {
  while (!ids.empty() && std::find(l.eos.begin(), l.eos.end(), ids.back()) != l.eos.end()) {
    ids.pop_back();
  }
  return l.tokenizer->Decode(ids);
}

// Generates `n` samples for each of `records` and returns them in order.
absl::StatusOr<std::vector<model::GenerationResult>> GenerateAll(
    model::Engine& engine, const Loaded& l, const RunConfig& c, const std::vector<Record*>& records,
    int64_t n, double temperature, uint64_t seed) {
  std::vector<std::future<absl::StatusOr<model::GenerationResult>>> futures;
  for (size_t i = 0; i < records.size(); ++i) {
    model::GenerationRequest req;
    ASSIGN_OR_RETURN(req.prompt, PromptTokens(c, *l.tokenizer, records[i]->prompt));
    req.num_samples = n;
    req.params.temperature = temperature;
    req.params.top_p = c.sampling.top_p;
    req.params.top_k = c.sampling.top_k;
    req.params.max_new_tokens = c.sampling.max_new_tokens;
    req.params.seed = seed * 1000003ULL + i;
    req.eos_ids = l.eos;
    futures.push_back(engine.Submit(std::move(req)));
  }
  engine.RunUntilIdle();
  std::vector<model::GenerationResult> out;
  for (auto& f : futures) {
    ASSIGN_OR_RETURN(model::GenerationResult r, f.get());
    out.push_back(std::move(r));
  }
  return out;
}

reward::Sample MakeSample(const Record& r, const std::string& task, const std::string& completion,
                          int tokens) {
  reward::Sample s;
  s.task = task;
  s.prompt = r.prompt;
  s.answer = r.answer;
  s.completion = completion;
  s.completion_tokens = tokens;
  return s;
}

double Accuracy(const reward::Result& r) {
  auto it = r.components.find("accuracy");
  return it == r.components.end() ? 0.0 : it->second;
}

absl::StatusOr<EvalResult> EvaluateEngine(model::Engine& engine, const Loaded& l,
                                          const RunConfig& c, reward::Scorer& scorer,
                                          const std::string& task, std::vector<Record>& records) {
  int64_t n = c.eval.problems > 0 ? std::min<int64_t>(c.eval.problems, records.size())
                                  : static_cast<int64_t>(records.size());
  std::vector<Record*> subset;
  for (int64_t i = 0; i < n; ++i) subset.push_back(&records[i]);
  EvalResult out;
  out.problems = n;
  ASSIGN_OR_RETURN(auto greedy, GenerateAll(engine, l, c, subset, 1, 0.0, 7));
  double correct = 0, formatted = 0, length = 0;
  for (int64_t i = 0; i < n; ++i) {
    const model::Completion& comp = greedy[i].completions[0];
    reward::Sample s = MakeSample(*subset[i], task, CompletionText(l, comp.tokens),
                                  static_cast<int>(comp.tokens.size()));
    correct += Accuracy(scorer.ScoreNow(s)) > 0.5;
    formatted += reward::FormatReward(s, reward::FormatKind::kR1Zero).value > 0.5;
    length += comp.tokens.size();
  }
  out.accuracy = correct / n;
  out.format_rate = formatted / n;
  out.mean_length = length / n;
  out.sampled_accuracy = NAN;
  if (c.eval.sampled) {
    ASSIGN_OR_RETURN(auto sampled, GenerateAll(engine, l, c, subset, 1, c.sampling.temperature,
                                               static_cast<uint64_t>(c.run.seed) + 11));
    double sc = 0;
    for (int64_t i = 0; i < n; ++i) {
      const model::Completion& comp = sampled[i].completions[0];
      reward::Sample s = MakeSample(*subset[i], task, CompletionText(l, comp.tokens),
                                    static_cast<int>(comp.tokens.size()));
      bool ok = Accuracy(scorer.ScoreNow(s)) > 0.5;
      sc += ok;
      if (i < c.eval.show_completions) {
        out.completions.push_back(
            {{"prompt", subset[i]->prompt}, {"completion", s.completion}, {"correct", ok}});
      }
    }
    out.sampled_accuracy = sc / n;
  }
  return out;
}

absl::StatusOr<std::unique_ptr<reward::Scorer>> MakeScorer(const RunConfig& c) {
  reward::ScorerOptions o = reward::ScorerOptionsFromConfig(c.reward);
  o.workers = 1;
  return reward::Scorer::Create(std::move(o));
}

int64_t MaxLen(const model::ModelConfig& mc, const RunConfig& c, const std::vector<Record>& recs,
               const Loaded& l) {
  int64_t longest = 0;
  for (const Record& r : recs) {
    auto t = PromptTokens(c, *l.tokenizer, r.prompt);
    if (t.ok()) longest = std::max<int64_t>(longest, t->size());
  }
  int64_t want = longest + c.sampling.max_new_tokens + 1;
  return mc.max_position_embeddings > 0 ? std::min(want, mc.max_position_embeddings) : want;
}

}  // namespace

absl::Status LocalExecutor::CheckCancelled(const PlannedStage& stage) const {
  if (cancelled_ && cancelled_()) {
    return absl::CancelledError(absl::StrCat("stage ", stage.stage.name, " stopped"));
  }
  return absl::OkStatus();
}

absl::Status LocalExecutor::InitModel(const RunConfig& config, const std::string& tokenizer_dir,
                                      const std::string& out_dir) {
  ASSIGN_OR_RETURN(model::ModelConfig mc, model::PresetConfig(config.model.preset));
  std::string tok_path = tokenizer_dir + "/tokenizer.json";
  ASSIGN_OR_RETURN(auto tok, Tokenizer::FromFile(tok_path));
  int64_t vocab = (tok->vocab_size() + 63) / 64 * 64;
  if (config.model.preset == "tiny" || config.model.preset == "tiny-quickstart" ||
      vocab > mc.vocab_size) {
    mc.vocab_size = vocab;
  }
  mc.bos_token_id = tok->bos_id() ? *tok->bos_id() : -1;
  mc.eos_token_ids.clear();
  if (tok->eos_id()) mc.eos_token_ids.push_back(*tok->eos_id());
  model::TensorMap w = model::RandomInitWeights(mc, ModelInitSeed(config));
  return model::SaveModelDir(out_dir, mc, w, SaveFrom(tokenizer_dir));
}

absl::StatusOr<StageOutcome> LocalExecutor::Train(const PlannedStage& stage,
                                                  const std::string& model_dir,
                                                  const PipelineDataset& dataset,
                                                  const std::string& out_dir,
                                                  const StageCallbacks& cb) {
  const RunConfig& c = stage.config;
  const bool sft = stage.stage.kind == "sft";
  ASSIGN_OR_RETURN(Loaded l, Load(model_dir));
  ASSIGN_OR_RETURN(std::vector<Record> records, ReadRecords(dataset, sft));
  const int64_t batch = c.grpo.prompts_per_step;
  int64_t steps = stage.stage.steps;
  if (steps <= 0) {
    steps = std::max<int64_t>(
        1, static_cast<int64_t>(std::ceil(stage.stage.epochs * records.size() / batch)));
  }
  TrainerOptions to = TrainerOptions::FromConfig(c);
  to.planned_steps = steps;
  ASSIGN_OR_RETURN(auto trainer, Trainer::Create(l.config, l.weights, to));
  StageOutcome outcome;
  outcome.steps = steps;
  const uint64_t seed = static_cast<uint64_t>(c.run.seed) * 7919 + stage.index;

  if (sft) {
    Rng rng{seed};
    // until_accuracy: the first until_problems prompts of until_dataset that
    // are not demonstrations here, decoded greedily every until_every steps.
    const PipelineStage& st = stage.stage;
    const bool until = st.until_accuracy > 0 && !stage.until.spec.path.empty();
    std::vector<Record> dev;
    std::unique_ptr<model::Engine> dev_engine;
    std::unique_ptr<reward::Scorer> dev_scorer;
    RunConfig dev_config = c;
    dev_config.eval.problems = 0;
    dev_config.eval.sampled = false;
    if (until) {
      ASSIGN_OR_RETURN(std::vector<Record> all, ReadRecords(stage.until, false));
      std::set<std::string> demos;
      for (const Record& r : records) demos.insert(r.prompt);
      for (Record& r : all) {
        if (static_cast<int64_t>(dev.size()) >= st.until_problems) break;
        if (!demos.count(r.prompt)) dev.push_back(std::move(r));
      }
      if (dev.empty()) {
        return absl::InvalidArgumentError(
            absl::StrCat("stage ", st.name, ": until_dataset \"", st.until_dataset,
                         "\" has no prompt that is not a demonstration of the stage"));
      }
      ASSIGN_OR_RETURN(dev_scorer, MakeScorer(c));
    }
    double dev_accuracy = NAN;
    for (int64_t step = 1; step <= steps; ++step) {
      RETURN_IF_ERROR(CheckCancelled(stage));
      std::vector<TrainGroup> groups;
      for (int64_t b = 0; b < batch; ++b) {
        const Record& r = records[rng.Next() % records.size()];
        TrainGroup g;
        ASSIGN_OR_RETURN(g.prompt_tokens, PromptTokens(c, *l.tokenizer, r.prompt));
        TrainSample s;
        s.tokens = l.tokenizer->Encode(r.completion);
        s.tokens.push_back(l.eos[0]);
        s.logprobs.assign(s.tokens.size(), 0.0f);
        s.versions.assign(s.tokens.size(), 0);
        s.ok = true;
        g.samples.push_back(std::move(s));
        groups.push_back(std::move(g));
      }
      ASSIGN_OR_RETURN(StepResult r, trainer->SftStep(groups));
      // Rewards mean nothing in SFT (demonstrations are not scored).
      r.metrics.erase("reward_mean");
      r.metrics.erase("accuracy");
      bool reached = false;
      if (until && (step % st.until_every == 0 || step == steps)) {
        if (!dev_engine) {
          ASSIGN_OR_RETURN(dev_engine, MakeEngine(l.config, trainer->PolicyWeights(),
                                                  std::min<int64_t>(128, dev.size()),
                                                  MaxLen(l.config, c, dev, l), step));
        } else {
          RETURN_IF_ERROR(dev_engine->SwapWeights(trainer->PolicyWeights(), step));
        }
        ASSIGN_OR_RETURN(EvalResult e, EvaluateEngine(*dev_engine, l, dev_config, *dev_scorer,
                                                      stage.until.spec.task, dev));
        dev_accuracy = e.accuracy;
        r.metrics["until_accuracy"] = dev_accuracy;
        reached = dev_accuracy >= st.until_accuracy;
        COHORT_LOG(INFO) << "[" << st.name << "] step " << step << ": greedy accuracy "
                         << dev_accuracy << " on " << dev.size() << " prompts of "
                         << st.until_dataset << " (target " << st.until_accuracy << ")"
                         << (reached ? ": reached, the stage ends" : "");
      }
      if (cb.on_step) cb.on_step(step, steps, r.metrics);
      outcome.final_metrics = r.metrics;
      if (reached) {
        outcome.steps = step;
        break;
      }
    }
    if (until) {
      outcome.final_metrics["until_accuracy"] = dev_accuracy;
      outcome.final_metrics["until_reached"] = dev_accuracy >= st.until_accuracy ? 1.0 : 0.0;
    }
  } else {
    ASSIGN_OR_RETURN(auto scorer, MakeScorer(c));
    std::vector<Record> eval_records;
    const int eval_every = c.eval.eval_every;
    const int64_t G = c.sampling.group_size;
    int64_t max_len = MaxLen(l.config, c, records, l);
    ASSIGN_OR_RETURN(auto engine,
                     MakeEngine(l.config, trainer->PolicyWeights(), batch * G, max_len, 0));
    std::vector<int64_t> order;
    int64_t cursor = 0, epoch = 0;
    double gen_s = 0, train_s = 0;
    int64_t gen_tokens = 0;
    for (int64_t step = 1; step <= steps; ++step) {
      RETURN_IF_ERROR(CheckCancelled(stage));
      std::vector<Record*> prompts;
      while (static_cast<int64_t>(prompts.size()) < batch) {
        if (cursor >= static_cast<int64_t>(order.size())) {
          order = EpochOrder(records.size(), seed + 104729 * epoch++);
          cursor = 0;
        }
        prompts.push_back(&records[order[cursor++]]);
      }
      absl::Time t0 = absl::Now();
      ASSIGN_OR_RETURN(auto results, GenerateAll(*engine, l, c, prompts, G, c.sampling.temperature,
                                                 seed + 31 * step));
      absl::Time t1 = absl::Now();
      std::vector<TrainGroup> groups;
      double reward_sum = 0, acc_sum = 0, len_sum = 0;
      int64_t samples = 0;
      for (size_t i = 0; i < prompts.size(); ++i) {
        TrainGroup g;
        g.prompt_id = static_cast<int64_t>(i);
        g.prompt_uid = prompts[i]->id;
        ASSIGN_OR_RETURN(g.prompt_tokens, PromptTokens(c, *l.tokenizer, prompts[i]->prompt));
        for (const model::Completion& comp : results[i].completions) {
          TrainSample s;
          s.tokens = comp.tokens;
          s.logprobs = comp.logprobs;
          s.versions = comp.versions;
          s.finish = Finish(comp.finish_reason);
          reward::Result rr = scorer->ScoreNow(MakeSample(*prompts[i], dataset.spec.task,
                                                          CompletionText(l, comp.tokens),
                                                          static_cast<int>(comp.tokens.size())));
          s.ok = rr.status == reward::Status::kOk;
          s.reward = rr.reward;
          s.components = rr.components;
          if (s.ok) reward_sum += rr.reward, acc_sum += Accuracy(rr), ++samples;
          len_sum += comp.tokens.size();
          gen_tokens += comp.tokens.size();
          g.samples.push_back(std::move(s));
        }
        groups.push_back(std::move(g));
      }
      ASSIGN_OR_RETURN(StepResult r, trainer->TrainStep(groups));
      RETURN_IF_ERROR(engine->SwapWeights(trainer->PolicyWeights(), step));
      absl::Time t2 = absl::Now();
      gen_s += absl::ToDoubleSeconds(t1 - t0);
      train_s += absl::ToDoubleSeconds(t2 - t1);
      std::map<std::string, double> m = r.metrics;
      m["reward_mean"] = samples ? reward_sum / samples : 0;
      m["accuracy"] = samples ? acc_sum / samples : 0;
      m["response_length_mean"] = len_sum / std::max<int64_t>(1, batch * G);
      m["generate_seconds"] = absl::ToDoubleSeconds(t1 - t0);
      m["train_seconds"] = absl::ToDoubleSeconds(t2 - t1);
      m["tokens_per_s_generated"] = gen_tokens / std::max(gen_s, 1e-9);
      m["staleness_mean"] = 0;
      if (cb.on_step) cb.on_step(step, steps, m);
      outcome.final_metrics = m;
      if (eval_every > 0 && step % eval_every == 0 && step < steps && cb.on_eval &&
          !c.eval.dataset.empty()) {
        // The held-out set is the run's eval dataset; its path is beside the
        // training set when it is a task split.
        if (eval_records.empty()) {
          PipelineDataset ed = dataset;
          ed.spec.path =
              (std::filesystem::path(dataset.spec.path).parent_path() / (c.eval.dataset + ".jsonl"))
                  .string();
          auto er = ReadRecords(ed, false);
          if (er.ok()) eval_records = std::move(*er);
        }
        if (!eval_records.empty()) {
          ASSIGN_OR_RETURN(EvalResult e,
                           EvaluateEngine(*engine, l, c, *scorer, dataset.spec.task, eval_records));
          cb.on_eval(step, e);
        }
      }
    }
    outcome.extra["tokens_per_s_generated"] = gen_tokens / std::max(gen_s, 1e-9);
    outcome.extra["generate_seconds"] = gen_s;
    outcome.extra["train_seconds"] = train_s;
  }
  RETURN_IF_ERROR(
      model::SaveModelDir(out_dir, l.config, trainer->PolicyWeights(), SaveFrom(model_dir)));
  return outcome;
}

absl::StatusOr<StageOutcome> LocalExecutor::Generate(const PlannedStage& stage,
                                                     const std::string& model_dir,
                                                     const PipelineDataset& dataset,
                                                     const std::string& out_jsonl,
                                                     const StageCallbacks& cb) {
  const RunConfig& c = stage.config;
  ASSIGN_OR_RETURN(Loaded l, Load(model_dir));
  ASSIGN_OR_RETURN(std::vector<Record> records, ReadRecords(dataset, false));
  ASSIGN_OR_RETURN(auto scorer, MakeScorer(c));
  const int64_t k = stage.stage.samples > 0 ? stage.stage.samples : c.sampling.group_size;
  const int64_t batch = c.grpo.prompts_per_step;
  int64_t max_len = MaxLen(l.config, c, records, l);
  ASSIGN_OR_RETURN(auto engine, MakeEngine(l.config, l.weights, batch * k, max_len, 0));
  const int64_t passes = std::max<int64_t>(1, static_cast<int64_t>(std::ceil(stage.stage.epochs)));
  std::string out;
  int64_t kept = 0, total = 0, steps = 0;
  const int64_t per_pass = (static_cast<int64_t>(records.size()) + batch - 1) / batch;
  for (int64_t pass = 0; pass < passes; ++pass) {
    for (size_t start = 0; start < records.size(); start += batch) {
      RETURN_IF_ERROR(CheckCancelled(stage));
      std::vector<Record*> prompts;
      for (size_t i = start; i < std::min(records.size(), start + batch); ++i) {
        prompts.push_back(&records[i]);
      }
      ASSIGN_OR_RETURN(auto results, GenerateAll(*engine, l, c, prompts, k, c.sampling.temperature,
                                                 static_cast<uint64_t>(c.run.seed) +
                                                     977 * (pass * 100003 + start)));
      for (size_t i = 0; i < prompts.size(); ++i) {
        int kept_here = 0;
        for (const model::Completion& comp : results[i].completions) {
          ++total;
          std::string text = CompletionText(l, comp.tokens);
          reward::Result rr = scorer->ScoreNow(MakeSample(*prompts[i], dataset.spec.task, text,
                                                          static_cast<int>(comp.tokens.size())));
          if (rr.status != reward::Status::kOk || !(rr.reward >= stage.stage.threshold)) continue;
          if (kept_here >= stage.stage.keep_per_prompt) break;
          ++kept_here, ++kept;
          Json line = {{"id", absl::StrCat(prompts[i]->id, "-", pass, "-", kept_here)},
                       {"prompt", prompts[i]->prompt},
                       {"completion", text},
                       {"answer", prompts[i]->answer},
                       {"reward", rr.reward}};
          out += line.dump() + "\n";
        }
      }
      ++steps;
      if (cb.on_step) {
        cb.on_step(steps, per_pass * passes,
                   {{"kept_fraction", total ? static_cast<double>(kept) / total : 0.0}});
      }
    }
  }
  if (kept == 0) {
    // Sampling it again gives the same outcome: the run ends with this reason.
    return PermanentRunError(absl::FailedPreconditionError(absl::StrCat(
        "no completion reached the threshold ", stage.stage.threshold, " (", total, " sampled)")));
  }
  RETURN_IF_ERROR(WriteFileAtomically(out_jsonl, out));
  StageOutcome o;
  o.steps = steps;
  o.final_metrics = {{"kept", static_cast<double>(kept)}, {"sampled", static_cast<double>(total)}};
  return o;
}

absl::StatusOr<EvalResult> LocalExecutor::Evaluate(const RunConfig& config,
                                                   const std::string& model_dir,
                                                   const PipelineDataset& dataset) {
  ASSIGN_OR_RETURN(Loaded l, Load(model_dir));
  ASSIGN_OR_RETURN(std::vector<Record> records, ReadRecords(dataset, false));
  ASSIGN_OR_RETURN(auto scorer, MakeScorer(config));
  int64_t max_len = MaxLen(l.config, config, records, l);
  ASSIGN_OR_RETURN(auto engine, MakeEngine(l.config, l.weights, 128, max_len, 0));
  return EvaluateEngine(*engine, l, config, *scorer, dataset.spec.task, records);
}

}  // namespace cohort::learner
