// The run config: one YAML file describes a whole run, and every role
// (learner, actors, reward servers, `cohort run`) reads the same file and
// uses its own sections.
//
//   ASSIGN_OR_RETURN(RunConfig config,
//                    LoadConfig("run.yaml", {"sampling.temperature=0.7"}));
//
// Every field has a default, so an empty file is a valid config. Errors are
// INVALID_ARGUMENT and name the source, the key path, what was expected and
// the value, e.g.
//   run.yaml:7: sampling.temperature: expected a number > 0, got "-1"
//   --set sampling.top_p=2: sampling.top_p: expected a number in (0, 1], got "2"
//
// Adding a field: add it to its struct below (with its default) and add one
// binding line (constraint + help text) to that struct's Bind() in
// config_schema.cc; parsing, overrides, validation, printing, `cohort config
// keys` and docs/config.md's table all follow from that (see
// config_binder.h).
//
// Thread-safety: plain value types; the functions are reentrant.
#ifndef COHORT_CORE_CONFIG_H_
#define COHORT_CORE_CONFIG_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace cohort {

struct RunSection {
  std::string name = "cohort";     // run name, used in logs and reports
  int64_t seed = 1;                // global seed; >= 0
  std::string out_dir = "out";     // checkpoints, logs, reports
  std::string log_level = "info";  // debug | info | warning | error
};

struct ModelSection {
  std::string path;                      // Hugging Face model dir; "" = preset
  std::string preset = "tiny";           // built-in random-init architecture
  std::string tokenizer;                 // tokenizer.json; "" = <path>/tokenizer.json
  std::string dtype = "float32";         // float32 | bfloat16
  std::string chat_template = "chatml";  // chatml | llama3 | r1-zero | plain
  int64_t init_seed = -1;                // a random preset model's; -1 = run.seed
};

struct SamplingSection {
  int group_size = 8;             // G completions per prompt; >= 1
  double temperature = 1.0;       // > 0
  double top_p = 1.0;             // in (0, 1]
  int top_k = 0;                  // 0 = off; >= 0
  int max_new_tokens = 256;       // > 0
  std::vector<std::string> stop;  // extra stop strings
};

struct LearnerSection {
  std::string host = "127.0.0.1";
  int port = 0;                      // gRPC; 0 picks a free one
  int metrics_port = 0;              // /metrics; 0 picks a free one
  int heartbeat_interval_ms = 2000;  // actor -> learner; > 0
  int lease_ttl_ms = 30000;          // lease lifetime without heartbeat; > 0
  int max_staleness = 1;             // policy versions; >= 0
  int keep_versions = 3;             // weight versions kept for FetchPolicy; >= 1
  bool determinism = false;          // reproducible weights (see docs/learner.md)
  int max_lease_attempts = 3;        // groups with < 2 OK samples before failing; >= 1
  int threads = 1;                   // intra-op threads of the trainer; >= 1
  int checkpoint_on_stop_seconds = 120;  // SIGTERM/drain -> checkpoint deadline; > 0
  std::string device = "cpu";            // cpu | cuda (one GPU; docs/gpu.md)
};

struct ActorSection {
  int count = 2;         // actors `cohort run` starts; >= 0
  int slots = 8;         // concurrent sequences per actor; >= 1
  int metrics_port = 0;  // 0 picks a free one
  int threads = 1;       // torch intra-op threads per actor; >= 1
  std::string device = "cpu";        // cpu | cuda
  double drain_grace_seconds = 5.0;  // SIGTERM: time to finish work in flight; >= 0
  int max_len = 0;                   // positions per sequence; 0 = model's, at most 4096
  double kv_cache_fraction = 0.0;    // cuda: KV-cache slots from this share of free memory
};

// How one task's completions are scored.
struct RewardTaskSpec {
  std::string verifier;         // math | gsm8k | countdown | code
                                // (defaults to the task's name when that
                                // names a verifier)
  std::string format = "none";  // r1 | r1-zero | none
  std::string language;         // "" off | en | zh
  std::map<std::string, double> weights = {{"accuracy", 1.0}};
  int max_length = 0;    // length shaping, tokens; 0 = off
  int cache_length = 0;  // soft overlong window, tokens; >= 0
  std::string endpoint;  // "" built-in; else host:port of any
                         // cohort.v1.Reward server
  // math / gsm8k answer comparison (docs/rewards.md, MathOptions)
  bool decimal_comma = false;        // "1,5" reads 1.5, not the list 1, 5
  double relative_tolerance = 1e-6;  // inexact numeric comparisons; (0, 0.1]
  bool ordered_lists = false;        // bare lists must match in order
};

