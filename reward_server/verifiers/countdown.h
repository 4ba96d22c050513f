// The Countdown task (TinyZero): combine the given numbers with + - * / and
// parentheses to reach the target.
//
// Thread-safe (pure functions).
#ifndef COHORT_REWARD_SERVER_VERIFIERS_COUNTDOWN_H_
#define COHORT_REWARD_SERVER_VERIFIERS_COUNTDOWN_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "reward_server/sample.h"

namespace cohort::reward {

inline constexpr std::size_t kMaxCountdownNumbers = 16;
inline constexpr std::size_t kMaxCountdownExprBytes = 512;

// Evaluates a countdown expression exactly (rational arithmetic): integers,
// binary + - * /, parentheses; \times, \cdot, \div, × and ÷ are accepted for
// * and /. No unary minus. Fills *used with the integers in order of
// appearance. Returns nullopt (with *why) on a syntax error, division by
// zero or overflow; the value is numerator/denominator.
struct Rational {
  std::int64_t num = 0;
  std::int64_t den = 1;
};
std::optional<Rational> EvaluateCountdown(std::string_view expression,
                                          std::vector<std::int64_t>* used, std::string* why);

// 1 when the answer extracted from sample.completion (the part before any
// "=") uses each of sample.extra["numbers"] exactly once and equals
// sample.extra["target"]; else 0 with the reason. Missing or malformed
// numbers/target: INVALID.
ComponentResult CountdownAccuracy(const Sample& sample);

}  // namespace cohort::reward

#endif  // COHORT_REWARD_SERVER_VERIFIERS_COUNTDOWN_H_
