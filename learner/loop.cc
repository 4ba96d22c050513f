#include "learner/loop.h"

#include <cctype>
#include <cmath>
#include <cstring>
#include <string_view>
#include <utility>

#include <nlohmann/json.hpp>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "core/file.h"
#include "core/logging.h"
#include "core/status.h"
#include "learner/checkpoint.h"

namespace cohort::learner {
namespace {

// The trainer's metric `metric` on /metrics: cohort_learner_trainer_<metric>
// (apart from the loop's own cohort_learner_* names, e.g. step_seconds).
std::string GaugeName(const std::string& metric) {
  std::string out = "cohort_learner_trainer_";
  for (char c : metric) out.push_back(std::isalnum(static_cast<unsigned char>(c)) ? c : '_');
  return out;
}

// Removes the lines of stage `stage` from the ledger journals in `dir`.
absl::Status DropJournalLines(const std::string& dir, const std::string& stage) {
  for (const char* f : {"trained.jsonl", "filtered.jsonl", "failed.jsonl"}) {
    std::string path = absl::StrCat(dir, "/", f);
    if (!PathExists(path)) continue;
    ASSIGN_OR_RETURN(std::string text, ReadFile(path));
    std::string kept;
    int64_t dropped = 0;
    size_t at = 0;
    while (at < text.size()) {
      size_t nl = text.find('\n', at);
      size_t end = nl == std::string::npos ? text.size() : nl + 1;
      std::string_view line(text.data() + at, end - at);
      nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
      if (j.is_object() && j.value("stage", std::string()) == stage) {
        ++dropped;
      } else {
        kept.append(line);
      }
      at = end;
    }
    if (dropped == 0) continue;
    COHORT_LOG(INFO) << path << ": dropping " << dropped << " line(s) of an unfinished attempt at "
                     << "stage " << stage;
    RETURN_IF_ERROR(WriteFileAtomically(path, kept));
  }
  return absl::OkStatus();
}

// The checkpoint's "stages": each recorded stage's name, kind, state, epoch
// and ledger counts.
nlohmann::json StagesToJson(const std::vector<v1::StageStatus>& stages,
                            const std::map<std::string, int32_t>& epochs) {
  nlohmann::json out = nlohmann::json::array();
  for (const v1::StageStatus& s : stages) {
    const v1::LedgerCounts& l = s.ledger();
    auto e = epochs.find(s.name());
    out.push_back({{"name", s.name()},
                   {"kind", s.kind()},
                   {"state", s.state()},
                   {"epoch", e == epochs.end() ? 0 : e->second},
                   {"ledger",
                    {l.queued(), l.leased(), l.buffered(), l.prompts_total(), l.trained(),
                     l.filtered(), l.failed(), l.duplicates(), l.lost(), l.leases_granted(),
                     l.leases_expired(), l.leases_released(), l.leases_retried()}}});
  }
  return out;
}

void StagesFromJson(const nlohmann::json& j, std::vector<v1::StageStatus>* stages,
                    std::map<std::string, int32_t>* epochs) {
  if (!j.is_array()) return;
  for (const auto& e : j) {
    if (!e.is_object()) continue;
    v1::StageStatus s;
    s.set_name(e.value("name", std::string()));
    s.set_kind(e.value("kind", std::string()));
    s.set_state(e.value("state", std::string()));
    std::vector<int64_t> n = e.value("ledger", std::vector<int64_t>{});
    if (n.size() == 13) {
      v1::LedgerCounts* l = s.mutable_ledger();
      l->set_queued(n[0]);
      l->set_leased(n[1]);
      l->set_buffered(n[2]);
      l->set_prompts_total(n[3]);
      l->set_trained(n[4]);
      l->set_filtered(n[5]);
      l->set_failed(n[6]);
      l->set_duplicates(n[7]);
      l->set_lost(n[8]);
      l->set_leases_granted(n[9]);
      l->set_leases_expired(n[10]);
      l->set_leases_released(n[11]);
      l->set_leases_retried(n[12]);
    }
    (*epochs)[s.name()] = e.value("epoch", int32_t{0});
    stages->push_back(std::move(s));
  }
}

// <run_dir>/published_version: the highest version ever published there.
std::string PublishedVersionPath(const std::string& run_dir) {
  return absl::StrCat(run_dir, "/published_version");
}

// The number in published_version; -1 when there is none.
absl::StatusOr<int64_t> ReadPublishedHigh(const std::string& run_dir) {
  const std::string path = PublishedVersionPath(run_dir);
  if (!PathExists(path)) return int64_t{-1};
  ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  int64_t v = -1;
  if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(text), &v) || v < 0) {
    return absl::DataLossError(absl::StrCat(path, ": not a version number: \"", text, "\""));
  }
  return v;
}

