// The built-in synthetic reasoning task: multi-digit addition. Torch-free.
//
// A problem is a pair of `digits`-digit operands (a, b). Its prompt is
// "a+b=" (the two operands are its only integers), its answer the bare sum
// "a+b" in decimal, and its demonstration reasons column by column, least
// significant digit first, then answers:
//
//   prompt      47+85=
//   completion  <think>7+5+0=12 4+8+1=13</think><answer>132</answer>
//
// Each step is "{digit of a}+{digit of b}+{carry in}={two-digit column sum}".
// Anyone can make fresh problems in the same form.
//
// Splits are disjoint by construction. For `digits` <= 3 the whole operand
// space (at most 810,000 pairs) is shuffled once with `seed` and cut into
// consecutive ranges: held-out [0, eval_size), train [eval, eval + train),
// fresh [.., + fresh_size); for larger spaces each pair's split is a keyed
// hash class (held-out, train or fresh), so two splits can never share a
// pair, and pairs are drawn until each split is full. MakeAdditionSplits
// refuses sizes that would leave fewer than kMinUnusedPairs pairs of the
// space outside held-out and train (the fresh split is drawn from those).
// `sft_size` demonstrations are the first pairs of the train split.
//
// The vocabulary (AdditionTokenizerJson) is character-level: the digits,
// arithmetic operators, a few punctuation characters and space, plus the
// special tokens <|endoftext|> (end of sequence and padding), <think>,
// </think>, <answer>, </answer>. It is a Hugging Face tokenizer.json (BPE
// with no merges) that core/tokenizer and transformers both load.
//
// Thread-safety: pure functions.
#ifndef COHORT_CORE_TASKS_ADDITION_H_
#define COHORT_CORE_TASKS_ADDITION_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace cohort::tasks {

inline constexpr int64_t kMinUnusedPairs = 500;

struct AdditionOptions {
  int digits = 2;             // digits per operand, 1..9
  int64_t train_size = 2000;  // GRPO / rejection-sampling prompts
  int64_t eval_size = 500;    // held-out problems
  int64_t fresh_size = 500;   // problems outside both (checks generalisation)
  int64_t sft_size = 100;     // demonstrations, a prefix of the train split
  uint64_t seed = 12345;      // fixes all splits (independent of the run seed)
};

struct AdditionProblem {
  int64_t a = 0;
  int64_t b = 0;
  std::string id;  // "add2-47-85": digits, operands
};

struct AdditionSplits {
  std::vector<AdditionProblem> train, eval, fresh;
  std::vector<AdditionProblem> sft;  // the first sft_size of train
  int64_t space = 0;                 // operand pairs of this size
};

// Checks sizes (each >= 0, sft_size <= train_size, digits in 1..9, at least
// kMinUnusedPairs outside held-out and train, fresh_size fits there) and
// builds the splits. Deterministic in the options.
absl::StatusOr<AdditionSplits> MakeAdditionSplits(const AdditionOptions& options);

// Number of operand pairs with `digits` digits each: (9 * 10^(d-1))^2.
int64_t AdditionSpace(int digits);

std::string AdditionPrompt(int64_t a, int64_t b);  // "47+85="
std::string AdditionAnswer(int64_t a, int64_t b);  // "132"
std::string AdditionCompletion(int64_t a, int64_t b, int digits);
// "<think>7+5+0=12 4+8+1=13</think>" for digits = 2.
std::string AdditionReasoning(int64_t a, int64_t b, int digits);

// Parses an addition prompt back into its operands ("47+85=" -> {47, 85});
// InvalidArgument naming the prompt otherwise.
absl::StatusOr<std::pair<int64_t, int64_t>> ParseAdditionPrompt(const std::string& prompt);

// Tokens in the completion of a `digits`-digit problem, EOS included (the
// demonstrations' length; the quickstart's max_new_tokens has headroom).
int64_t AdditionCompletionTokens(int digits);

// JSONL text, one object per line: {"id","prompt","answer","task":"addition"}
// for prompt sets, and {"id","prompt","completion","answer"} with
// `with_completion` (SFT demonstrations).
std::string AdditionJsonl(const std::vector<AdditionProblem>& problems, int digits,
                          bool with_completion);

// The tokenizer files of the task's vocabulary.
std::string AdditionTokenizerJson();
std::string AdditionTokenizerConfigJson();  // eos/pad tokens, model_max_length

// Writes train.jsonl, eval.jsonl, fresh.jsonl, sft.jsonl, tokenizer.json and
// tokenizer_config.json into `dir` (created), each atomically.
absl::Status WriteAdditionTask(const AdditionOptions& options, const std::string& dir);

}  // namespace cohort::tasks

#endif  // COHORT_CORE_TASKS_ADDITION_H_
