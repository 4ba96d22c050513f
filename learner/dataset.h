// Prompt sets for the learner: JSONL files, one JSON object per line.
//
//   DatasetOptions options = DatasetOptions::FromConfig(config.data);
//   options.count_prompt_tokens = [&](const PromptRecord& r) { ... };  // optional
//   ASSIGN_OR_RETURN(Dataset train, Dataset::Load(config.data.train, options));
//   for (int64_t i : train.EpochOrder(epoch, seed, /*shuffle=*/true)) use(train.record(i));
//
// A line holds the prompt under `prompt_key` (a string, or a chat list of
// {"role", "content"} objects), the reference answer under `answer_key`
// (string, number or bool; optional when the key is empty), and a stable id
// under `id_key` (string or integer, e.g. MATH-500's "unique_id"); without
// `id_key` the id is the 1-based line number. SFT sets ({"prompt",
// "completion"}) also need `completion_key`. Blank lines are skipped.
//
// Loading checks every line before returning: a malformed line (bad JSON,
// not an object, a missing or mistyped field, a duplicate id) is an
// INVALID_ARGUMENT naming the file, the line and the problem, so a bad file
// fails before any training. Prompts longer than `max_prompt_tokens` (as
// counted by `count_prompt_tokens`) are dropped at load and counted in
// dropped_too_long().
//
// EpochOrder is a seeded Fisher-Yates shuffle with its own generator
// (splitmix64), so the order is the same on every platform and standard
// library.
//
// Thread-safety: a loaded Dataset is immutable; const methods may be called
// from any thread.
#ifndef COHORT_LEARNER_DATASET_H_
#define COHORT_LEARNER_DATASET_H_

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "core/config.h"

namespace cohort::learner {

struct ChatMessage {
  std::string role;
  std::string content;
};

struct PromptRecord {
  std::string id;    // stable: the id_key value, or the line number
  int64_t line = 0;  // 1-based line of the file
  // Exactly one of prompt / messages is set: a plain prompt string, or the
  // chat messages of a prompt given as a list.
  std::string prompt;
  std::vector<ChatMessage> messages;
  std::string answer;      // "" when absent; numbers and bools as JSON text
  std::string completion;  // SFT sets only
  std::string task;        // reward task
};

struct DatasetOptions {
  std::string prompt_key = "prompt";
  std::string answer_key = "answer";  // "" = no answers
  std::string completion_key = "completion";
  std::string id_key;  // "" = line number
  std::string task = "math";
  bool require_answer = false;      // a line without answer_key is an error
  bool require_completion = false;  // SFT: a line without completion_key is an error
  int64_t max_prompt_tokens = 0;    // 0 = no limit
  // Counts a record's prompt tokens (e.g. tokenizer + chat template); null =
  // no length check. An error from it fails the load, naming the line.
  std::function<absl::StatusOr<int64_t>(const PromptRecord&)> count_prompt_tokens;

  static DatasetOptions FromConfig(const DataSection& data);
};

class Dataset {
 public:
  // Reads and parses `path` (see the file comment).
  static absl::StatusOr<Dataset> Load(const std::string& path, const DatasetOptions& options);
  // The same for text; `source` names it in errors.
  static absl::StatusOr<Dataset> Parse(std::string_view text, const std::string& source,
                                       const DatasetOptions& options);

  int64_t size() const { return static_cast<int64_t>(records_.size()); }
  bool empty() const { return records_.empty(); }
  const PromptRecord& record(int64_t index) const { return records_[index]; }
  const std::vector<PromptRecord>& records() const { return records_; }
  // Index of the record with `id`, or -1.
  int64_t IndexOf(const std::string& id) const;
  // Lines dropped because the prompt was longer than max_prompt_tokens.
  int64_t dropped_too_long() const { return dropped_too_long_; }
  const std::string& source() const { return source_; }

  // Record indices in the order of `epoch`: a permutation of [0, size())
  // that depends only on (seed, epoch); the file order when !shuffle.
  std::vector<int64_t> EpochOrder(int64_t epoch, uint64_t seed, bool shuffle) const;

 private:
  std::string source_;
  std::vector<PromptRecord> records_;
  std::unordered_map<std::string, int64_t> index_;
  int64_t dropped_too_long_ = 0;
};

}  // namespace cohort::learner

#endif  // COHORT_LEARNER_DATASET_H_
