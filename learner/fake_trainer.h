// An in-process PolicyTrainer for tests of the loop and the service: its
// "weights" are one bf16-sized tensor of bytes that each TrainStep changes
// deterministically from the batch (prompt ids, epochs, rewards, tokens), so
// equal batch sequences give equal weights and any difference in what was
// trained shows in the bytes. Checkpoints are one file. Header-only,
// torch-free.
//
// Thread-safety: like PolicyTrainer (one thread), except batches() which is
// safe to read from any thread.
#ifndef COHORT_LEARNER_FAKE_TRAINER_H_
#define COHORT_LEARNER_FAKE_TRAINER_H_

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "core/file.h"
#include "learner/trainer_interface.h"

namespace cohort::learner {

class FakePolicyTrainer final : public PolicyTrainer {
 public:
  explicit FakePolicyTrainer(int64_t bytes = 4096, int64_t vocab = 100) : vocab_(vocab) {
    weights_.resize(bytes);
    for (int64_t i = 0; i < bytes; ++i) weights_[i] = static_cast<uint8_t>(i * 131 + 7);
  }

  TrainerInfo info() const override {
    TrainerInfo i;
    i.vocab_size = vocab_;
    i.model_fingerprint = "fake-fingerprint";
    i.config_json = "{\"model_type\": \"fake\"}";
    i.dtype = "bfloat16";
    return i;
  }

  absl::StatusOr<StepResult> TrainStep(const std::vector<TrainGroup>& batch) override {
    uint64_t h = 1469598103934665603ULL;
    auto mix = [&h](uint64_t v) { h = (h ^ v) * 1099511628211ULL; };
    int64_t tokens = 0;
    for (const TrainGroup& g : batch) {
      mix(static_cast<uint64_t>(g.prompt_id));
      mix(static_cast<uint64_t>(g.epoch));
      for (const TrainSample& s : g.samples) {
        mix(s.ok ? static_cast<uint64_t>(std::llround(s.reward * 1000)) : 77);
        for (int32_t t : s.tokens) mix(static_cast<uint64_t>(t));
        tokens += static_cast<int64_t>(s.tokens.size());
      }
    }
    // Change ~2% of the bytes, like a small optimizer step in bf16.
    for (size_t i = h % 50; i < weights_.size(); i += 50) {
      weights_[i] ^= static_cast<uint8_t>(1 + (h >> (i % 32)) % 255);
    }
    {
      absl::MutexLock lock(&mu_);
      std::vector<std::pair<int64_t, int32_t>> ids;
      for (const TrainGroup& g : batch) ids.emplace_back(g.prompt_id, g.epoch);
      batches_.push_back(ids);
    }
    StepResult r;
    r.optimizer_steps = 1;
    r.tokens = tokens;
    r.metrics["loss"] = static_cast<double>(h % 1000) / 1000.0;
    r.metrics["reward_mean"] = 0.5;
    return r;
  }

  absl::StatusOr<WeightSnapshot> ExportWeights() override {
    WeightTensor t;
    t.name = "model.fake.weight";
    t.dtype = WeightDType::kBF16;
    t.shape = {static_cast<int64_t>(weights_.size() / 2)};
    auto data = AllocateWeightBytes(static_cast<int64_t>(weights_.size()));
    std::memcpy(data.get(), weights_.data(), weights_.size());
    t.data = data;
    t.size = static_cast<int64_t>(weights_.size());
    WeightSnapshot s;
    s.tensors.push_back(std::move(t));
    return s;
  }

  absl::Status SaveCheckpoint(const std::string& dir) override {
    return WriteFileAtomically(dir + "/weights.bin", std::string(weights_.begin(), weights_.end()));
  }

  absl::Status LoadCheckpoint(const std::string& dir) override {
    absl::StatusOr<std::string> bytes = ReadFile(dir + "/weights.bin");
    if (!bytes.ok()) return bytes.status();
    weights_.assign(bytes->begin(), bytes->end());
    return absl::OkStatus();
  }

  const std::vector<uint8_t>& weights() const { return weights_; }
  std::vector<std::vector<std::pair<int64_t, int32_t>>> batches() const {
    absl::MutexLock lock(&mu_);
    return batches_;
  }

 private:
  const int64_t vocab_;
  std::vector<uint8_t> weights_;
  mutable absl::Mutex mu_;
  std::vector<std::vector<std::pair<int64_t, int32_t>>> batches_ ABSL_GUARDED_BY(mu_);
};

}  // namespace cohort::learner

#endif  // COHORT_LEARNER_FAKE_TRAINER_H_