nlohmann::json ActorsToJson(const std::map<std::string, ActorTotals>& actors) {
  nlohmann::json out = nlohmann::json::array();
  for (const auto& [name, t] : actors) {
    out.push_back(
        {{"name", name},
         {"pid", t.pid},
         {"joins", t.joins},
         {"groups", t.groups},
         {"tokens", t.tokens},
         {"versions_seen", std::vector<int64_t>(t.versions_seen.begin(), t.versions_seen.end())}});
  }
  return out;
}

std::map<std::string, ActorTotals> ActorsFromJson(const nlohmann::json& j) {
  std::map<std::string, ActorTotals> out;
  if (!j.is_array()) return out;
  for (const auto& e : j) {
    if (!e.is_object() || !e.contains("name")) continue;
    ActorTotals& t = out[e["name"].get<std::string>()];
    t.pid = e.value("pid", int64_t{0});
    t.joins = e.value("joins", int32_t{0});
    t.groups = e.value("groups", int64_t{0});
    t.tokens = e.value("tokens", int64_t{0});
    for (int64_t v : e.value("versions_seen", std::vector<int64_t>{})) t.versions_seen.insert(v);
  }
  return out;
}

const char* DTypeName(WeightDType d) {
  return d == WeightDType::kBF16 ? "bf16" : d == WeightDType::kF16 ? "f16" : "f32";
}

}  // namespace

std::string SerializeSnapshot(const WeightSnapshot& snapshot) {
  nlohmann::json header = nlohmann::json::array();
  for (const WeightTensor& t : snapshot.tensors) {
    header.push_back(
        {{"name", t.name}, {"dtype", DTypeName(t.dtype)}, {"shape", t.shape}, {"bytes", t.size}});
  }
  std::string out = header.dump() + "\n";
  for (const WeightTensor& t : snapshot.tensors) {
    out.append(reinterpret_cast<const char*>(t.data.get()), t.size);
  }
  return out;
}

absl::StatusOr<WeightSnapshot> ParseSnapshot(const std::string& bytes) {
  size_t nl = bytes.find('\n');
  nlohmann::json header = nlohmann::json::parse(bytes.substr(0, nl), nullptr, false);
  if (nl == std::string::npos || !header.is_array()) {
    return absl::InvalidArgumentError("weight snapshot: bad header");
  }
  WeightSnapshot s;
  size_t at = nl + 1;
  try {
    for (const auto& h : header) {
      WeightTensor t;
      t.name = h["name"].get<std::string>();
      std::string d = h["dtype"].get<std::string>();
      t.dtype = d == "bf16"  ? WeightDType::kBF16
                : d == "f16" ? WeightDType::kF16
                             : WeightDType::kF32;
      t.shape = h["shape"].get<std::vector<int64_t>>();
      t.size = h["bytes"].get<int64_t>();
      if (t.size < 0 || at + static_cast<size_t>(t.size) > bytes.size()) {
        return absl::InvalidArgumentError("weight snapshot: truncated");
      }
      auto data = AllocateWeightBytes(t.size);
      std::memcpy(data.get(), bytes.data() + at, t.size);
      t.data = data;
      at += t.size;
      s.tensors.push_back(std::move(t));
    }
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("weight snapshot: ", e.what()));
  }
  return s;
}

