// cohort-learner: the learner of a run. Serves cohort.v1.Learner and
// cohort.v1.Admin while a training thread runs the run:
//   * `pipeline:` non-empty: the stages in order in run.out_dir
//     (learner/pipeline.h with learner/pipeline_cluster.h: SFT and evals in
//     this process, grpo and generate through leases to the actors), then
//     summary.json, report.html and run.out_dir/model; the actors are
//     drained. A restarted learner skips the finished stages and resumes
//     the interrupted lease-driven one from its checkpoint.
//   * otherwise one GRPO stage on data.train: loads the model (model.path,
//     or a random-init preset sized to the tokenizer), the tokenizer and the
//     prompt set, builds the trainer and trains over the actors' leases
//     (learner/loop.h).
// Resumes from the newest complete checkpoint under
// <run.out_dir>/checkpoints.
//
// Ends:
//   * the run is done (RunStatus.done): final checkpoint, exit 0 (a
//     finished role: `cohort run` does not restart it), or with
//     --stay_after_done keep serving status until SIGTERM;
//   * Admin/Drain: no new leases; once none is outstanding (or
//     learner.checkpoint_on_stop_seconds passed) checkpoint and exit 0;
//   * SIGTERM/SIGINT: the step in progress finishes, checkpoint within
//     learner.checkpoint_on_stop_seconds, exit 0;
//   * an error a restart would repeat (learner/pipeline.h: a generate stage
//     that kept nothing, a stage input that cannot be read or is malformed,
//     or the same error three starts in a row): recorded as final in
//     <run.out_dir>/run_failure.json, reported in RunStatus.failure and
//     summary.json, actors drained, exit 3 (kRunFailedExitCode: `cohort run`
//     does not restart it; a later start with the same config exits 3 at
//     once, or serves the failed status with --stay_after_done);
//   * any other error (I/O, a trainer failure): exit 1 (the supervisor
//     restarts it, and it resumes from the last checkpoint).
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "core/file.h"
#include "core/logging.h"
#include "core/service.h"
#include "core/status.h"
#include "core/tokenizer.h"
#include "learner/dataset.h"
#include "learner/loop.h"
#include "learner/pipeline.h"
#include "learner/pipeline_cluster.h"
#include "learner/service.h"
#include "learner/trainer.h"
#include "learner/weight_store.h"
#include "model/aten.h"
#include "model/checkpoint.h"

namespace cohort::learner {
namespace {

std::string ReadOr(const std::string& path) {
  absl::StatusOr<std::string> text = ReadFile(path);
  return text.ok() ? *text : std::string();
}

// The run id survives learner restarts: it lives in the run directory.
std::string RunId(const std::string& run_dir, const std::string& name) {
  std::string path = run_dir + "/run_id";
  std::string id = ReadOr(path);
  while (!id.empty() && (id.back() == '\n' || id.back() == ' ')) id.pop_back();
  if (!id.empty()) return id;
  std::random_device rd;
  id = absl::StrFormat("%s-%d-%08x", name, absl::ToUnixSeconds(absl::Now()), rd());
  absl::Status s = WriteFileAtomically(path, id + "\n");
  if (!s.ok()) COHORT_LOG(WARNING) << s.message();
  return id;
}

// The source tree's git revision: $COHORT_GIT_REVISION, else `git
// rev-parse HEAD` beside this binary (a build tree inside the checkout);
// "" when neither says.
std::string GitRevision() {
  if (const char* env = std::getenv("COHORT_GIT_REVISION"); env != nullptr) return env;
  std::error_code ec;
  std::filesystem::path exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec) return "";
  std::string cmd =
      absl::StrCat("git -C '", exe.parent_path().string(), "' rev-parse HEAD 2>/dev/null");
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) return "";
  char buf[128] = {0};
  std::string out = std::fgets(buf, sizeof(buf), p) != nullptr ? buf : "";
  ::pclose(p);
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
  return out;
}

