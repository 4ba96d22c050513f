// Types shared by the reward verifiers, the scorer and the service.
// Torch-free and gRPC-free: the verifiers are a library usable on their own.
#ifndef COHORT_REWARD_SERVER_SAMPLE_H_
#define COHORT_REWARD_SERVER_SAMPLE_H_

#include <map>
#include <string>

#include <nlohmann/json.hpp>

namespace cohort::reward {

// Mirrors cohort.v1.RewardStatus.
enum class Status { kOk, kInvalid, kTimeout, kError };

// One completion to score.
struct Sample {
  std::string id;
  std::string task;  // "math", "gsm8k", "countdown", "code", ...
  std::string prompt;
  std::string completion;
  std::string answer;                               // reference answer
  nlohmann::json extra = nlohmann::json::object();  // task-specific fields
  int completion_tokens = 0;                        // 0 if unknown
};

// Outcome of one verifier or reward component on one sample. `value` is
// meaningful only when status == kOk; a non-OK outcome carries a reason.
struct ComponentResult {
  Status status = Status::kOk;
  double value = 0.0;
  std::string reason;

  static ComponentResult Ok(double v, std::string why = "") {
    return {Status::kOk, v, std::move(why)};
  }
  static ComponentResult Invalid(std::string why) {
    return {Status::kInvalid, 0.0, std::move(why)};
  }
  static ComponentResult Error(std::string why) { return {Status::kError, 0.0, std::move(why)}; }
};

// Final result of a sample: the weighted reward and its named components.
struct Result {
  std::string id;
  double reward = 0.0;
  std::map<std::string, double> components;
  Status status = Status::kOk;
  std::string reason;
  double verify_seconds = 0.0;
};

inline const char* StatusName(Status s) {
  switch (s) {
    case Status::kOk:
      return "OK";
    case Status::kInvalid:
      return "INVALID";
    case Status::kTimeout:
      return "TIMEOUT";
    case Status::kError:
      return "ERROR";
  }
  return "ERROR";
}

}  // namespace cohort::reward

#endif  // COHORT_REWARD_SERVER_SAMPLE_H_
