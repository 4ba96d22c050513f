// A PolicyTrainer that only serves fixed weights: what a generate stage
// needs (its model does not change), without the Trainer's optimizer state,
// reference model or autograd copies. The weights are converted once into
// the served snapshot (TrainerInfo::dtype) and the source tensors are
// dropped, so it holds one copy of the model in the served dtype.
//
//   ASSIGN_OR_RETURN(auto server, WeightServer::Create(config, std::move(weights), "bfloat16"));
//   loop.UseTrainer(server.get(), stage_index);   // publishes the weights
//
// ExportWeights returns the same snapshot each time (shared, immutable
// buffers; no copy), byte for byte what Trainer::ExportWeights gives for the
// same weights and dtype. TrainStep is FAILED_PRECONDITION. SaveCheckpoint
// writes model/ (HF layout, in the served dtype, so `cohort export` of the
// checkpoint works) and trainer_state.json (no optimizer state, marked
// "weights_only"); LoadCheckpoint checks the model fingerprint only (the
// weights are the stage's input model's).
//
// Thread-safety: as PolicyTrainer (one thread); the snapshot may be read by
// any number of threads.
#ifndef COHORT_LEARNER_WEIGHT_SERVER_H_
#define COHORT_LEARNER_WEIGHT_SERVER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "learner/trainer_interface.h"
#include "model/model_config.h"
#include "model/tensor_map.h"

namespace cohort::learner {

class WeightServer final : public PolicyTrainer {
 public:
  // `weights` must be the config's full set (model::Transformer::CheckWeights);
  // `serve_dtype`: "float32" or "bfloat16" (model.dtype).
  static absl::StatusOr<std::unique_ptr<WeightServer>> Create(const model::ModelConfig& config,
                                                              model::TensorMap weights,
                                                              const std::string& serve_dtype);

  TrainerInfo info() const override { return info_; }
  absl::StatusOr<StepResult> TrainStep(const std::vector<TrainGroup>& batch) override;
  absl::StatusOr<WeightSnapshot> ExportWeights() override { return snapshot_; }
  absl::Status SaveCheckpoint(const std::string& dir) override;
  absl::Status LoadCheckpoint(const std::string& dir) override;

  // Bytes of weights it holds: the snapshot's, nothing else.
  int64_t held_bytes() const;

 private:
  WeightServer() = default;
  model::ModelConfig config_;
  TrainerInfo info_;
  WeightSnapshot snapshot_;
};

}  // namespace cohort::learner

#endif  // COHORT_LEARNER_WEIGHT_SERVER_H_