struct Setup {
  std::unique_ptr<Tokenizer> tokenizer;
  std::unique_ptr<Trainer> trainer;
  v1::ModelFiles files;
  Dataset dataset;
  std::shared_ptr<std::vector<StagePrompt>> prompts;
};

absl::StatusOr<Setup> Load(const RunConfig& c) {
  Setup s;
  std::string tok_path = !c.model.tokenizer.empty() ? c.model.tokenizer
                         : !c.model.path.empty()    ? c.model.path + "/tokenizer.json"
                                                    : "";
  if (tok_path.empty() && !c.data.train.empty()) {
    return absl::InvalidArgumentError(
        "model.tokenizer: a preset model needs a tokenizer.json to format data.train (set "
        "model.tokenizer or model.path)");
  }
  if (!tok_path.empty()) {
    ASSIGN_OR_RETURN(s.tokenizer, Tokenizer::FromFile(tok_path));
  }
  model::ModelConfig mc;
  model::TensorMap weights;
  if (!c.model.path.empty()) {
    ASSIGN_OR_RETURN(model::LoadedModel m, model::LoadModelDir(c.model.path, at::kFloat));
    mc = m.config;
    weights = std::move(m.weights);
    s.files.set_source(c.model.path);
  } else {
    ASSIGN_OR_RETURN(mc, model::PresetConfig(c.model.preset));
    if (s.tokenizer != nullptr) {
      mc.vocab_size = s.tokenizer->vocab_size();
      if (s.tokenizer->eos_id()) mc.eos_token_ids = {*s.tokenizer->eos_id()};
    }
    weights = model::RandomInitWeights(mc, ModelInitSeed(c));
    s.files.set_source("preset:" + c.model.preset);
  }
  at::Device device(at::kCPU);
  if (c.learner.device == "cuda") {
    if (!at::hasCUDA()) {
      return absl::FailedPreconditionError("learner.device is cuda but no CUDA device is usable");
    }
    device = at::Device(at::kCUDA, 0);
  }
  ASSIGN_OR_RETURN(s.trainer,
                   Trainer::Create(mc, std::move(weights), TrainerOptions::FromConfig(c), device));
  TrainerInfo info = s.trainer->info();
  s.files.set_config_json(mc.ToJson());
  if (!tok_path.empty()) {
    s.files.set_tokenizer_json(ReadOr(tok_path));
    std::string dir = tok_path.substr(0, tok_path.rfind('/') + 1);
    s.files.set_tokenizer_config_json(ReadOr(dir + "tokenizer_config.json"));
  }
  if (!c.model.path.empty()) {
    s.files.set_generation_config_json(ReadOr(c.model.path + "/generation_config.json"));
  }
  s.files.set_chat_template(c.model.chat_template);
  for (int64_t id : mc.eos_token_ids) s.files.add_eos_token_ids(static_cast<int32_t>(id));
  s.files.set_model_fingerprint(info.model_fingerprint);
  s.files.set_dtype(info.dtype);

  if (c.data.train.empty()) {
    COHORT_LOG(WARNING) << "data.train is empty: serving without a training stage (actors can "
                           "join and fetch weights; no prompts are leased)";
    return s;
  }
  DatasetOptions d = DatasetOptions::FromConfig(c.data);
  const Tokenizer* tok = s.tokenizer.get();
  const std::string tmpl = c.model.chat_template;
  auto format = [tok, tmpl](const PromptRecord& r) { return FormatPromptRecord(r, tmpl, *tok); };
  d.count_prompt_tokens = [format](const PromptRecord& r) -> absl::StatusOr<int64_t> {
    ASSIGN_OR_RETURN(std::vector<int32_t> ids, format(r));
    return static_cast<int64_t>(ids.size());
  };
  ASSIGN_OR_RETURN(s.dataset, Dataset::Load(c.data.train, d));
  if (s.dataset.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("data.train: ", c.data.train,
                                                   " has no usable prompt (",
                                                   s.dataset.dropped_too_long(), " too long)"));
  }
  s.prompts = std::make_shared<std::vector<StagePrompt>>();
  for (const PromptRecord& r : s.dataset.records()) {
    StagePrompt p;
    ASSIGN_OR_RETURN(p.tokens, format(r));
    p.text = r.messages.empty() ? r.prompt : r.messages.back().content;
    p.task = r.task;
    p.answer = r.answer;
    p.extra_json = "{}";
    p.uid = r.id;
    s.prompts->push_back(std::move(p));
  }
  COHORT_LOG(INFO) << "data.train: " << s.dataset.size() << " prompts ("
                   << s.dataset.dropped_too_long() << " dropped as longer than "
                   << c.data.max_prompt_tokens << " tokens)";
  return s;
}

