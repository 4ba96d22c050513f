// The weights-only PolicyTrainer. See weight_server.h.
#include "learner/weight_server.h"

#include <algorithm>
#include <utility>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "core/file.h"
#include "core/status.h"
#include "learner/served_weights.h"
#include "model/aten.h"
#include "model/checkpoint.h"
#include "model/torch_error.h"
#include "model/transformer.h"

namespace cohort::learner {

absl::StatusOr<std::unique_ptr<WeightServer>> WeightServer::Create(const model::ModelConfig& config,
                                                                   model::TensorMap weights,
                                                                   const std::string& serve_dtype) {
  if (serve_dtype != "float32" && serve_dtype != "bfloat16") {
    return absl::InvalidArgumentError(absl::StrCat(
        "weight server: serve dtype must be float32 or bfloat16, got \"", serve_dtype, "\""));
  }
  RETURN_IF_ERROR(model::Transformer::CheckWeights(config, weights));
  std::unique_ptr<WeightServer> s(new WeightServer());
  s->config_ = config;
  s->info_.vocab_size = config.vocab_size;
  s->info_.model_fingerprint = config.Fingerprint();
  s->info_.config_json = config.ToJson();
  s->info_.dtype = serve_dtype;
  std::vector<std::string> names;
  names.reserve(weights.size());
  for (const auto& [name, w] : weights) names.push_back(name);
  std::sort(names.begin(), names.end());
  const bool bf16 = serve_dtype == "bfloat16";
  try {
    at::NoGradGuard no_grad;
    for (const std::string& name : names) {
      auto it = weights.find(name);
      // As Trainer::ExportWeights: fp32 first (the trainer's master copy),
      // then the served dtype, so the bytes are the same.
      at::Tensor w = it->second.to(at::kCPU, at::kFloat).contiguous();
      s->snapshot_.tensors.push_back(ServedWeightTensor(name, w, bf16));
      weights.erase(it);  // the source goes as soon as it is converted
    }
  } catch (const std::exception& e) {
    return model::TorchError("weight server: convert weights", e);
  }
  return s;
}

absl::StatusOr<StepResult> WeightServer::TrainStep(const std::vector<TrainGroup>&) {
  return absl::FailedPreconditionError(
      "weight server: serves fixed weights (a generate stage) and cannot train");
}

int64_t WeightServer::held_bytes() const {
  int64_t n = 0;
  for (const WeightTensor& t : snapshot_.tensors) n += t.size;
  return n;
}

absl::Status WeightServer::SaveCheckpoint(const std::string& dir) {
  model::TensorMap weights;
  try {
    for (const WeightTensor& t : snapshot_.tensors) {
      const at::ScalarType type = t.dtype == WeightDType::kBF16 ? at::kBFloat16 : at::kFloat;
      // A view of the snapshot's bytes (SaveModelDir only reads them).
      weights[t.name] = at::from_blob(const_cast<uint8_t*>(t.data.get()), t.shape,
                                      at::TensorOptions().dtype(type));
    }
  } catch (const std::exception& e) {
    return model::TorchError("weight server: save checkpoint", e);
  }
  model::SaveOptions o;
  o.dtype = info_.dtype == "bfloat16" ? at::kBFloat16 : at::kFloat;
  RETURN_IF_ERROR(model::SaveModelDir(dir + "/model", config_, weights, o));
  nlohmann::json state = {{"optimizer_steps", 0},
                          {"adam_step", 0},
                          {"batches", 0},
                          {"weights_only", true},
                          {"model_fingerprint", info_.model_fingerprint}};
  return WriteFileAtomically(dir + "/trainer_state.json", state.dump(2) + "\n");
}

absl::Status WeightServer::LoadCheckpoint(const std::string& dir) {
  ASSIGN_OR_RETURN(std::string text, ReadFile(dir + "/trainer_state.json"));
  nlohmann::json state = nlohmann::json::parse(text, nullptr, false);
  if (!state.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(dir, "/trainer_state.json: not JSON"));
  }
  const std::string fp = state.value("model_fingerprint", info_.model_fingerprint);
  if (fp != info_.model_fingerprint) {
    return absl::FailedPreconditionError(absl::StrCat(dir, ": checkpoint of another model ",
                                                      "(fingerprint ", fp, ", this model ",
                                                      info_.model_fingerprint, ")"));
  }
  return absl::OkStatus();
}

}  // namespace cohort::learner