struct RewardSection {
  std::string host = "127.0.0.1";
  int port = 0;
  int metrics_port = 0;
  int workers = 0;                       // 0 = number of cores
  int max_batch = 1024;                  // samples per Score call; >= 1
  double sample_timeout_seconds = 10.0;  // per sample; > 0
  std::string address;                   // "" = the server `cohort run` starts; else host:port
  std::vector<std::string> addresses;    // actors: reward servers to spread over; [] = Join's
  double retry_seconds = 60.0;           // actors: retry a failing batch this long; > 0
  // Task name -> spec. When the `tasks` key is absent: math, gsm8k,
  // countdown and code, each scored by the verifier of the same name.
  // A `tasks` map in the file replaces these defaults; --set merges.
  std::map<std::string, RewardTaskSpec> tasks = DefaultTasks();

  static std::map<std::string, RewardTaskSpec> DefaultTasks();
};

struct TlsSection {
  std::string cert_file;             // PEM certificate chain (server: its own; client:
                                     // its client cert for mutual TLS)
  std::string key_file;              // PEM private key for cert_file
  std::string ca_file;               // PEM CA bundle: verifies the peer
  bool require_client_cert = false;  // servers refuse clients without a
                                     // cert signed by ca_file
};

struct SecuritySection {
  TlsSection tls;
  std::string token_file;  // "" = no bearer token; else a file whose
                           // trimmed content is the token
  std::string admin_token_file;  // "" = Admin takes token_file's token
};

struct SupervisorSection {
  int max_restarts = 5;             // per role within the window; >= 0
  int restart_window_seconds = 60;  // > 0
  int backoff_initial_ms = 200;     // > 0
  int backoff_max_ms = 5000;        // >= backoff_initial_ms
  int stop_timeout_seconds = 10;    // SIGTERM -> SIGKILL; > 0
  int ready_timeout_seconds = 60;   // until SERVING; > 0
};

// GRPO (names and meanings of TRL's GRPOConfig where it has the knob).
struct GrpoSection {
  std::string loss_type = "dapo";      // grpo | dapo | bnpo | dr_grpo
  std::string scale_rewards = "group";  // group | batch | none
  std::string advantage = "grpo";       // grpo | rloo
  double epsilon = 0.2;                 // lower clip; > 0
  double epsilon_high = 0.0;            // upper clip; 0 = epsilon
  double beta = 0.0;                    // k3 KL weight; 0 loads no reference
  int num_iterations = 1;               // mu: updates per batch; >= 1
  std::string importance_sampling_level = "token";  // token | sequence (GSPO)
  bool mask_truncated_completions = false;
  bool dynamic_sampling = false;  // drop groups whose rewards are all equal
  double tis_cap = 0.0;           // truncated importance sampling cap; 0 = off
  int prompts_per_step = 16;      // groups per training batch; >= 1
};

struct OptimSection {
  double lr = 1e-6;  // AdamW learning rate; > 0
  double beta1 = 0.9;
  double beta2 = 0.999;
  double weight_decay = 0.0;
  double eps = 1e-8;
  double max_grad_norm = 1.0;         // 0 = no clipping
  int warmup_steps = 0;               // linear warm-up; >= 0
  std::string schedule = "constant";  // constant | cosine
  int total_steps = 0;                // cosine horizon; 0 = the stage's step count
  int micro_batch_tokens = 4096;      // tokens per forward/backward; >= 1
  bool padding_free = true;           // pack several sequences per row
  bool activation_checkpointing = false;  // recompute each layer in backward
};

struct DataSection {
  std::string train;                         // JSONL; "" = none
  std::string eval;                          // JSONL; "" = none
  std::string prompt_key = "prompt";
  std::string answer_key = "answer";
  std::string completion_key = "completion";  // SFT sets
  std::string id_key;                        // "" = the line number
  std::string task = "math";                 // reward task of every prompt
  int epochs = 1;                            // >= 1
  bool shuffle = true;                       // seeded shuffle per epoch
  int64_t shuffle_seed = 0;                  // >= 0
  int max_prompt_tokens = 512;               // longer prompts dropped at load
};

struct CheckpointSection {
  int every_steps = 50;  // 0 = only on stop
  int keep_last = 3;     // >= 1
  std::string dir;       // "" = <run.out_dir>/checkpoints
};

// A built-in synthetic task whose splits become datasets (core/tasks/).
struct TaskSection {
  std::string name;  // "" = none; addition
  int digits = 2;    // digits per operand, 1..9
  int64_t train_size = 2000;
  int64_t eval_size = 500;
  int64_t fresh_size = 500;
  int64_t sft_size = 100;
  int64_t seed = 12345;
};

// A JSONL dataset by name (`datasets:`).
struct DatasetSpec {
  std::string path;  // non-empty
  std::string task;  // reward task of its prompts
  std::string prompt_key = "prompt";
  std::string answer_key = "answer";
  std::string completion_key = "completion";
  std::string id_key;  // "" = the line number
};

// A model directory by name (`models:`).
struct ModelSpec {
  std::string path;       // non-empty
  std::string tokenizer;  // "" = <path>/tokenizer.json
};