LeaseStageSpec GrpoStage(const RunConfig& c, const Setup& s) {
  LeaseStageSpec spec;
  spec.name = "grpo";
  spec.kind = "grpo";
  spec.index = 0;
  LedgerOptions& lo = spec.ledger;
  lo.num_prompts = s.dataset.size();
  lo.epochs = c.data.epochs;
  uint64_t seed =
      static_cast<uint64_t>(c.data.shuffle_seed != 0 ? c.data.shuffle_seed : c.run.seed);
  for (int e = 0; e < c.data.epochs; ++e) {
    lo.epoch_orders.push_back(s.dataset.EpochOrder(e, seed, c.data.shuffle));
  }
  for (const PromptRecord& r : s.dataset.records()) lo.prompt_uids.push_back(r.id);
  lo.prompts_per_step = c.grpo.prompts_per_step;
  lo.max_staleness = c.learner.max_staleness;
  lo.max_lease_attempts = c.learner.max_lease_attempts;
  lo.lease_ttl = absl::Milliseconds(c.learner.lease_ttl_ms);
  lo.dynamic_sampling = c.grpo.dynamic_sampling;
  lo.seed = static_cast<uint64_t>(c.run.seed);
  spec.prompts = s.prompts;
  spec.group_size = c.sampling.group_size;
  spec.sampling.set_temperature(static_cast<float>(c.sampling.temperature));
  spec.sampling.set_top_k(c.sampling.top_k);
  spec.sampling.set_top_p(static_cast<float>(c.sampling.top_p));
  spec.sampling.set_max_new_tokens(c.sampling.max_new_tokens);
  for (const auto& stop : c.sampling.stop) spec.sampling.add_stop(stop);
  return spec;
}

