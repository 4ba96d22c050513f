// The learner's StageExecutor. See pipeline_cluster.h.
#include "learner/pipeline_cluster.h"

#include <algorithm>
#include <cmath>
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
#include "learner/dataset.h"
#include "learner/trainer.h"
#include "learner/weight_server.h"
#include "model/aten.h"
#include "model/checkpoint.h"

namespace cohort::learner {
absl::StatusOr<std::vector<int32_t>> FormatPromptRecord(const PromptRecord& record,
                                                        const std::string& chat_template,
                                                        const Tokenizer& tokenizer) {
  std::vector<cohort::ChatMessage> messages;
  if (record.messages.empty()) {
    messages.push_back({"user", record.prompt});
  } else {
    for (const auto& m : record.messages) messages.push_back({m.role, m.content});
  }
  ASSIGN_OR_RETURN(std::string text, FormatChat(chat_template, messages, true));
  return tokenizer.Encode(text);
}

namespace {

using Json = nlohmann::json;

double Now() { return absl::ToDoubleSeconds(absl::Now() - absl::UnixEpoch()); }

std::string ReadOr(const std::string& path) {
  if (!PathExists(path)) return std::string();
  absl::StatusOr<std::string> text = ReadFile(path);
  return text.ok() ? *text : std::string();
}

model::SaveOptions SaveFrom(const std::string& dir) {
  model::SaveOptions o;
  if (PathExists(dir + "/tokenizer.json")) o.tokenizer_json = dir + "/tokenizer.json";
  if (PathExists(dir + "/tokenizer_config.json")) {
    o.tokenizer_config_json = dir + "/tokenizer_config.json";
  }
  return o;
}

absl::StatusOr<at::Device> DeviceOf(const std::string& name) {
  if (name.empty() || name == "cpu") return at::Device(at::kCPU);
  if (name == "cuda") {
    if (!at::hasCUDA()) {
      return absl::FailedPreconditionError("learner.device is cuda but no CUDA device is usable");
    }
    return at::Device(at::kCUDA, 0);
  }
  return absl::InvalidArgumentError(
      absl::StrCat("learner.device \"", name, "\": expected cpu or cuda"));
}

// The stage's prompt sequence: ledger item k is prompts[k].
struct StagePrompts {
  std::shared_ptr<std::vector<StagePrompt>> prompts;
  std::vector<std::string> uids;
  std::vector<int64_t> pass;  // which pass over the dataset item k belongs to
  int64_t dataset_size = 0;
  int64_t dropped_too_long = 0;
};

absl::StatusOr<StagePrompts> BuildPrompts(const PlannedStage& stage, const Tokenizer& tok) {
  const RunConfig& c = stage.config;
  DatasetOptions d = DatasetOptions::FromConfig(c.data);
  const std::string tmpl = c.model.chat_template;
  auto format = [&tok, tmpl](const PromptRecord& r) { return FormatPromptRecord(r, tmpl, tok); };
  d.count_prompt_tokens = [format](const PromptRecord& r) -> absl::StatusOr<int64_t> {
    ASSIGN_OR_RETURN(std::vector<int32_t> ids, format(r));
    return static_cast<int64_t>(ids.size());
  };
  ASSIGN_OR_RETURN(Dataset ds, Dataset::Load(c.data.train, d));
  if (ds.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(c.data.train, " has no usable prompt (", ds.dropped_too_long(), " too long)"));
  }
  const int64_t n = ds.size();
  const int64_t per_step = c.grpo.prompts_per_step;
  int64_t items;
  if (stage.stage.steps > 0) {
    items = stage.stage.steps * per_step;
  } else {
    double epochs = stage.stage.epochs > 0 ? stage.stage.epochs : 1.0;
    items = std::max<int64_t>(1, static_cast<int64_t>(std::ceil(epochs * n)));
  }
  uint64_t seed =
      static_cast<uint64_t>(c.data.shuffle_seed != 0 ? c.data.shuffle_seed : c.run.seed) +
      1000003ULL * static_cast<uint64_t>(stage.index);
  std::vector<std::vector<int32_t>> tokens(n);
  for (int64_t i = 0; i < n; ++i) {
    ASSIGN_OR_RETURN(tokens[i], format(ds.record(i)));
  }
  StagePrompts out;
  out.prompts = std::make_shared<std::vector<StagePrompt>>();
  out.prompts->reserve(items);
  out.dataset_size = n;
  out.dropped_too_long = ds.dropped_too_long();
  std::vector<int64_t> order;
  for (int64_t k = 0; k < items; ++k) {
    const int64_t pass = k / n;
    if (k % n == 0) order = ds.EpochOrder(pass, seed, c.data.shuffle);
    const PromptRecord& r = ds.record(order[k % n]);
    StagePrompt p;
    p.tokens = tokens[order[k % n]];
    p.text = r.messages.empty() ? r.prompt : r.messages.back().content;
    p.task = r.task;
    p.answer = r.answer;
    p.extra_json = "{}";
    p.uid = r.id;
    out.uids.push_back(r.id);
    out.pass.push_back(pass);
    out.prompts->push_back(std::move(p));
  }
  return out;
}

Json LedgerJson(const LedgerCounts& c) {
  return {{"prompts_total", c.prompts_total}, {"prompts_trained", c.trained},
          {"prompts_filtered", c.filtered},   {"prompts_failed", c.failed},
          {"duplicates", c.duplicates},       {"lost", c.lost}};
}

int64_t GeneratedTokens(const v1::RunStatus& s) {
  int64_t n = 0;
  for (const auto& a : s.actors()) n += a.tokens_generated();
  return n;
}

// An actor's engine time since `since` (the stage's start): the difference
// of the running totals of the same actor_name (the totals themselves when
// they went down or it was not seen then).
v1::EngineTime EngineTimeSince(const v1::ActorInfo& a, const v1::RunStatus& since) {
  v1::EngineTime t = a.engine_time();
  for (const v1::ActorInfo& b : since.actors()) {
    if (b.actor_name() != a.actor_name()) continue;
    const v1::EngineTime& s = b.engine_time();
    if (t.busy_seconds() < s.busy_seconds() ||
        t.idle_prompts_seconds() < s.idle_prompts_seconds() ||
        t.idle_weights_seconds() < s.idle_weights_seconds() ||
        t.idle_rewards_seconds() < s.idle_rewards_seconds()) {
      break;
    }
    t.set_busy_seconds(t.busy_seconds() - s.busy_seconds());
    t.set_idle_prompts_seconds(t.idle_prompts_seconds() - s.idle_prompts_seconds());
    t.set_idle_weights_seconds(t.idle_weights_seconds() - s.idle_weights_seconds());
    t.set_idle_rewards_seconds(t.idle_rewards_seconds() - s.idle_rewards_seconds());
    break;
  }
  return t;
}

double EngineSeconds(const v1::EngineTime& t) {
  return t.busy_seconds() + t.idle_prompts_seconds() + t.idle_weights_seconds() +
         t.idle_rewards_seconds();
}

// Fractions of engine time in [0, 1]: idle in all, and by reason.
Json IdleJson(const v1::EngineTime& t) {
  const double total = EngineSeconds(t);
  auto f = [total](double s) { return std::clamp(s / total, 0.0, 1.0); };
  return {{"idle_fraction",
           f(t.idle_prompts_seconds() + t.idle_weights_seconds() + t.idle_rewards_seconds())},
          {"idle_fraction_by_reason",
           {{"prompts", f(t.idle_prompts_seconds())},
            {"weights", f(t.idle_weights_seconds())},
            {"rewards", f(t.idle_rewards_seconds())}}},
          {"engine_seconds", total}};
}

// The engine-time-weighted idle fraction of every actor since `since`
// (-1: no actor reported engine time), and per actor name.
double ActorIdleFraction(const v1::RunStatus& now, const v1::RunStatus& since,
                         std::map<std::string, double>* per_actor) {
  double idle = 0, total = 0;
  for (const v1::ActorInfo& a : now.actors()) {
    const v1::EngineTime t = EngineTimeSince(a, since);
    const double seconds = EngineSeconds(t);
    if (seconds <= 0) continue;
    const double i = seconds - t.busy_seconds();
    if (per_actor != nullptr) (*per_actor)[a.actor_name()] = std::clamp(i / seconds, 0.0, 1.0);
    idle += i;
    total += seconds;
  }
  return total > 0 ? std::clamp(idle / total, 0.0, 1.0) : -1;
}

}  // namespace