LearnerLoop::LearnerLoop(LoopOptions options, PolicyTrainer* trainer, WeightStore* store,
                         LearnerService* service)
    : options_(std::move(options)),
      trainer_(trainer),
      store_(store),
      service_(service),
      metrics_(options_.metrics != nullptr ? options_.metrics : MetricsRegistry::Default()) {}

absl::Status LearnerLoop::Start() {
  absl::MutexLock lock(&train_mu_);
  RETURN_IF_ERROR(MakeDirs(options_.run_dir));
  std::string root = options_.checkpoint_root.empty() ? options_.run_dir + "/checkpoints"
                                                      : options_.checkpoint_root;
  ASSIGN_OR_RETURN(std::optional<CheckpointInfo> latest, FindLatestCheckpoint(root));
  if (!latest) {
    for (const char* f : {"trained.jsonl", "filtered.jsonl", "failed.jsonl", "metrics.jsonl"}) {
      if (!options_.write_metrics_jsonl && std::string(f) == "metrics.jsonl") continue;
      RETURN_IF_ERROR(RemoveAll(absl::StrCat(options_.run_dir, "/", f)));
    }
    version_ = 0;
    if (!options_.deterministic) {
      // An earlier attempt that never checkpointed may have published
      // versions actors still hold: number past them.
      ASSIGN_OR_RETURN(published_high_, ReadPublishedHigh(options_.run_dir));
      if (published_high_ >= 0) {
        retired_.push_back({0, published_high_});
        version_ = published_high_ + 1;
        COHORT_LOG(INFO) << "versions 0.." << published_high_
                         << " were published by an earlier attempt without a checkpoint: "
                         << "numbering continues at " << version_;
      }
    }
    if (trainer_ != nullptr) RETURN_IF_ERROR(PublishCurrent());
    UpdateSnapshot();
    return absl::OkStatus();
  }
  COHORT_LOG(INFO) << "resuming from " << latest->path;
  if (trainer_ != nullptr) {
    RETURN_IF_ERROR(trainer_->LoadCheckpoint(latest->trainer_dir()));
  } else {
    resumed_trainer_dir_ = latest->trainer_dir();  // for UseTrainer()
  }
  ASSIGN_OR_RETURN(std::string loop_blob, ReadCheckpointBlob(*latest, "loop"));
  nlohmann::json j = nlohmann::json::parse(loop_blob, nullptr, false);
  if (!j.is_object()) {
    return absl::DataLossError(absl::StrCat(latest->path, ": blob \"loop\" is not JSON"));
  }
  step_ = j.value("step", int64_t{0});
  optimizer_steps_ = j.value("optimizer_steps", int64_t{0});
  version_ = j.value("version", int64_t{0});
  skipped_ = j.value("skipped", int64_t{0});
  resumed_stage_index_ = j.value("stage_index", -1);
  stage_start_version_ = j.value("stage_start_version", int64_t{0});
  stage_ = j.value("stage", std::string());
  {
    absl::MutexLock status_lock(&status_mu_);
    StagesFromJson(j.value("stages", nlohmann::json::array()), &stages_, &stage_epochs_);
  }
  service_->RestoreActorTotals(ActorsFromJson(j.value("actors", nlohmann::json::array())));
  absl::StatusOr<std::string> ledger = ReadCheckpointBlob(*latest, "ledger");
  if (ledger.ok()) resumed_ledger_ = *ledger;
  // Deterministic mode: versions pinned leases may still need.
  for (int64_t v : j.value("kept_versions", std::vector<int64_t>{})) {
    ASSIGN_OR_RETURN(std::string blob, ReadCheckpointBlob(*latest, absl::StrCat("version-", v)));
    ASSIGN_OR_RETURN(WeightSnapshot snap, ParseSnapshot(blob));
    RETURN_IF_ERROR(store_->Publish(v, std::move(snap)));
  }
  for (const auto& r : j.value("retired_versions", nlohmann::json::array())) {
    if (r.is_array() && r.size() == 2)
      retired_.push_back({r[0].get<int64_t>(), r[1].get<int64_t>()});
  }
  if (!options_.deterministic) {
    ASSIGN_OR_RETURN(published_high_, ReadPublishedHigh(options_.run_dir));
    if (published_high_ > version_) {
      // The dead learner published version_+1..published_high_ after this
      // checkpoint: those numbers name other weights, which actors may
      // hold. The checkpoint's weights become a new version past them.
      retired_.push_back({version_ + 1, published_high_});
      resume_version_shift_ = published_high_ + 1 - version_;
      COHORT_LOG(INFO) << "versions " << version_ + 1 << ".." << published_high_
                       << " were published after the checkpoint (version " << version_
                       << "): they are retired, and its weights are published as version "
                       << published_high_ + 1;
      version_ += resume_version_shift_;
      stage_start_version_ += resume_version_shift_;
    }
  }
  last_checkpoint_ = latest->path;
  last_checkpoint_step_ = step_;
  if (trainer_ != nullptr) RETURN_IF_ERROR(PublishCurrent());
  UpdateSnapshot();
  return absl::OkStatus();
}