// One stage of `pipeline:`.
struct PipelineStage {
  std::string name;     // unique, non-empty
  std::string kind;     // sft | grpo | generate | eval
  std::string model;    // "" = the latest model so far
  std::string dataset;  // a task split, a `datasets` entry or a `generate` output
  std::string output;   // "" = name
  int64_t steps = 0;    // optimizer steps (or epochs)
  double epochs = 0.0;  // passes over the dataset
  int samples = 0;      // generate: completions per prompt; 0 = sampling.group_size
  double threshold = 1.0;   // generate: keep completions with reward >= this
  int keep_per_prompt = 1;  // generate: most kept per prompt; >= 1
  // sft: ends the stage early once greedy accuracy on `until_dataset` (its
  // first until_problems prompts that are not among the stage's
  // demonstrations) reaches until_accuracy, checked every until_every steps.
  double until_accuracy = 0.0;  // in [0, 1]; 0 = always the full length
  std::string until_dataset;    // a prompt set; never eval.dataset
  int64_t until_problems = 200;
  int until_every = 25;
  std::map<std::string, std::string> set;  // per-stage overrides, section.key -> value
};

// Held-out evaluation.
struct EvalSection {
  std::string dataset = "eval";  // "" = no held-out eval
  int eval_every = 0;            // training steps; 0 = before and after each stage
  int64_t problems = 500;        // first N problems; 0 = all
  bool sampled = true;           // also sampled accuracy
  int show_completions = 4;      // kept per eval for report.html
};


// How new policy weights reach the actors (docs/gpu.md).
struct WeightsSection {
  std::string transport = "grpc";   // grpc | nccl
  int nccl_timeout_seconds = 60;    // watchdog per collective; > 0
};

struct RunConfig {
  RunSection run;
  ModelSection model;
  SamplingSection sampling;
  LearnerSection learner;
  ActorSection actor;
  RewardSection reward;
  SecuritySection security;
  SupervisorSection supervisor;
  GrpoSection grpo;
  OptimSection optim;
  DataSection data;
  CheckpointSection checkpoint;
  WeightsSection weights;
  TaskSection task;
  std::map<std::string, DatasetSpec> datasets;
  std::map<std::string, ModelSpec> models;
  std::vector<PipelineStage> pipeline;
  EvalSection eval;
};

bool operator==(const RunConfig& a, const RunConfig& b);

// The seed of a randomly initialised model (model.preset): model.init_seed,
// or run.seed when it is -1.
inline uint64_t ModelInitSeed(const RunConfig& c) {
  return static_cast<uint64_t>(c.model.init_seed >= 0 ? c.model.init_seed : c.run.seed);
}

// Reads and parses `path`, applies `overrides` ("section.key=value", in
// order), and validates. Errors name `path` (and the line) or the override.
absl::StatusOr<RunConfig> LoadConfig(const std::string& path,
                                     const std::vector<std::string>& overrides = {});

// LoadConfig, or with an empty `path` the built-in defaults plus
// `overrides` (what an empty --config means; see AddConfigFlags).
absl::StatusOr<RunConfig> LoadConfigOrDefaults(const std::string& path,
                                               const std::vector<std::string>& overrides = {});

// Same for YAML text; `source` names it in errors.
absl::StatusOr<RunConfig> ParseConfig(const std::string& yaml_text,
                                      const std::vector<std::string>& overrides = {},
                                      const std::string& source = "<string>");

// Applies one override "a.b.c=value" to `config` (value parsed as a YAML
// scalar or flow collection, e.g. "[a, b]" or "{accuracy: 1}"). Maps are
// merged, not replaced. Does not run ValidateConfig.
absl::Status ApplyOverride(const std::string& override_text, RunConfig* config);

// The effective config as YAML, every key, in a stable order. Parsing the
// result gives an equal config.
std::string ConfigToYaml(const RunConfig& config);

// Range, enum and cross-field checks (e.g. TLS cert without key).
absl::Status ValidateConfig(const RunConfig& config);

// Reference table of every key: path, type, default and constraint. Used by
// `cohort config keys` and docs/config.md.
struct ConfigKeyInfo {
  std::string path;           // e.g. "sampling.temperature"; map entries appear
                              // as "reward.tasks.<name>.verifier"
  std::string type;           // "string", "int", "number", "bool", "list", "map"
  std::string default_value;  // as YAML
  std::string expected;       // the constraint, e.g. "a number > 0"
  std::string help;           // what the key means
};
std::vector<ConfigKeyInfo> ConfigKeys();

// The key table of docs/config.md ("| key | type | default | allowed |
// meaning |" and one row per key), generated from ConfigKeys();
// `cohort config keys --markdown` prints it and config_test checks that
// the docs hold exactly this table.
std::string ConfigKeysMarkdown();

}  // namespace cohort

#endif  // COHORT_CORE_CONFIG_H_