ClusterExecutor::ClusterExecutor(std::string run_dir, std::string device, LearnerLoop* loop,
                                 LearnerService* service)
    : run_dir_(std::move(run_dir)), device_(std::move(device)), loop_(loop), service_(service) {
  // SIGTERM / drain: an in-process stage stops at its next step.
  local_.set_cancelled([loop] { return loop->stopping(); });
}

absl::Status ClusterExecutor::InitModel(const RunConfig& config, const std::string& tokenizer_dir,
                                        const std::string& out_dir) {
  return local_.InitModel(config, tokenizer_dir, out_dir);
}

absl::StatusOr<EvalResult> ClusterExecutor::Evaluate(const RunConfig& config,
                                                     const std::string& model_dir,
                                                     const PipelineDataset& dataset) {
  return local_.Evaluate(config, model_dir, dataset);
}

absl::StatusOr<StageOutcome> ClusterExecutor::Train(const PlannedStage& stage,
                                                    const std::string& model_dir,
                                                    const PipelineDataset& dataset,
                                                    const std::string& out_dir,
                                                    const StageCallbacks& cb) {
  if (stage.stage.kind == "sft") return local_.Train(stage, model_dir, dataset, out_dir, cb);
  return RunLeaseStage(stage, model_dir, dataset, out_dir, cb);
}