int LearnerLoop::resumed_stage_index() const {
  absl::MutexLock lock(&train_mu_);
  return resumed_stage_index_;
}

absl::Status LearnerLoop::UseTrainer(PolicyTrainer* trainer, int stage_index) {
  absl::MutexLock lock(&train_mu_);
  trainer_ = trainer;
  const bool resume = stage_index == resumed_stage_index_ && !resumed_ledger_.empty() &&
                      !resumed_trainer_dir_.empty();
  if (resume) {
    RETURN_IF_ERROR(trainer_->LoadCheckpoint(resumed_trainer_dir_));
    resumed_trainer_dir_.clear();
    if (store_->latest_version() < version_) RETURN_IF_ERROR(PublishCurrent());
  } else {
    // New weights get a new version (actors may hold the previous one).
    if (version_ > 0 || store_->latest_version() >= 0) ++version_;
    RETURN_IF_ERROR(PublishCurrent());
  }
  UpdateSnapshot();
  return absl::OkStatus();
}

void LearnerLoop::ReleaseTrainer() {
  absl::MutexLock lock(&train_mu_);
  trainer_ = nullptr;
}

bool LearnerLoop::has_trainer() const {
  absl::MutexLock lock(&train_mu_);
  return trainer_ != nullptr;
}

absl::Status LearnerLoop::PublishCurrent() {
  ASSIGN_OR_RETURN(WeightSnapshot snap, trainer_->ExportWeights());
  if (!options_.deterministic && version_ > published_high_) {
    // Durable before any actor can see the version (see the file comment).
    RETURN_IF_ERROR(
        WriteFileAtomically(PublishedVersionPath(options_.run_dir), absl::StrCat(version_, "\n")));
    published_high_ = version_;
  }
  return store_->Publish(version_, std::move(snap));
}

