#include "reward_server/verifiers/length.h"

#include <string>

namespace cohort::reward {

ComponentResult OverlongPenalty(int completion_tokens, int max_length, int cache_length) {
  if (max_length <= 0 || cache_length < 0 || cache_length > max_length) {
    return ComponentResult::Invalid(
        "overlong penalty needs 0 <= cache_length <= max_length and "
        "max_length > 0 (got max_length=" +
        std::to_string(max_length) + ", cache_length=" + std::to_string(cache_length) + ")");
  }
  if (completion_tokens < 0) {
    return ComponentResult::Invalid("negative completion_tokens");
  }
  int expected = max_length - cache_length;
  if (completion_tokens <= expected) return ComponentResult::Ok(0.0);
  if (completion_tokens > max_length) {
    return ComponentResult::Ok(-1.0, "longer than max_length");
  }
  return ComponentResult::Ok(static_cast<double>(expected - completion_tokens) / cache_length,
                             "within the overlong cache");
}

}  // namespace cohort::reward