absl::StatusOr<StageOutcome> ClusterExecutor::Generate(const PlannedStage& stage,
                                                       const std::string& model_dir,
                                                       const PipelineDataset& dataset,
                                                       const std::string& out_jsonl,
                                                       const StageCallbacks& cb) {
  return RunLeaseStage(stage, model_dir, dataset, out_jsonl, cb);
}

Json ClusterExecutor::ActorsJson(const v1::RunStatus* since) const {
  v1::RunStatus status;
  service_->FillStatus(&status);
  Json actors = Json::array();
  for (const v1::ActorInfo& a : status.actors()) {
    Json j = {{"actor_name", a.actor_name()},
              {"pid", a.pid()},
              {"joins", a.joins()},
              {"groups_submitted", a.groups_submitted()},
              {"tokens_generated", a.tokens_generated()},
              {"policy_versions_seen", a.policy_versions_seen()}};
    const v1::EngineTime t = since != nullptr ? EngineTimeSince(a, *since) : a.engine_time();
    if (EngineSeconds(t) > 0) j.update(IdleJson(t));
    actors.push_back(std::move(j));
  }
  return actors;
}

absl::StatusOr<StageOutcome> ClusterExecutor::RunLeaseStage(const PlannedStage& stage,
                                                            const std::string& model_dir,
                                                            const PipelineDataset& dataset,
                                                            const std::string& out,
                                                            const StageCallbacks& cb) {
  (void)dataset;  // stage.config.data points at it
  const RunConfig& c = stage.config;
  const PipelineStage& s = stage.stage;
  const bool generate = s.kind == "generate";
  RETURN_IF_ERROR(MakeDirs(run_dir_ + "/stages"));
  const std::string done_path =
      absl::StrCat(run_dir_, "/stages/", stage.index, "-", s.name, ".json");
  if (loop_->resumed_stage_index() > stage.index && PathExists(done_path)) {
    // Finished before a restart, but the pipeline state did not record it.
    ASSIGN_OR_RETURN(std::string text, ReadFile(done_path));
    Json j = Json::parse(text, nullptr, false);
    if (j.is_object()) {
      COHORT_LOG(INFO) << "stage " << s.name << " finished before the restart (" << done_path
                       << ")";
      StageOutcome o;
      o.steps = j.value("steps", int64_t{0});
      const Json metrics = j.value("final_metrics", Json::object());
      for (auto it = metrics.begin(); it != metrics.end(); ++it) {
        if (it->is_number()) o.final_metrics[it.key()] = it->get<double>();
      }
      o.extra = j.value("extra", Json::object());
      return o;
    }
  }
  const double t0 = Now();
  ASSIGN_OR_RETURN(at::Device device, DeviceOf(device_));
  ASSIGN_OR_RETURN(model::LoadedModel m, model::LoadModelDir(model_dir, at::kFloat));
  const std::string tok_path = model_dir + "/tokenizer.json";
  if (!PathExists(tok_path)) {
    return absl::FailedPreconditionError(
        absl::StrCat(model_dir, ": no tokenizer.json (the actors and the reward server need it)"));
  }
  ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tok, Tokenizer::FromFile(tok_path));
  ASSIGN_OR_RETURN(StagePrompts sp, BuildPrompts(stage, *tok));
  const int64_t items = static_cast<int64_t>(sp.prompts->size());
  const int64_t per_step = c.grpo.prompts_per_step;
  const int64_t planned = (items + per_step - 1) / per_step;
  COHORT_LOG(INFO) << "stage " << s.name << " (" << s.kind << "): " << items << " prompts from "
                   << c.data.train << " (" << sp.dataset_size << " in the dataset, "
                   << sp.dropped_too_long << " dropped as too long), " << planned << " batches";

  TrainerOptions to = TrainerOptions::FromConfig(c);
  to.planned_steps = planned * std::max(1, c.grpo.num_iterations);
  std::vector<int32_t> eos;
  for (int64_t id : m.config.eos_token_ids) eos.push_back(static_cast<int32_t>(id));
  if (auto id = tok->eos_id(); id && std::find(eos.begin(), eos.end(), *id) == eos.end()) {
    eos.push_back(*id);
  }
  const model::ModelConfig mc = m.config;
  // grpo: the Trainer (optimizer, reference model); generate: its input
  // weights only, in the served dtype (no optimizer state, no fp32 copy).
  std::unique_ptr<Trainer> trainer;
  std::unique_ptr<WeightServer> server;
  PolicyTrainer* policy = nullptr;
  if (generate) {
    ASSIGN_OR_RETURN(server, WeightServer::Create(mc, std::move(m.weights), to.serve_dtype));
    policy = server.get();
    COHORT_LOG(INFO) << "stage " << s.name << ": serving its input weights only ("
                     << server->held_bytes() << " bytes, " << to.serve_dtype
                     << "; no optimizer state)";
  } else {
    ASSIGN_OR_RETURN(trainer, Trainer::Create(mc, std::move(m.weights), to, device));
    policy = trainer.get();
  }
  const TrainerInfo info = policy->info();

  v1::ModelFiles files;
  files.set_source(model_dir);
  files.set_config_json(mc.ToJson());
  files.set_tokenizer_json(ReadOr(tok_path));
  files.set_tokenizer_config_json(ReadOr(model_dir + "/tokenizer_config.json"));
  files.set_generation_config_json(ReadOr(model_dir + "/generation_config.json"));
  files.set_chat_template(c.model.chat_template);
  for (int32_t id : eos) files.add_eos_token_ids(id);
  files.set_model_fingerprint(info.model_fingerprint);
  files.set_dtype(info.dtype);

  LeaseStageSpec spec;
  spec.name = s.name;
  spec.kind = s.kind;
  spec.index = stage.index;
  LedgerOptions& lo = spec.ledger;
  lo.num_prompts = items;
  lo.epochs = 1;
  lo.prompt_uids = sp.uids;
  lo.prompts_per_step = per_step;
  lo.max_staleness = c.learner.max_staleness;
  lo.max_lease_attempts = c.learner.max_lease_attempts;
  lo.lease_ttl = absl::Milliseconds(c.learner.lease_ttl_ms);
  lo.dynamic_sampling = !generate && c.grpo.dynamic_sampling;
  lo.seed = static_cast<uint64_t>(c.run.seed) + static_cast<uint64_t>(stage.index);
  spec.prompts = sp.prompts;
  spec.group_size = generate && s.samples > 0 ? s.samples : c.sampling.group_size;
  spec.sampling.set_temperature(static_cast<float>(c.sampling.temperature));
  spec.sampling.set_top_k(c.sampling.top_k);
  spec.sampling.set_top_p(static_cast<float>(c.sampling.top_p));
  spec.sampling.set_max_new_tokens(c.sampling.max_new_tokens);
  for (const auto& stop : c.sampling.stop) spec.sampling.add_stop(stop);

  // generate: kept completions, appended per batch; a resumed stage keeps
  // what an earlier attempt wrote and skips prompts already written.
  const std::string partial = out + ".partial";
  std::set<int64_t> written;
  int64_t kept = 0, sampled = 0;
  const bool resuming = loop_->resumed_stage_index() == stage.index;
  if (generate && resuming && PathExists(partial)) {
    ASSIGN_OR_RETURN(std::string text, ReadFile(partial));
    size_t at = 0;
    while (at < text.size()) {
      size_t nl = text.find('\n', at);
      if (nl == std::string::npos) nl = text.size();
      Json j = Json::parse(text.substr(at, nl - at), nullptr, false);
      if (j.is_object() && j.contains("ledger_item")) {
        written.insert(j["ledger_item"].get<int64_t>());
        ++kept;
      }
      at = nl + 1;
    }
  } else if (generate) {
    RETURN_IF_ERROR(RemoveAll(partial));
  }
  if (generate) {
    spec.sink = [&](const LedgerBatch& batch) -> absl::Status {
      std::string lines;
      for (const auto& g : batch.groups) {
        if (!written.insert(g->prompt_id).second) continue;
        const StagePrompt& p = (*sp.prompts)[g->prompt_id];
        int kept_here = 0;
        for (const TrainSample& sample : g->samples) {
          ++sampled;
          if (!sample.ok || !(sample.reward >= s.threshold)) continue;
          if (kept_here >= s.keep_per_prompt) break;
          ++kept_here, ++kept;
          std::vector<int32_t> ids = sample.tokens;
          while (!ids.empty() && std::find(eos.begin(), eos.end(), ids.back()) != eos.end()) {
            ids.pop_back();
          }
          Json line = {{"id", absl::StrCat(p.uid, "-", sp.pass[g->prompt_id], "-", kept_here)},
                       {"prompt", p.text},
                       {"completion", tok->Decode(ids)},
                       {"answer", p.answer},
                       {"reward", sample.reward},
                       {"ledger_item", g->prompt_id}};
          lines += line.dump() + "\n";
        }
      }
      return lines.empty() ? absl::OkStatus() : AppendToFile(partial, lines);
    };
  }

  // Progress, metrics and held-out evals during the stage.
  std::map<std::string, double> last;
  double busy_seconds = 0, trained_tokens = 0;
  std::string eval_error;
  const PipelineDataset* eval_set = nullptr;
  if (pipeline_ != nullptr && !c.eval.dataset.empty()) {
    auto it = pipeline_->plan().datasets.find(c.eval.dataset);
    if (it != pipeline_->plan().datasets.end()) eval_set = &it->second;
  }
  v1::RunStatus before;  // filled when the stage starts
  spec.on_step = [&](int64_t, const std::map<std::string, double>& metrics) {
    const int64_t step = static_cast<int64_t>(metrics.at("stage_step"));
    busy_seconds += metrics.count("step_seconds") ? metrics.at("step_seconds") : 0;
    trained_tokens += metrics.count("tokens") ? metrics.at("tokens") : 0;
    last = metrics;
    if (generate) {
      last["kept"] = static_cast<double>(kept);
      last["sampled"] = static_cast<double>(sampled);
      last["kept_fraction"] = sampled ? static_cast<double>(kept) / sampled : 0.0;
    }
    if (cb.on_step) {
      // Actors' engine idle fractions since the stage began (metrics.jsonl,
      // report.html's idle fraction chart).
      std::map<std::string, double> line = last, per_actor;
      v1::RunStatus now;
      service_->FillStatus(&now);
      const double idle = ActorIdleFraction(now, before, &per_actor);
      if (idle >= 0) line["actor_idle_fraction"] = idle;
      for (const auto& [name, f] : per_actor) line["actor/" + name + "/idle_fraction"] = f;
      cb.on_step(step, planned, line);
    }
    if (!generate && eval_set != nullptr && cb.on_eval && c.eval.eval_every > 0 &&
        step % c.eval.eval_every == 0 && step < planned) {
      const std::string dir = run_dir_ + "/models/.during-" + s.name;
      absl::Status saved =
          model::SaveModelDir(dir, mc, trainer->PolicyWeights(), SaveFrom(model_dir));
      absl::StatusOr<EvalResult> r =
          saved.ok() ? local_.Evaluate(c, dir, *eval_set) : absl::StatusOr<EvalResult>(saved);
      if (r.ok()) {
        cb.on_eval(step, *r);
      } else if (eval_error.empty()) {
        eval_error = std::string(r.status().message());
        COHORT_LOG(WARNING) << "held-out eval during " << s.name << ": " << eval_error;
      }
    }
  };

  service_->FillStatus(&before);
  RETURN_IF_ERROR(loop_->UseTrainer(policy, stage.index));
  const int64_t first_version = loop_->version();
  service_->SetModel(files, info.vocab_size);
  absl::StatusOr<LedgerCounts> counts = loop_->RunLeaseStage(spec);
  if (!counts.ok()) {
    if (absl::IsCancelled(counts.status())) {
      // Stopping (SIGTERM, drain): the final checkpoint needs this stage's
      // trainer, which goes away with this frame, so it is written here.
      absl::StatusOr<v1::CheckpointResponse> ck = loop_->WriteCheckpointNow();
      if (!ck.ok()) COHORT_LOG(ERROR) << "final checkpoint failed: " << ck.status().message();
    }
    loop_->ReleaseTrainer();
    return counts.status();
  }
  const double seconds = std::max(1e-9, Now() - t0);

  StageOutcome o;
  o.steps = counts->batches;
  if (generate) {
    if (kept == 0) {
      loop_->ReleaseTrainer();
      // Every prompt was sampled: a retry ends the same way (the run fails).
      return PermanentRunError(absl::FailedPreconditionError(absl::StrCat(
          "no completion reached the threshold ", s.threshold, " (", sampled, " sampled)")));
    }
    std::string text = PathExists(partial) ? ReadOr(partial) : std::string();
    RETURN_IF_ERROR(WriteFileAtomically(out, text));
    RETURN_IF_ERROR(RemoveAll(partial));
    o.final_metrics = {{"kept", static_cast<double>(kept)},
                       {"sampled", static_cast<double>(sampled)}};
  } else {
    RETURN_IF_ERROR(model::SaveModelDir(out, mc, trainer->PolicyWeights(), SaveFrom(model_dir)));
    o.final_metrics = last;
    o.final_metrics.erase("stage_step");
  }
  v1::RunStatus after;
  service_->FillStatus(&after);
  o.extra["ledger"] = LedgerJson(*counts);
  o.extra["actors"] = ActorsJson(&before);
  if (const double idle = ActorIdleFraction(after, before, nullptr); idle >= 0) {
    o.extra["actor_idle_fraction"] = idle;
  }
  o.extra["tokens_per_s_generated"] =
      static_cast<double>(GeneratedTokens(after) - GeneratedTokens(before)) / seconds;
  o.extra["tokens_per_s_trained"] = trained_tokens / seconds;
  o.extra["learner_idle_fraction"] = std::clamp(1.0 - busy_seconds / seconds, 0.0, 1.0);
  o.extra["first_version"] = first_version;
  o.extra["last_version"] = loop_->version();
  Json saved = {{"steps", o.steps}, {"final_metrics", Json::object()}, {"extra", o.extra}};
  for (const auto& [k, v] : o.final_metrics) {
    if (std::isfinite(v)) saved["final_metrics"][k] = v;
  }
  RETURN_IF_ERROR(WriteFileAtomically(done_path, saved.dump(1)));
  // The checkpoint after the stage says "the next stage starts fresh".
  absl::StatusOr<v1::CheckpointResponse> ck = loop_->WriteCheckpointNow();
  loop_->ReleaseTrainer();
  if (!ck.ok()) return ck.status();
  return o;
}

}  // namespace cohort::learner