absl::StatusOr<LedgerCounts> LearnerLoop::RunLeaseStage(const LeaseStageSpec& spec) {
  std::shared_ptr<Ledger> ledger;
  {
    absl::MutexLock lock(&train_mu_);
    LedgerOptions lo = spec.ledger;
    lo.stage = spec.name;
    lo.journal_dir = options_.run_dir;
    lo.deterministic = options_.deterministic;
    bool resume = spec.index == resumed_stage_index_ && !resumed_ledger_.empty();
    if (!resume) {
      stage_start_version_ = version_;
      // Journal lines an earlier, unfinished attempt at this stage left
      // (it ended before its first checkpoint) are replayed from scratch.
      RETURN_IF_ERROR(DropJournalLines(options_.run_dir, spec.name));
    }
    lo.start_version = stage_start_version_;
    lo.retired_versions = retired_;
    ASSIGN_OR_RETURN(std::unique_ptr<Ledger> created, Ledger::Create(lo));
    ledger = std::move(created);
    if (resume) {
      RETURN_IF_ERROR(ledger->Restore(resumed_ledger_, absl::Now(), resume_version_shift_));
      resume_version_shift_ = 0;
      resumed_ledger_.clear();
      COHORT_LOG(INFO) << "stage " << spec.name << " resumed: " << ledger->Counts().trained
                       << " trained, " << ledger->Counts().queued << " queued";
    }
    ledger_ = ledger;
    stage_ = spec.name;
    stage_kind_ = spec.kind;
    stage_index_ = spec.index;
    UpdateSnapshot();
  }
  LeaseStage served;
  served.name = spec.name;
  served.kind = spec.kind;
  served.ledger = ledger;
  served.prompts = spec.prompts;
  served.group_size = spec.group_size;
  served.sampling = spec.sampling;
  service_->SetStage(served);
  RecordStage(spec.name, spec.kind, "running", nullptr);
  while (!ledger->Done()) {
    if (stop_.load()) {
      return absl::CancelledError(absl::StrCat("stage ", spec.name, " stopped"));
    }
    std::optional<LedgerBatch> batch = ledger->WaitForBatch(options_.poll);
    if (!batch) continue;
    absl::MutexLock lock(&train_mu_);
    RETURN_IF_ERROR(TrainBatch(spec, ledger.get(), *batch));
    UpdateSnapshot();
  }
  service_->ClearStage();
  LedgerCounts counts = ledger->Counts();
  RecordStage(spec.name, spec.kind, "done", &counts, ledger->CurrentEpoch());
  COHORT_LOG(INFO) << "stage " << spec.name << " done: " << counts.trained << " trained, "
                   << counts.filtered << " filtered, " << counts.failed << " failed of "
                   << counts.prompts_total;
  return counts;
}

absl::Status LearnerLoop::TrainBatch(const LeaseStageSpec& spec, Ledger* ledger,
                                     const LedgerBatch& batch) {
  absl::Time t0 = absl::Now();
  StepResult result;
  if (spec.kind == "grpo") {
    std::vector<TrainGroup> groups;
    groups.reserve(batch.groups.size());
    for (const auto& g : batch.groups) groups.push_back(*g);
    ASSIGN_OR_RETURN(result, trainer_->TrainStep(groups));
    ++step_;
    optimizer_steps_ += result.optimizer_steps;
    if (result.skipped) {
      ++skipped_;
      COHORT_LOG(WARNING) << "step " << step_ << " skipped: " << result.skip_reason;
    }
    ++version_;
    RETURN_IF_ERROR(PublishCurrent());
    RETURN_IF_ERROR(ledger->CommitBatch(batch, step_, /*advance_version=*/true));
    int64_t pinned = ledger->MinPinnedVersion();
    store_->SetMinNeeded(pinned);
  } else {
    if (spec.sink) RETURN_IF_ERROR(spec.sink(batch));
    RETURN_IF_ERROR(ledger->CommitBatch(batch, step_, /*advance_version=*/false));
  }
  double seconds = absl::ToDoubleSeconds(absl::Now() - t0);
  LedgerCounts counts = ledger->Counts();
  auto [staleness_mean, tokens_per_s] = WriteMetrics(spec, result, batch, seconds, counts);
  if (spec.on_step) {
    std::map<std::string, double> m = result.metrics;
    m["tokens"] = static_cast<double>(result.tokens);
    m["step_seconds"] = seconds;
    m["groups"] = static_cast<double>(batch.groups.size());
    m["stage_step"] = static_cast<double>(batch.index + 1);
    m["policy_version"] = static_cast<double>(version_);
    m["staleness_mean"] = staleness_mean;
    m["tokens_per_s"] = tokens_per_s;
    for (const auto& [state, n] :
         std::vector<std::pair<const char*, int64_t>>{{"trained", counts.trained},
                                                      {"filtered", counts.filtered},
                                                      {"failed", counts.failed},
                                                      {"queued", counts.queued},
                                                      {"leased", counts.leased},
                                                      {"prompts_total", counts.prompts_total}}) {
      m[absl::StrCat("ledger_", state)] = static_cast<double>(n);
    }
    spec.on_step(step_, m);
  }
  if (spec.kind == "grpo" && options_.checkpoint_every > 0 &&
      step_ % options_.checkpoint_every == 0) {
    RETURN_IF_ERROR(CheckpointLocked().status());
  }
  return absl::OkStatus();
}

