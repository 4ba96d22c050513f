// The Generator over model::Engine (LibTorch): what cohort-actor generates
// with. The engine is built at the first SwapWeights (the weights come by
// FetchPolicy, so nothing is initialised twice); until then Submit fails
// with FAILED_PRECONDITION. A thread of its own drives Engine::Step() and
// completes requests as their futures become ready, so weights swapped in
// take effect between two decode steps.
//
// Thread-safety: as Generator. This is the only actor target that links
// LibTorch.
#ifndef COHORT_ACTOR_ENGINE_GENERATOR_H_
#define COHORT_ACTOR_ENGINE_GENERATOR_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "actor/generator.h"
#include "cohort/v1/learner.pb.h"

namespace cohort::actor {

struct EngineGeneratorOptions {
  int64_t slots = 8;           // concurrent sequences
  int64_t max_len = 0;         // positions per sequence; 0 = min(max_position_embeddings, 4096)
  std::string device = "cpu";  // cpu | cuda
  // cuda only: > 0 sizes the slots to this fraction of free device memory
  // instead of `slots` (model::EngineOptions::kv_cache_fraction).
  double kv_cache_fraction = 0;
  // Compute dtype: "" = ModelFiles.dtype (float32 when unset); float32 | bfloat16.
  std::string dtype;
};

// Validates the model files (config.json, tokenizer.json) and returns a
// generator without weights. Errors name the file and the problem.
absl::StatusOr<std::unique_ptr<Generator>> MakeEngineGenerator(const cohort::v1::ModelFiles& files,
                                                               EngineGeneratorOptions options);

}  // namespace cohort::actor

#endif  // COHORT_ACTOR_ENGINE_GENERATOR_H_
