// The format reward: does the completion have the shape the task asks for?
//
// Thread-safe (pure functions).
#ifndef COHORT_REWARD_SERVER_VERIFIERS_FORMAT_H_
#define COHORT_REWARD_SERVER_VERIFIERS_FORMAT_H_

#include <optional>
#include <string_view>

#include "reward_server/sample.h"

namespace cohort::reward {

enum class FormatKind {
  kR1Zero,  // "r1-zero": <think> ... </think> <answer> ... </answer>
  kR1,      // "r1": reasoning inside <think> ... </think>, then the answer
  kNone,    // "none": no format asked for; always 0
};

// "r1-zero", "r1" or "none"; nullopt otherwise.
std::optional<FormatKind> ParseFormatKind(std::string_view name);
const char* FormatKindName(FormatKind kind);

// 1 when sample.completion has the shape of `kind`, else 0 (with the reason).
// The opening <think> may end the prompt instead (chat templates that open
// the thinking block themselves).
ComponentResult FormatReward(const Sample& sample, FormatKind kind);

}  // namespace cohort::reward

#endif  // COHORT_REWARD_SERVER_VERIFIERS_FORMAT_H_