std::pair<double, double> LearnerLoop::WriteMetrics(const LeaseStageSpec& spec, const StepResult& r,
                                                    const LedgerBatch& batch, double seconds,
                                                    const LedgerCounts& c) {
  int64_t tokens = 0;
  double staleness_sum = 0;
  Histogram* staleness = metrics_->GetHistogram(
      "cohort_learner_trained_token_staleness",
      "Training steps between the trained policy and the version that produced each trained "
      "token.",
      Histogram::LinearBuckets(0, 1, 8));
  int64_t trained_version = version_ - (spec.kind == "grpo" ? 1 : 0);
  for (const auto& g : batch.groups) {
    for (const TrainSample& s : g->samples) {
      tokens += static_cast<int64_t>(s.tokens.size());
      for (int64_t v : s.versions) {
        const double steps = static_cast<double>(StepsBetween(v, trained_version, retired_));
        staleness->Observe(steps);
        staleness_sum += steps;
      }
    }
  }
  nlohmann::json j = {{"stage", spec.name},
                      {"kind", spec.kind},
                      {"step", step_},
                      {"optimizer_steps", optimizer_steps_},
                      {"policy_version", version_},
                      {"batch", batch.index},
                      {"groups", batch.groups.size()},
                      {"tokens", tokens},
                      {"step_seconds", seconds},
                      {"tokens_per_s", seconds > 0 ? tokens / seconds : 0.0},
                      {"staleness_mean", tokens > 0 ? staleness_sum / tokens : 0.0},
                      {"skipped", r.skipped},
                      {"unix_ms", absl::ToUnixMillis(absl::Now())},
                      {"ledger",
                       {{"trained", c.trained},
                        {"filtered", c.filtered},
                        {"failed", c.failed},
                        {"queued", c.queued},
                        {"leased", c.leased},
                        {"buffered", c.buffered},
                        {"prompts_total", c.prompts_total}}}};
  for (const auto& [name, value] : r.metrics) {
    // A trainer metric the loop reports too (step_seconds, tokens_per_s: the
    // loop's cover the whole step) is trainer_<name> in the line.
    const std::string key = j.contains(name) ? "trainer_" + name : name;
    j[key] = std::isfinite(value) ? nlohmann::json(value) : nlohmann::json(nullptr);
    metrics_
        ->GetGauge(GaugeName(name),
                   "Trainer metric of the last step (see docs/operations.md, docs/learner.md).")
        ->Set(value);
  }
  if (options_.write_metrics_jsonl) {
    absl::Status s =
        AppendToFile(absl::StrCat(options_.run_dir, "/metrics.jsonl"), j.dump() + "\n");
    if (!s.ok()) COHORT_LOG(WARNING) << "metrics.jsonl: " << s.message();
  }
  metrics_->GetGauge("cohort_learner_step", "Training steps (batches) taken.")
      ->Set(static_cast<double>(step_));
  metrics_->GetGauge("cohort_learner_policy_version", "Latest published policy version.")
      ->Set(static_cast<double>(version_));
  metrics_->GetGauge("cohort_learner_step_seconds", "Wall time of the last step.")->Set(seconds);
  metrics_->GetCounter("cohort_learner_trained_tokens_total", "Completion tokens trained on.")
      ->Increment(static_cast<double>(tokens));
  const std::pair<const char*, int64_t> states[] = {
      {"queued", c.queued},   {"leased", c.leased},     {"buffered", c.buffered},
      {"trained", c.trained}, {"filtered", c.filtered}, {"failed", c.failed}};
  for (const auto& [state, n] : states) {
    metrics_
        ->GetGauge("cohort_learner_ledger_items", "Items of the current stage's ledger by state.",
                   {{"state", state}})
        ->Set(static_cast<double>(n));
  }
  return {j["staleness_mean"].get<double>(), j["tokens_per_s"].get<double>()};
}

