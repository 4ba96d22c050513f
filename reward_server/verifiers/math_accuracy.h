// Accuracy components for the `math` and `gsm8k` tasks.
//
// Thread-safe (pure functions).
#ifndef COHORT_REWARD_SERVER_VERIFIERS_MATH_ACCURACY_H_
#define COHORT_REWARD_SERVER_VERIFIERS_MATH_ACCURACY_H_

#include <optional>
#include <string>
#include <string_view>

#include "reward_server/sample.h"
#include "reward_server/verifiers/math_equiv.h"

namespace cohort::reward {

// 1 when the answer extracted from sample.completion is equivalent to
// sample.answer (LaTeX allowed; when the reference is a whole solution, its
// last \boxed{} or the text after its last "####" is used), else 0. No extractable answer: OK with
// 0. A reference that cannot be parsed: INVALID. `options` are the task's
// choices where public verifiers differ (decimal comma, tolerance, order).
ComponentResult MathAccuracy(const Sample& sample, const MathOptions& options = {});

// The GSM8K reference number: the text after the last "####" in `answer`,
// or the whole answer when it has none; nullopt unless it is a number
// (commas, a leading $ and surrounding spaces allowed).
std::optional<std::string> Gsm8kReference(std::string_view answer);

// 1 when the answer extracted from sample.completion equals the GSM8K
// reference number (see Gsm8kReference), else 0. No extractable answer: OK
// with 0. No number in the reference: INVALID.
ComponentResult Gsm8kAccuracy(const Sample& sample, const MathOptions& options = {});

}  // namespace cohort::reward

#endif  // COHORT_REWARD_SERVER_VERIFIERS_MATH_ACCURACY_H_