int Main(int argc, char** argv) {
  ServiceMain service(
      "learner", "cohort-learner",
      "The learner of a cohort run: serves cohort.v1.Learner (actors join, lease prompts, submit "
      "scored groups, fetch weights) and cohort.v1.Admin (status, checkpoint, pause, resume, "
      "drain), plus grpc.health.v1, reflection and /metrics; trains the policy with GRPO on the "
      "groups actors submit, publishes a weight version per batch and checkpoints to "
      "<run.out_dir>/checkpoints. Exits 0 when the run is done or drained; on SIGTERM it "
      "checkpoints within learner.checkpoint_on_stop_seconds.");
  bool stay_after_done = false, start_new = false;
  service.flags().Bool("stay_after_done", &stay_after_done,
                       "When the run is done, keep serving GetStatus (done = true) and health "
                       "until SIGTERM instead of exiting 0 (for Kubernetes, where an exit would "
                       "restart a finished run).");
  service.flags().Bool("new", &start_new,
                       "pipeline: replace an unfinished run of another config in run.out_dir "
                       "instead of refusing it.");
  if (!service.Init(argc, argv)) return 2;
  const RunConfig& c = service.config();
  const bool pipeline_mode = !c.pipeline.empty();
  absl::StatusOr<Setup> setup = pipeline_mode ? absl::StatusOr<Setup>(Setup()) : Load(c);
  if (!setup.ok()) {
    COHORT_LOG(ERROR) << setup.status().message();
    return 2;
  }
  absl::Status made = MakeDirs(c.run.out_dir);
  if (!made.ok()) {
    COHORT_LOG(ERROR) << made.message();
    return 2;
  }
  std::string run_id = RunId(c.run.out_dir, c.run.name);
  WeightStore store({.keep_versions = c.learner.keep_versions});
  LearnerServiceOptions so;
  so.run_id = run_id;
  so.model = setup->files;  // pipeline: empty until its first lease-driven stage
  so.vocab_size = pipeline_mode ? 0 : setup->trainer->info().vocab_size;
  so.reward_addresses = c.reward.addresses;
  if (so.reward_addresses.empty() && !c.reward.address.empty()) {
    so.reward_addresses = {c.reward.address};
  }
  so.group_size = c.sampling.group_size;
  so.sampling.set_temperature(static_cast<float>(c.sampling.temperature));
  so.sampling.set_top_k(c.sampling.top_k);
  so.sampling.set_top_p(static_cast<float>(c.sampling.top_p));
  so.sampling.set_max_new_tokens(c.sampling.max_new_tokens);
  so.heartbeat_interval_ms = c.learner.heartbeat_interval_ms;
  so.lease_ttl_ms = c.learner.lease_ttl_ms;
  so.deterministic = c.learner.determinism;
  so.max_staleness = c.learner.max_staleness;
  LearnerService learner(so, &store);
  LoopOptions lo;
  lo.run_dir = c.run.out_dir;
  lo.checkpoint_root = c.checkpoint.dir;
  lo.checkpoint_every = c.checkpoint.every_steps;
  lo.keep_last = c.checkpoint.keep_last;
  lo.deterministic = c.learner.determinism;
  lo.run_id = run_id;
  lo.write_metrics_jsonl = !pipeline_mode;  // the pipeline writes metrics.jsonl
  LearnerLoop loop(lo, setup->trainer.get(), &store, &learner);
  AdminService admin(&learner, &loop, !c.security.admin_token_file.empty());
  LeaseStageSpec spec;
  if (setup->prompts != nullptr) spec = GrpoStage(c, *setup);

  std::thread training, drain_watch;
  std::atomic<bool> finished{false}, stopping{false}, failed{false};
  // The run failed for good: status shows it, actors drain, exit 3.
  auto fail_run = [&](const absl::Status& error) {
    failed = true;
    loop.SetFailed(std::string(error.message()));
    learner.SetDraining(true);
    if (stay_after_done) {
      COHORT_LOG(INFO) << "--stay_after_done: serving the failed status until SIGTERM";
    } else {
      service.RequestStop(error);
    }
  };
  const std::string state_config = PipelineStateConfig(c);
  ServiceMain::Hooks hooks;
  hooks.stopping_budget = absl::Seconds(c.learner.checkpoint_on_stop_seconds);
  hooks.on_serving = [&]() -> absl::Status {
    RETURN_IF_ERROR(loop.Start());
    drain_watch = std::thread([&] {
      while (!stopping && !loop.drain_requested()) absl::SleepFor(absl::Milliseconds(100));
      if (stopping) return;
      absl::Time until = absl::Now() + absl::Seconds(c.learner.checkpoint_on_stop_seconds);
      while (!stopping && learner.OutstandingLeases() > 0 && absl::Now() < until) {
        absl::SleepFor(absl::Milliseconds(100));
      }
      COHORT_LOG(INFO) << "drained: " << learner.OutstandingLeases() << " leases outstanding";
      service.RequestStop(absl::OkStatus());
    });
    if (pipeline_mode) {
      training = std::thread([&] {
        ClusterExecutor executor(c.run.out_dir, c.learner.device, &loop, &learner);
        Pipeline::Options po;
        po.start_new = start_new;
        po.git_revision = GitRevision();
        Pipeline pipeline(c, c.run.out_dir, &executor, po);
        executor.set_pipeline(&pipeline);
        absl::Status run = pipeline.Run();
        if (!run.ok()) {
          if (IsFinalRunFailure(run)) {
            fail_run(run);
          } else if (!stopping && !absl::IsCancelled(run)) {
            service.RequestStop(run);
          }
          return;
        }
        loop.SetDone();
        finished = true;
        COHORT_LOG(INFO) << "pipeline complete: " << c.run.out_dir
                         << "/summary.json, report.html, model/";
        // Drain: actors finish their work in flight and leave (exit 0).
        learner.SetDraining(true);
        absl::Time until = absl::Now() + absl::Seconds(c.actor.drain_grace_seconds + 3);
        while (!stopping && absl::Now() < until) {
          v1::RunStatus status;
          learner.FillStatus(&status);
          bool all_gone = true;
          for (const auto& a : status.actors()) all_gone &= a.gone();
          if (all_gone) break;
          absl::SleepFor(absl::Milliseconds(100));
        }
        if (stay_after_done) {
          COHORT_LOG(INFO) << "--stay_after_done: serving status until SIGTERM";
        } else {
          service.RequestStop(absl::OkStatus());
        }
      });
      return absl::OkStatus();
    }
    if (setup->prompts == nullptr) return absl::OkStatus();  // idle: nothing to train
    if (std::optional<RunFailure> f = FinalRunFailure(c.run.out_dir, state_config)) {
      COHORT_LOG(ERROR) << "this run failed: " << f->reason << " (" << c.run.out_dir
                        << "/run_failure.json; a new run.out_dir runs it again)";
      fail_run(absl::FailedPreconditionError(f->reason));
      return absl::OkStatus();
    }
    if (loop.resumed_stage_index() > spec.index) {
      COHORT_LOG(INFO) << "the run is already complete (checkpoint after the last stage)";
      loop.SetDone();
      finished = true;
      if (!stay_after_done) service.RequestStop(absl::OkStatus());
      return absl::OkStatus();
    }
    training = std::thread([&] {
      absl::StatusOr<LedgerCounts> counts = loop.RunLeaseStage(spec);
      if (counts.ok()) {
        absl::StatusOr<v1::CheckpointResponse> ck = loop.WriteCheckpointNow();
        if (!ck.ok()) {
          service.RequestStop(ck.status());
          return;
        }
        loop.SetDone();
        finished = true;
        COHORT_LOG(INFO) << "run complete: " << counts->trained << " trained, " << counts->filtered
                         << " filtered, " << counts->failed << " failed";
        if (stay_after_done) {
          COHORT_LOG(INFO) << "--stay_after_done: serving status until SIGTERM";
        } else {
          service.RequestStop(absl::OkStatus());
        }
      } else if (!absl::IsCancelled(counts.status())) {
        absl::Status marked;
        absl::StatusOr<RunFailure> f =
            RecordRunFailure(c.run.out_dir, state_config, spec.name, counts.status(), &marked);
        if (f.ok() && f->final) {
          COHORT_LOG(ERROR) << "the run failed: " << counts.status().message()
                            << " (a restart would fail the same way)";
          fail_run(marked);
        } else {
          service.RequestStop(counts.status());
        }
      }
    });
    return absl::OkStatus();
  };
  hooks.on_stopping = [&] {
    stopping = true;
    loop.Stop();
    if (training.joinable()) training.join();
    if (drain_watch.joinable()) drain_watch.join();
    // A pipeline's lease stage writes its own final checkpoint when stopped.
    if (!finished && !pipeline_mode && setup->prompts != nullptr) {
      absl::StatusOr<v1::CheckpointResponse> ck = loop.WriteCheckpointNow();
      if (!ck.ok()) COHORT_LOG(ERROR) << "final checkpoint failed: " << ck.status().message();
    }
  };
  const int code = service.Serve({&learner, &admin}, hooks,
                                 {c.learner.host, c.learner.port, c.learner.metrics_port});
  return failed ? kRunFailedExitCode : code;
}

}  // namespace
}  // namespace cohort::learner

int main(int argc, char** argv) { return cohort::learner::Main(argc, argv); }
