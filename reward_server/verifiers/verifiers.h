// The rule-based verifiers, in one include. Each component function returns
// a ComponentResult (see reward_server/sample.h): OK with a value, or INVALID
// when the sample itself cannot be scored. All are pure and thread-safe.
#ifndef COHORT_REWARD_SERVER_VERIFIERS_VERIFIERS_H_
#define COHORT_REWARD_SERVER_VERIFIERS_VERIFIERS_H_

#include "reward_server/verifiers/countdown.h"
#include "reward_server/verifiers/extract.h"
#include "reward_server/verifiers/format.h"
#include "reward_server/verifiers/language.h"
#include "reward_server/verifiers/length.h"
#include "reward_server/verifiers/math_accuracy.h"
#include "reward_server/verifiers/math_equiv.h"

#endif  // COHORT_REWARD_SERVER_VERIFIERS_VERIFIERS_H_
