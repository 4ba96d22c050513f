// Length shaping: DAPO's soft overlong penalty.
//
// Thread-safe (pure function).
#ifndef COHORT_REWARD_SERVER_VERIFIERS_LENGTH_H_
#define COHORT_REWARD_SERVER_VERIFIERS_LENGTH_H_

#include "reward_server/sample.h"

namespace cohort::reward {

// With L = completion_tokens, M = max_length, C = cache_length:
//   0                     when L <= M - C
//   ((M - C) - L) / C     when M - C < L <= M   (linear from 0 down to -1)
//   -1                    when L > M
// INVALID when M <= 0, C < 0, C > M or L < 0.
ComponentResult OverlongPenalty(int completion_tokens, int max_length, int cache_length);

}  // namespace cohort::reward

#endif  // COHORT_REWARD_SERVER_VERIFIERS_LENGTH_H_
