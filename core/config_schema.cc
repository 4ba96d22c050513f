// The run config's schema: one binding line per key (constraint and help
// text; the default is the struct field's initialiser in config.h), and the
// checks across fields. This is the file a component author edits to add a
// key; see config_binder.h.
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/config.h"
#include "core/config_binder.h"
#include "core/pipeline_config.h"
#include "core/status.h"
#include "core/verifier_names.h"

namespace cohort {
namespace config_internal {

// ---------------------------------------------------------------------------
// The schema. One line per field; the struct in config.h holds the default.

void Bind(Binder& b, RunSection& s) {
  b.String("name", &s.name, NonEmpty(), "Run name, shown in logs and reports.");
  b.Int64("seed", &s.seed, AtLeast(0),
          "Global seed; with a fixed seed on CPU a run is reproducible.");
  b.String("out_dir", &s.out_dir, NonEmpty(),
           "Checkpoints, role logs, `trained.jsonl`, `report.html`.");
  b.String("log_level", &s.log_level, OneOf({"debug", "info", "warning", "error"}),
           "Minimum log level of every role.");
}

void Bind(Binder& b, ModelSection& s) {
  b.String("path", &s.path, {},
           "Hugging Face model directory (`config.json`, `*.safetensors`, `tokenizer.json`); "
           "`\"\"` uses `preset`.");
  b.String("preset", &s.preset, {},
           "Built-in randomly initialised architecture used when `path` is empty.");
  b.String("tokenizer", &s.tokenizer, {},
           "`tokenizer.json` path; `\"\"` = `<path>/tokenizer.json`.");
  b.String("dtype", &s.dtype, OneOf({"float32", "bfloat16"}),
           "Weights and compute dtype (bf16 autocast on GPU).");
  b.String("chat_template", &s.chat_template, OneOf({"chatml", "llama3", "r1-zero", "plain"}),
           "How prompts are wrapped for the policy.");
  b.Int64("init_seed", &s.init_seed, IntRule{-1, INT64_MAX},
          "Seed of a randomly initialised model (a `preset`: the pipeline's `base`, or the "
          "policy of a run without `pipeline:`); -1 = `run.seed`. Fixing it keeps one initial "
          "model across run seeds, which then change the data order and sampling only.");
}

void Bind(Binder& b, SamplingSection& s) {
  b.Int("group_size", &s.group_size, AtLeast(1),
        "G: completions sampled per prompt (the GRPO group).");
  b.Double("temperature", &s.temperature, Positive(), "Sampling temperature.");
  b.Double("top_p", &s.top_p, DoubleRule{0.0, true, 1.0, false}, "Nucleus sampling mass.");
  b.Int("top_k", &s.top_k, AtLeast(0), "Top-k sampling; 0 = off.");
  b.Int("max_new_tokens", &s.max_new_tokens, AtLeast(1), "Completion length limit in tokens.");
  b.StringList("stop", &s.stop, "Extra stop strings (EOS always stops).");
}

void Bind(Binder& b, LearnerSection& s) {
  b.String("host", &s.host, NonEmpty(), "Address the learner's gRPC server binds.");
  b.Int("port", &s.port, Port(), "Learner gRPC port; 0 picks a free one.");
  b.Int("metrics_port", &s.metrics_port, Port(), "Learner `/metrics` port; 0 picks a free one.");
  b.Int("heartbeat_interval_ms", &s.heartbeat_interval_ms, AtLeast(1),
        "How often actors renew their leases.");
  b.Int("lease_ttl_ms", &s.lease_ttl_ms, AtLeast(1),
        "A lease not renewed for this long returns to the queue.");
  b.Int("max_staleness", &s.max_staleness, AtLeast(0),
        "Most policy versions between sampling and training.");
  b.Int("keep_versions", &s.keep_versions, AtLeast(1),
        "Weight versions kept in memory for `FetchPolicy` (deltas need the previous one).");
  b.Bool("determinism", &s.determinism,
         "Reproducible weights: seeds per (prompt, epoch, sample), leases pin the version, "
         "batches in ledger order (needs `keep_versions` >= `max_staleness` + 2).");
  b.Int("max_lease_attempts", &s.max_lease_attempts, AtLeast(1),
        "Groups with fewer than 2 OK samples a prompt may produce before it is failed.");
  b.Int("threads", &s.threads, AtLeast(1), "Intra-op threads of the trainer.");
  b.Int("checkpoint_on_stop_seconds", &s.checkpoint_on_stop_seconds, AtLeast(1),
        "Time the learner has on SIGTERM or drain to write its final checkpoint.");
  b.String("device", &s.device, OneOf({"cpu", "cuda"}),
           "Where the learner trains: one GPU (bf16 weights, fp32 master weights, log-probs and "
           "loss); no data parallelism yet.");
}

void Bind(Binder& b, ActorSection& s) {
  b.Int("count", &s.count, AtLeast(0), "Actors `cohort run` starts.");
  b.Int("slots", &s.slots, AtLeast(1), "Sequences each actor decodes concurrently.");
  b.Int("metrics_port", &s.metrics_port, Port(), "Actor `/metrics` port; 0 picks a free one.");
  b.Int("threads", &s.threads, AtLeast(1),
        "Torch threads per actor; 1 keeps several roles on a small machine from "
        "oversubscribing it.");
  b.String("device", &s.device, OneOf({"cpu", "cuda"}), "Where each actor runs its model.");
  b.Double("drain_grace_seconds", &s.drain_grace_seconds, DoubleRule{0.0},
           "On SIGTERM an actor stops leasing, finishes what it can within this, hands the rest "
           "back and exits 0 (< `supervisor.stop_timeout_seconds`).");
  b.Int("max_len", &s.max_len, AtLeast(0),
        "Prompt + completion positions per sequence; 0 = the model's, at most 4096.");
  b.Double("kv_cache_fraction", &s.kv_cache_fraction, DoubleRule{0.0, false, 1.0, false},
           "With `device: cuda` and > 0: KV-cache slots sized to this fraction of the GPU's free "
           "memory (instead of `slots`); 0 = `slots`.");
}

void Bind(Binder& b, RewardTaskSpec& s) {
  b.String("verifier", &s.verifier, OneOf(Verifiers()),
           "Verifier; defaults to the task's name when that names one.");
  b.String("format", &s.format, OneOf({"r1", "r1-zero", "none"}),
           "Format reward: `r1` (`<think>…</think><answer>…</answer>`), `r1-zero`, or none.");
  b.String("language", &s.language, OneOf({"", "en", "zh"}),
           "Language-consistency reward; `\"\"` = off.");
  b.NumberMap("weights", &s.weights, {},
              "Reward = Σ weight × component (`accuracy`, `format`, `language`, `length`, …).");
  b.Int("max_length", &s.max_length, AtLeast(0), "Length shaping limit in tokens; 0 = off.");
  b.Int("cache_length", &s.cache_length, AtLeast(0),
        "Soft overlong window before `max_length`, in tokens.");
  b.String("endpoint", &s.endpoint, OptionalHostPort(),
           "`\"\"` = built-in verifier; `host:port` = any `cohort.v1.Reward` server.");
  b.Bool("decimal_comma", &s.decimal_comma,
         "`math`/`gsm8k`: `1,5` is the decimal 1.5 (default: the list 1, 5); two or more "
         "commas stay thousands separators.");
  b.Double("relative_tolerance", &s.relative_tolerance, DoubleRule{0.0, true, 0.1, false},
           "`math`/`gsm8k`: relative tolerance of inexact numeric comparisons; integer literals "
           "stay exact.");
  b.Bool("ordered_lists", &s.ordered_lists,
         "`math`/`gsm8k`: bare lists (`3, 5, 7`) must match in order (default: as multisets).");
}

void Bind(Binder& b, RewardSection& s) {
  b.String("host", &s.host, NonEmpty(), "Address the reward server binds.");
  b.Int("port", &s.port, Port(), "Reward gRPC port; 0 picks a free one.");
  b.Int("metrics_port", &s.metrics_port, Port(), "Reward `/metrics` port; 0 picks a free one.");
  b.Int("workers", &s.workers, AtLeast(0), "Verifier threads; 0 = number of cores.");
  b.Int("max_batch", &s.max_batch, AtLeast(1), "Most samples per `Score` call.");
  b.Double("sample_timeout_seconds", &s.sample_timeout_seconds, Positive(),
           "Per-sample verifier limit; over it the sample is `TIMEOUT`, never 0.");
  b.String("address", &s.address, OptionalHostPort(),
           "`\"\"` = the reward server `cohort run` starts; else an external `host:port`.");
  b.StringList("addresses", &s.addresses,
               "Reward servers an actor spreads its calls over (`host:port`, or one DNS name with "
               "several addresses); `[]` = those the learner names at Join.");
  b.Double("retry_seconds", &s.retry_seconds, Positive(),
           "An actor retries a failing reward batch on other servers, backing off, this long; "
           "then its samples are submitted as `ERROR`, never 0.");
  BindSectionMap<RewardTaskSpec>(b, "tasks", &s.tasks,
                                 [](const std::string& name, RewardTaskSpec* t) {
                                   t->verifier = IsVerifier(name) ? name : "";
                                 });
}

void Bind(Binder& b, TlsSection& s) {
  b.String("cert_file", &s.cert_file, {},
           "PEM certificate chain: a server's own; a client's for mutual TLS.");
  b.String("key_file", &s.key_file, {}, "PEM private key of `cert_file` (set both or neither).");
  b.String("ca_file", &s.ca_file, {}, "PEM CA bundle that verifies the peer.");
  b.Bool("require_client_cert", &s.require_client_cert,
         "Servers refuse clients without a certificate signed by `ca_file`.");
}

void Bind(Binder& b, SecuritySection& s) {
  BindSection(b, "tls", &s.tls);
  b.String("token_file", &s.token_file, {},
           "File holding a bearer token every call must carry; `\"\"` = none.");
  b.String("admin_token_file", &s.admin_token_file, {},
           "File holding the token `cohort.v1.Admin` calls need (pause, drain, checkpoint); "
           "`\"\"` = Admin takes the `token_file` token.");
}

void Bind(Binder& b, SupervisorSection& s) {
  b.Int("max_restarts", &s.max_restarts, AtLeast(0),
        "Restarts of one role within the window before the run stops.");
  b.Int("restart_window_seconds", &s.restart_window_seconds, AtLeast(1),
        "Window for `max_restarts`.");
  b.Int("backoff_initial_ms", &s.backoff_initial_ms, AtLeast(1),
        "First restart delay; doubles per restart.");
  b.Int("backoff_max_ms", &s.backoff_max_ms, AtLeast(1),
        "Restart delay cap (>= `backoff_initial_ms`).");
  b.Int("stop_timeout_seconds", &s.stop_timeout_seconds, AtLeast(1),
        "SIGTERM, then SIGKILL after this.");
  b.Int("ready_timeout_seconds", &s.ready_timeout_seconds, AtLeast(1),
        "Time a role has to report SERVING.");
}

void Bind(Binder& b, GrpoSection& s) {
  b.String("loss_type", &s.loss_type, OneOf({"grpo", "dapo", "bnpo", "dr_grpo"}),
           "TRL `loss_type`: `grpo` token-mean per sequence then mean; `dapo` token-mean over the "
           "batch; `bnpo` token-mean per micro-batch; `dr_grpo` token-sum / (sequences × "
           "`sampling.max_new_tokens`).");
  b.String("scale_rewards", &s.scale_rewards, OneOf({"group", "batch", "none"}),
           "TRL `scale_rewards`: divide advantages by the group's or the batch's reward std "
           "(+1e-4); `none` = mean-only (Dr. GRPO).");
  b.String("advantage", &s.advantage, OneOf({"grpo", "rloo"}),
           "`grpo`: r − group mean; `rloo`: r − mean of the other OK samples of the group.");
  b.Double("epsilon", &s.epsilon, Positive(), "TRL `epsilon`: lower clip, ρ ≥ 1 − epsilon.");
  b.Double("epsilon_high", &s.epsilon_high, DoubleRule{0.0},
           "TRL `epsilon_high` (clip-higher): ρ ≤ 1 + epsilon_high; 0 = `epsilon`.");
  b.Double("beta", &s.beta, DoubleRule{0.0},
           "TRL `beta`: weight of the k3 KL to the frozen reference; 0 loads no reference.");
  b.Int("num_iterations", &s.num_iterations, AtLeast(1),
        "TRL `num_iterations` (μ): optimizer updates per training batch.");
  b.String("importance_sampling_level", &s.importance_sampling_level,
           OneOf({"token", "sequence"}),
           "TRL `importance_sampling_level`: per-token ratio, or `sequence` (GSPO: the "
           "length-normalised sequence ratio).");
  b.Bool("mask_truncated_completions", &s.mask_truncated_completions,
         "TRL `mask_truncated_completions`: completions cut at the length limit get no loss.");
  b.Bool("dynamic_sampling", &s.dynamic_sampling,
         "Drop groups whose OK rewards are all equal and lease more prompts (DAPO).");
  b.Double("tis_cap", &s.tis_cap, DoubleRule{0.0},
           "Truncated importance sampling: weight each token by min(π_old / π_behaviour, cap); "
           "0 = off.");
  b.Int("prompts_per_step", &s.prompts_per_step, AtLeast(1),
        "Groups (prompts) in one training batch.");
}

void Bind(Binder& b, OptimSection& s) {
  b.Double("lr", &s.lr, Positive(), "TRL `learning_rate`: AdamW peak learning rate.");
  b.Double("beta1", &s.beta1, DoubleRule{0.0, false, 1.0, true}, "TRL `adam_beta1`.");
  b.Double("beta2", &s.beta2, DoubleRule{0.0, false, 1.0, true}, "TRL `adam_beta2`.");
  b.Double("weight_decay", &s.weight_decay, DoubleRule{0.0},
           "TRL `weight_decay`: AdamW decoupled weight decay.");
  b.Double("eps", &s.eps, Positive(), "TRL `adam_epsilon`.");
  b.Double("max_grad_norm", &s.max_grad_norm, DoubleRule{0.0},
           "TRL `max_grad_norm`: clip the global gradient L2 norm; 0 = off.");
  b.Int("warmup_steps", &s.warmup_steps, AtLeast(0),
        "TRL `warmup_steps`: linear warm-up from 0 over this many optimizer steps.");
  b.String("schedule", &s.schedule, OneOf({"constant", "cosine"}),
           "TRL `lr_scheduler_type` after warm-up: constant, or cosine to 0 at `total_steps`.");
  b.Int("total_steps", &s.total_steps, AtLeast(0),
        "Optimizer steps the cosine schedule spans; 0 = the stage's planned step count.");
  b.Int("micro_batch_tokens", &s.micro_batch_tokens, AtLeast(1),
        "Token budget of one forward/backward; sequences are packed up to it and gradients "
        "accumulated.");
  b.Bool("padding_free", &s.padding_free,
         "Pack several sequences into each row of a micro-batch (positions restart, attention "
         "stays inside each sequence), so rows carry no padding; false = one padded row per "
         "sequence.");
  b.Bool("activation_checkpointing", &s.activation_checkpointing,
         "TRL `gradient_checkpointing`: keep only each layer's input in the forward and "
         "recompute the layer in backward (less memory, about one more trunk forward).");
}

void Bind(Binder& b, DataSection& s) {
  b.String("train", &s.train, {}, "Training prompts, JSONL; `\"\"` = none.");
  b.String("eval", &s.eval, {}, "Evaluation prompts, JSONL; `\"\"` = none.");
  b.String("prompt_key", &s.prompt_key, NonEmpty(), "Field holding the prompt text.");
  b.String("answer_key", &s.answer_key, {}, "Field holding the reference answer.");
  b.String("completion_key", &s.completion_key, NonEmpty(),
           "Field holding the target completion of SFT sets.");
  b.String("id_key", &s.id_key, {},
           "Field holding a stable prompt id (string or integer); `\"\"` = the line number.");
  b.String("task", &s.task, NonEmpty(), "Reward task (`reward.tasks`) of every prompt.");
  b.Int("epochs", &s.epochs, AtLeast(1), "Passes over the training set.");
  b.Bool("shuffle", &s.shuffle, "Shuffle the prompts each epoch (seeded).");
  b.Int64("shuffle_seed", &s.shuffle_seed, AtLeast(0),
          "Seed of the per-epoch shuffle (epoch e uses seed + e).");
  b.Int("max_prompt_tokens", &s.max_prompt_tokens, AtLeast(1),
        "TRL `max_prompt_length`: longer prompts are dropped at load (and counted).");
}

void Bind(Binder& b, CheckpointSection& s) {
  b.Int("every_steps", &s.every_steps, AtLeast(0),
        "TRL `save_steps`: checkpoint every this many training steps; 0 = only on stop.");
  b.Int("keep_last", &s.keep_last, AtLeast(1),
        "TRL `save_total_limit`: complete checkpoints kept.");
  b.String("dir", &s.dir, {}, "Checkpoint directory; `\"\"` = `<run.out_dir>/checkpoints`.");
}

void Bind(Binder& b, TaskSection& s) {
  b.String("name", &s.name, OneOf({"", "addition"}),
           "Built-in synthetic task whose splits become the datasets `train`, `eval`, `fresh` "
           "and `sft` (written to `<out>/data/`); `\"\"` = none.");
  b.Int("digits", &s.digits, IntRule{1, 9}, "addition: digits per operand.");
  b.Int64("train_size", &s.train_size, AtLeast(0), "addition: training prompts.");
  b.Int64("eval_size", &s.eval_size, AtLeast(0), "addition: held-out problems.");
  b.Int64("fresh_size", &s.fresh_size, AtLeast(0),
          "addition: fresh problems outside train and held-out (generalisation check).");
  b.Int64("sft_size", &s.sft_size, AtLeast(0),
          "addition: cold-start demonstrations (a prefix of `train`).");
  b.Int64("seed", &s.seed, AtLeast(0), "Seed of the splits (independent of `run.seed`).");
}

void Bind(Binder& b, DatasetSpec& s) {
  b.String("path", &s.path, NonEmpty(), "JSONL file, one object per line.");
  b.String("task", &s.task, {}, "Reward task (`reward.tasks`) of its prompts.");
  b.String("prompt_key", &s.prompt_key, NonEmpty(), "Field holding the prompt.");
  b.String("answer_key", &s.answer_key, {}, "Field holding the reference answer.");
  b.String("completion_key", &s.completion_key, {},
           "Field holding the target completion (SFT sets).");
  b.String("id_key", &s.id_key, {}, "Field holding a stable id; `\"\"` = the line number.");
}

void Bind(Binder& b, ModelSpec& s) {
  b.String("path", &s.path, NonEmpty(), "Hugging Face model directory.");
  b.String("tokenizer", &s.tokenizer, {}, "`tokenizer.json`; `\"\"` = `<path>/tokenizer.json`.");
}

void Bind(Binder& b, PipelineStage& s) {
  b.String("name", &s.name, NonEmpty(), "Stage name (unique); names its outputs by default.");
  b.String("kind", &s.kind, OneOf({"sft", "grpo", "generate", "eval"}),
           "`sft` (NLL on completions), `grpo` (through the actors), `generate` (rejection "
           "sampling into a dataset), `eval` (held-out metrics only).");
  b.String("model", &s.model, {},
           "Input model: `base`, a `models` entry or an earlier stage's output; `\"\"` = the "
           "latest model so far.");
  b.String("dataset", &s.dataset, {},
           "Input dataset: a task split, a `datasets` entry or an earlier `generate` output.");
  b.String("output", &s.output, {},
           "Name of the model (sft, grpo) or dataset (generate) it makes; `\"\"` = `name`.");
  b.Int64("steps", &s.steps, AtLeast(0), "Length in optimizer steps (or give `epochs`).");
  b.Double("epochs", &s.epochs, DoubleRule{0.0}, "Length in passes over the dataset.");
  b.Int("samples", &s.samples, AtLeast(0),
        "generate: completions per prompt; 0 = `sampling.group_size`.");
  b.Double("threshold", &s.threshold, {}, "generate: keep completions with reward >= this.");
  b.Int("keep_per_prompt", &s.keep_per_prompt, AtLeast(1),
        "generate: most completions kept per prompt.");
  b.Double("until_accuracy", &s.until_accuracy, DoubleRule{0.0, false, 1.0, false},
           "sft: end the stage once greedy accuracy on `until_dataset` reaches this (checked "
           "every `until_every` steps; the length is then a maximum); 0 = always the full "
           "length.");
  b.String("until_dataset", &s.until_dataset, {},
           "sft: prompt set `until_accuracy` is measured on (a task split or `datasets` entry, "
           "never `eval.dataset`); its prompts that are demonstrations of the stage are "
           "skipped.");
  b.Int64("until_problems", &s.until_problems, AtLeast(1),
          "sft: prompts of `until_dataset` measured (its first ones that are not "
          "demonstrations).");
  b.Int("until_every", &s.until_every, AtLeast(1), "sft: steps between `until_accuracy` checks.");
  b.StringMap("set", &s.set,
              "Overrides for this stage, `section.key: value` of `grpo`, `optim`, `data`, "
              "`sampling`, `eval`.");
}

void Bind(Binder& b, EvalSection& s) {
  b.String("dataset", &s.dataset, {}, "Held-out dataset; `\"\"` = no held-out eval.");
  b.Int("eval_every", &s.eval_every, AtLeast(0),
        "Held-out eval every this many training steps; 0 = before and after each stage only.");
  b.Int64("problems", &s.problems, AtLeast(0), "First N problems of the dataset; 0 = all.");
  b.Bool("sampled", &s.sampled, "Also sampled accuracy (one sample at `sampling.temperature`).");
  b.Int("show_completions", &s.show_completions, AtLeast(0),
        "Sampled completions kept per eval for `report.html`.");
}


void Bind(Binder& b, WeightsSection& s) {
  b.String("transport", &s.transport, OneOf({"grpc", "nccl"}),
           "How actors get new weights: `grpc` (FetchPolicy) or `nccl` (broadcast from the learner "
           "to GPU actors; late joiners and failures fall back to FetchPolicy).");
  b.Int("nccl_timeout_seconds", &s.nccl_timeout_seconds, AtLeast(1),
        "A broadcast collective not done within this is aborted (an error, not a hang).");
}

void Bind(Binder& b, RunConfig& c) {
  BindSection(b, "run", &c.run);
  BindSection(b, "model", &c.model);
  BindSection(b, "sampling", &c.sampling);
  BindSection(b, "learner", &c.learner);
  BindSection(b, "actor", &c.actor);
  BindSection(b, "reward", &c.reward);
  BindSection(b, "security", &c.security);
  BindSection(b, "supervisor", &c.supervisor);
  BindSection(b, "grpo", &c.grpo);
  BindSection(b, "optim", &c.optim);
  BindSection(b, "data", &c.data);
  BindSection(b, "checkpoint", &c.checkpoint);
  BindSection(b, "weights", &c.weights);
  BindSection(b, "task", &c.task);
  BindSectionMap<DatasetSpec>(b, "datasets", &c.datasets);
  BindSectionMap<ModelSpec>(b, "models", &c.models);
  BindSectionList<PipelineStage>(b, "pipeline", &c.pipeline);
  BindSection(b, "eval", &c.eval);
}

absl::Status CrossFieldChecks(const RunConfig& c) {
  if (c.weights.transport == "nccl" && (c.learner.device != "cuda" || c.actor.device != "cuda")) {
    return absl::InvalidArgumentError(absl::StrCat(
        "weights.transport: nccl needs learner.device and actor.device cuda (got ",
        c.learner.device, " and ", c.actor.device, ")"));
  }
  const TlsSection& tls = c.security.tls;
  if (tls.cert_file.empty() != tls.key_file.empty()) {
    return absl::InvalidArgumentError(
        "security.tls: cert_file and key_file must be set together (got only " +
        std::string(tls.cert_file.empty() ? "key_file" : "cert_file") + ")");
  }
  if (tls.require_client_cert && tls.ca_file.empty()) {
    return absl::InvalidArgumentError(
        "security.tls.require_client_cert: true needs security.tls.ca_file (the CA that signs "
        "client certificates)");
  }
  if (tls.require_client_cert && tls.cert_file.empty()) {
    return absl::InvalidArgumentError(
        "security.tls.require_client_cert: true needs security.tls.cert_file and key_file");
  }
  if (c.learner.determinism && c.learner.keep_versions < c.learner.max_staleness + 2) {
    return absl::InvalidArgumentError(absl::StrCat(
        "learner.keep_versions: expected >= learner.max_staleness + 2 (", c.learner.max_staleness + 2,
        ") with learner.determinism (pinned versions must stay fetchable), got ",
        c.learner.keep_versions));
  }
  if (c.supervisor.backoff_max_ms < c.supervisor.backoff_initial_ms) {
    return absl::InvalidArgumentError(absl::StrCat(
        "supervisor.backoff_max_ms: expected an integer >= supervisor.backoff_initial_ms (",
        c.supervisor.backoff_initial_ms, "), got ", c.supervisor.backoff_max_ms));
  }
  RETURN_IF_ERROR(PipelineChecks(c));
  if (c.actor.drain_grace_seconds >= c.supervisor.stop_timeout_seconds) {
    return absl::InvalidArgumentError(absl::StrCat(
        "actor.drain_grace_seconds: expected a number < supervisor.stop_timeout_seconds (",
        c.supervisor.stop_timeout_seconds, "), got ", c.actor.drain_grace_seconds,
        " (a draining actor would be killed)"));
  }
  for (const auto& [name, task] : c.reward.tasks) {
    if (task.weights.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "reward.tasks.", name, ".weights: expected at least one weight, e.g. {accuracy: 1.0}"));
    }
  }
  return absl::OkStatus();
}

const std::vector<std::string>& Verifiers() {
  static const auto* v = new std::vector<std::string>(kVerifierNames.begin(), kVerifierNames.end());
  return *v;
}

bool IsVerifier(const std::string& name) { return IsVerifierName(name); }

}  // namespace config_internal

std::map<std::string, RewardTaskSpec> RewardSection::DefaultTasks() {
  std::map<std::string, RewardTaskSpec> tasks;
  for (const auto& verifier : config_internal::Verifiers()) tasks[verifier].verifier = verifier;
  return tasks;
}

}  // namespace cohort
