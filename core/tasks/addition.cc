// The built-in addition task. See addition.h.
#include "core/tasks/addition.h"

#include <algorithm>
#include <cstdio>
#include <numeric>
#include <unordered_set>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "core/file.h"
#include "core/status.h"
#include "nlohmann/json.hpp"

namespace cohort::tasks {
namespace {

using Json = nlohmann::json;

// SplitMix64: a small, well-mixed generator whose sequence is the same on
// every platform (std's distributions are not).
struct SplitMix64 {
  uint64_t state;
  uint64_t Next() {
    uint64_t z = (state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
  }
  // Uniform in [0, n) by rejection (no modulo bias).
  uint64_t Below(uint64_t n) {
    uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t x;
    do x = Next();
    while (x >= limit);
    return x % n;
  }
};

uint64_t Mix(uint64_t x) { return SplitMix64{x}.Next(); }

int64_t Pow10(int n) {
  int64_t p = 1;
  for (int i = 0; i < n; ++i) p *= 10;
  return p;
}

// The special tokens, in id order; ids 0..4.
const char* const kSpecials[] = {"<|endoftext|>", "<think>", "</think>", "<answer>", "</answer>"};
// Ordinary characters, ids 5.. in this order.
constexpr char kChars[] = "0123456789+-*/=()., :?\n";

}  // namespace

int64_t AdditionSpace(int digits) {
  if (digits < 1 || digits > 9) return 0;
  int64_t per = 9 * Pow10(digits - 1);
  return per * per;
}

std::string AdditionPrompt(int64_t a, int64_t b) { return absl::StrCat(a, "+", b, "="); }

std::string AdditionAnswer(int64_t a, int64_t b) { return absl::StrCat(a + b); }

std::string AdditionReasoning(int64_t a, int64_t b, int digits) {
  std::string out = "<think>";
  int64_t carry = 0;
  for (int i = 0; i < digits; ++i) {
    int64_t da = (a / Pow10(i)) % 10, db = (b / Pow10(i)) % 10;
    int64_t sum = da + db + carry;
    char step[32];
    std::snprintf(step, sizeof(step), "%s%lld+%lld+%lld=%02lld", i ? " " : "",
                  static_cast<long long>(da), static_cast<long long>(db),
                  static_cast<long long>(carry), static_cast<long long>(sum));
    out += step;
    carry = sum / 10;
  }
  out += "</think>";
  return out;
}

std::string AdditionCompletion(int64_t a, int64_t b, int digits) {
  return absl::StrCat(AdditionReasoning(a, b, digits), "<answer>", AdditionAnswer(a, b),
                      "</answer>");
}

int64_t AdditionCompletionTokens(int digits) {
  // <think>, digits steps of 8 characters and digits-1 spaces, </think>,
  // <answer>, at most digits+1 answer digits, </answer>, EOS.
  return 1 + 8 * digits + (digits - 1) + 1 + 1 + (digits + 1) + 1 + 1;
}

absl::StatusOr<std::pair<int64_t, int64_t>> ParseAdditionPrompt(const std::string& prompt) {
  auto bad = [&] {
    return absl::InvalidArgumentError(
        absl::StrCat("not an addition prompt (expected \"A+B=\"): \"", prompt, "\""));
  };
  size_t plus = prompt.find('+');
  if (plus == std::string::npos || prompt.empty() || prompt.back() != '=') return bad();
  int64_t a, b;
  std::string sa = prompt.substr(0, plus), sb = prompt.substr(plus + 1, prompt.size() - plus - 2);
  if (sa.empty() || sb.empty() || sa.find_first_not_of("0123456789") != std::string::npos ||
      sb.find_first_not_of("0123456789") != std::string::npos || !absl::SimpleAtoi(sa, &a) ||
      !absl::SimpleAtoi(sb, &b)) {
    return bad();
  }
  return std::make_pair(a, b);
}

absl::StatusOr<AdditionSplits> MakeAdditionSplits(const AdditionOptions& o) {
  if (o.digits < 1 || o.digits > 9) {
    return absl::InvalidArgumentError(
        absl::StrCat("addition: digits must be in [1, 9], got ", o.digits));
  }
  if (o.train_size < 0 || o.eval_size < 0 || o.fresh_size < 0 || o.sft_size < 0) {
    return absl::InvalidArgumentError("addition: split sizes must be >= 0");
  }
  if (o.sft_size > o.train_size) {
    return absl::InvalidArgumentError(absl::StrCat("addition: sft_size (", o.sft_size,
                                                   ") exceeds train_size (", o.train_size, ")"));
  }
  const int64_t space = AdditionSpace(o.digits);
  const int64_t unused = space - o.eval_size - o.train_size;
  if (unused < kMinUnusedPairs) {
    return absl::InvalidArgumentError(
        absl::StrCat("addition: ", o.digits, "-digit operands give ", space, " pairs; eval_size (",
                     o.eval_size, ") + train_size (", o.train_size, ") must leave at least ",
                     kMinUnusedPairs, " outside both splits"));
  }
  if (o.fresh_size > unused) {
    return absl::InvalidArgumentError(absl::StrCat("addition: fresh_size (", o.fresh_size,
                                                   ") exceeds the ", unused,
                                                   " pairs outside held-out and train"));
  }
  const int64_t lo = Pow10(o.digits - 1), per = 9 * lo;
  auto problem = [&](int64_t index) {
    AdditionProblem p;
    p.a = lo + index / per;
    p.b = lo + index % per;
    p.id = absl::StrCat("add", o.digits, "-", p.a, "-", p.b);
    return p;
  };
  AdditionSplits out;
  out.space = space;
  SplitMix64 rng{o.seed * 0x2545F4914F6CDD1DULL + static_cast<uint64_t>(o.digits)};
  if (space <= 810000) {
    std::vector<uint32_t> order(space);
    std::iota(order.begin(), order.end(), 0u);
    for (int64_t i = space - 1; i > 0; --i) {
      std::swap(order[i], order[rng.Below(static_cast<uint64_t>(i) + 1)]);
    }
    int64_t at = 0;
    for (int64_t i = 0; i < o.eval_size; ++i) out.eval.push_back(problem(order[at++]));
    for (int64_t i = 0; i < o.train_size; ++i) out.train.push_back(problem(order[at++]));
    for (int64_t i = 0; i < o.fresh_size; ++i) out.fresh.push_back(problem(order[at++]));
  } else {
    // Keyed hash classes: 0 held-out, 1 train, 2 fresh. Each class holds
    // about a third of a space of >= 8.1e7 pairs, so drawing terminates.
    if (std::max({o.eval_size, o.train_size, o.fresh_size}) > space / 6) {
      return absl::InvalidArgumentError("addition: a split larger than a sixth of the space");
    }
    const uint64_t key = Mix(o.seed ^ 0xA0761D6478BD642FULL);
    std::unordered_set<int64_t> seen;
    std::vector<AdditionProblem>* splits[3] = {&out.eval, &out.train, &out.fresh};
    const int64_t want[3] = {o.eval_size, o.train_size, o.fresh_size};
    while (static_cast<int64_t>(out.eval.size()) < want[0] ||
           static_cast<int64_t>(out.train.size()) < want[1] ||
           static_cast<int64_t>(out.fresh.size()) < want[2]) {
      int64_t index = static_cast<int64_t>(rng.Below(static_cast<uint64_t>(space)));
      int cls = static_cast<int>(Mix(key ^ static_cast<uint64_t>(index)) % 3);
      if (static_cast<int64_t>(splits[cls]->size()) >= want[cls]) continue;
      if (!seen.insert(index).second) continue;
      splits[cls]->push_back(problem(index));
    }
  }
  out.sft.assign(out.train.begin(), out.train.begin() + o.sft_size);
  return out;
}

std::string AdditionJsonl(const std::vector<AdditionProblem>& problems, int digits,
                          bool with_completion) {
  std::string out;
  for (const AdditionProblem& p : problems) {
    Json line;
    line["id"] = p.id;
    line["prompt"] = AdditionPrompt(p.a, p.b);
    if (with_completion) line["completion"] = AdditionCompletion(p.a, p.b, digits);
    line["answer"] = AdditionAnswer(p.a, p.b);
    line["task"] = "addition";
    out += line.dump();
    out += '\n';
  }
  return out;
}

std::string AdditionTokenizerJson() {
  Json added = Json::array();
  Json vocab = Json::object();
  int id = 0;
  for (const char* special : kSpecials) {
    added.push_back({{"id", id},
                     {"content", special},
                     {"single_word", false},
                     {"lstrip", false},
                     {"rstrip", false},
                     {"normalized", false},
                     {"special", true}});
    vocab[special] = id++;
  }
  for (const char* c = kChars; *c; ++c) vocab[std::string(1, *c)] = id++;
  Json tok;
  tok["version"] = "1.0";
  tok["truncation"] = nullptr;
  tok["padding"] = nullptr;
  tok["added_tokens"] = added;
  tok["normalizer"] = nullptr;
  tok["pre_tokenizer"] = nullptr;
  tok["post_processor"] = nullptr;
  tok["decoder"] = {{"type", "Fuse"}};
  tok["model"] = {{"type", "BPE"},
                  {"dropout", nullptr},
                  {"unk_token", nullptr},
                  {"continuing_subword_prefix", nullptr},
                  {"end_of_word_suffix", nullptr},
                  {"fuse_unk", false},
                  {"byte_fallback", false},
                  {"ignore_merges", false},
                  {"vocab", vocab},
                  {"merges", Json::array()}};
  return tok.dump(1);
}

std::string AdditionTokenizerConfigJson() {
  Json cfg;
  cfg["tokenizer_class"] = "PreTrainedTokenizerFast";
  cfg["eos_token"] = kSpecials[0];
  cfg["pad_token"] = kSpecials[0];
  cfg["bos_token"] = nullptr;
  cfg["model_max_length"] = 512;
  cfg["clean_up_tokenization_spaces"] = false;
  return cfg.dump(1);
}

absl::Status WriteAdditionTask(const AdditionOptions& options, const std::string& dir) {
  ASSIGN_OR_RETURN(AdditionSplits splits, MakeAdditionSplits(options));
  RETURN_IF_ERROR(MakeDirs(dir));
  const int d = options.digits;
  RETURN_IF_ERROR(WriteFileAtomically(dir + "/train.jsonl", AdditionJsonl(splits.train, d, false)));
  RETURN_IF_ERROR(WriteFileAtomically(dir + "/eval.jsonl", AdditionJsonl(splits.eval, d, false)));
  RETURN_IF_ERROR(WriteFileAtomically(dir + "/fresh.jsonl", AdditionJsonl(splits.fresh, d, false)));
  RETURN_IF_ERROR(WriteFileAtomically(dir + "/sft.jsonl", AdditionJsonl(splits.sft, d, true)));
  RETURN_IF_ERROR(WriteFileAtomically(dir + "/tokenizer.json", AdditionTokenizerJson()));
  return WriteFileAtomically(dir + "/tokenizer_config.json", AdditionTokenizerConfigJson());
}

}  // namespace cohort::tasks