absl::StatusOr<v1::CheckpointResponse> LearnerLoop::CheckpointLocked() {
  if (trainer_ == nullptr) {
    return absl::FailedPreconditionError(
        "no lease-driven stage is running: nothing to checkpoint (pipeline state is in "
        "pipeline_state.json)");
  }
  std::string root = options_.checkpoint_root.empty() ? options_.run_dir + "/checkpoints"
                                                      : options_.checkpoint_root;
  std::map<std::string, std::string> blobs;
  nlohmann::json loop = {{"step", step_},
                         {"optimizer_steps", optimizer_steps_},
                         {"version", version_},
                         {"skipped", skipped_},
                         {"stage", stage_},
                         {"stage_index", stage_index_},
                         {"stage_start_version", stage_start_version_},
                         {"run_id", options_.run_id}};
  nlohmann::json retired = nlohmann::json::array();
  for (const auto& [first, last] : retired_) retired.push_back({first, last});
  loop["retired_versions"] = std::move(retired);
  {
    absl::MutexLock status_lock(&status_mu_);
    loop["stages"] = StagesToJson(stages_, stage_epochs_);
  }
  loop["actors"] = ActorsToJson(service_->ActorTotalsByName());
  if (ledger_ != nullptr && !ledger_->Done()) {
    ASSIGN_OR_RETURN(blobs["ledger"], ledger_->Serialize());
    if (options_.deterministic) {
      int64_t pinned = ledger_->MinPinnedVersion();
      std::vector<int64_t> kept;
      for (int64_t v : store_->kept_versions()) {
        if (pinned >= 0 && v >= pinned && v < version_) {
          std::shared_ptr<const PublishedVersion> pv = store_->Get(v);
          if (pv == nullptr) continue;
          blobs[absl::StrCat("version-", v)] = SerializeSnapshot(pv->weights);
          kept.push_back(v);
        }
      }
      loop["kept_versions"] = kept;
    }
  } else {
    // The stage is over: a resume starts the next one.
    loop["stage_index"] = stage_index_ + 1;
  }
  blobs["loop"] = loop.dump();
  ASSIGN_OR_RETURN(CheckpointInfo info, WriteCheckpoint(
                                            root, {step_, version_, options_.keep_last},
                                            [trainer = trainer_](const std::string& dir) {
                                              return trainer->SaveCheckpoint(dir);
                                            },
                                            blobs));
  last_checkpoint_ = info.path;
  last_checkpoint_step_ = step_;
  COHORT_LOG(INFO) << "checkpoint " << info.path << " (step " << step_ << ", version " << version_
                   << ")";
  v1::CheckpointResponse r;
  r.set_path(info.path);
  r.set_step(step_);
  r.set_policy_version(version_);
  UpdateSnapshot();
  return r;
}

absl::StatusOr<v1::CheckpointResponse> LearnerLoop::WriteCheckpointNow() {
  absl::MutexLock lock(&train_mu_);
  return CheckpointLocked();
}

absl::StatusOr<v1::CheckpointResponse> LearnerLoop::CheckpointNow() { return WriteCheckpointNow(); }

void LearnerLoop::Stop() {
  stop_.store(true);
  absl::MutexLock lock(&train_mu_);
  if (ledger_ != nullptr) ledger_->Interrupt();
}

void LearnerLoop::StartDrain() {
  drain_.store(true);
  service_->SetDraining(true);
}

int64_t LearnerLoop::step() const {
  absl::MutexLock lock(&status_mu_);
  return snapshot_.step();
}

int64_t LearnerLoop::version() const {
  absl::MutexLock lock(&status_mu_);
  return snapshot_.policy_version();
}

void LearnerLoop::UpdateSnapshot() {
  absl::MutexLock lock(&status_mu_);
  snapshot_.set_run_id(options_.run_id);
  snapshot_.set_stage(stage_);
  snapshot_.set_stage_kind(stage_kind_);
  snapshot_.set_step(step_);
  snapshot_.set_policy_version(version_);
  snapshot_.set_last_checkpoint(last_checkpoint_);
  snapshot_.set_skipped_steps(skipped_);
}

void LearnerLoop::SetDone() {
  absl::MutexLock lock(&status_mu_);
  done_ = true;
}

void LearnerLoop::SetFailed(const std::string& reason) {
  {
    absl::MutexLock lock(&status_mu_);
    failure_ = reason;
    for (auto& s : stages_) {
      if (s.state() == "running") s.set_state("failed");
    }
  }
  // Nothing is leased any more.
  service_->ClearStage();
}

void LearnerLoop::RecordStage(const std::string& name, const std::string& kind,
                              const std::string& state, const LedgerCounts* c, int32_t epoch) {
  absl::MutexLock lock(&status_mu_);
  v1::StageStatus* s = nullptr;
  for (auto& existing : stages_) {
    if (existing.name() == name) s = &existing;
  }
  if (s == nullptr) {
    stages_.emplace_back();
    s = &stages_.back();
  }
  s->set_name(name);
  s->set_kind(kind);
  s->set_state(state);
  if (c != nullptr) {
    LedgerCountsToProto(*c, s->mutable_ledger());
    stage_epochs_[name] = epoch;
  }
}

void LearnerLoop::FillStatus(v1::RunStatus* status) {
  absl::MutexLock lock(&status_mu_);
  status->MergeFrom(snapshot_);
  status->set_done(done_);
  status->set_failure(failure_);
  for (const auto& s : stages_) *status->add_stages() = s;
  if (done_ || !failure_.empty()) {
    // No stage is running (the service adds no ledger): the run's ledger is
    // the sum of its lease-driven stages' final counts.
    v1::LedgerCounts* sum = status->mutable_ledger();
    int32_t epoch = 0;
    for (const auto& s : stages_) {
      if (!s.has_ledger()) continue;
      const v1::LedgerCounts& l = s.ledger();
      sum->set_queued(sum->queued() + l.queued());
      sum->set_leased(sum->leased() + l.leased());
      sum->set_buffered(sum->buffered() + l.buffered());
      sum->set_prompts_total(sum->prompts_total() + l.prompts_total());
      sum->set_trained(sum->trained() + l.trained());
      sum->set_filtered(sum->filtered() + l.filtered());
      sum->set_failed(sum->failed() + l.failed());
      sum->set_duplicates(sum->duplicates() + l.duplicates());
      sum->set_lost(sum->lost() + l.lost());
      sum->set_leases_granted(sum->leases_granted() + l.leases_granted());
      sum->set_leases_expired(sum->leases_expired() + l.leases_expired());
      sum->set_leases_released(sum->leases_released() + l.leases_released());
      sum->set_leases_retried(sum->leases_retried() + l.leases_retried());
      auto e = stage_epochs_.find(s.name());
      if (e != stage_epochs_.end()) epoch = e->second;
    }
    status->set_epoch(epoch);
  }
}

}  // namespace cohort::learner
