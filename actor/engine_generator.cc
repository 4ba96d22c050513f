#include "actor/engine_generator.h"

#include <pthread.h>

#include <chrono>
#include <deque>
#include <future>
#include <thread>
#include <utility>
#include <vector>

#include "model/aten.h"

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "core/logging.h"
#include "core/tokenizer.h"
#include "model/engine.h"
#include "model/model_config.h"
#include "model/transformer.h"

namespace cohort::actor {
namespace {

namespace v1 = ::cohort::v1;

absl::StatusOr<at::ScalarType> WireType(v1::DType dtype) {
  switch (dtype) {
    case v1::DTYPE_F32:
      return at::kFloat;
    case v1::DTYPE_BF16:
      return at::kBFloat16;
    case v1::DTYPE_F16:
      return at::kHalf;
    default:
      return absl::InvalidArgumentError(absl::StrCat("unsupported weight dtype ", dtype));
  }
}

v1::FinishReason ToProto(model::FinishReason r) {
  switch (r) {
    case model::FinishReason::kEos:
      return v1::FINISH_REASON_EOS;
    case model::FinishReason::kStop:
      return v1::FINISH_REASON_STOP;
    case model::FinishReason::kLength:
      return v1::FINISH_REASON_LENGTH;
    case model::FinishReason::kContext:
      return v1::FINISH_REASON_CONTEXT;
  }
  return v1::FINISH_REASON_UNSPECIFIED;
}

// Wraps the host bytes as CPU tensors without copying them (each tensor
// keeps `w` alive; verified HostWeights are immutable, and the engine never
// writes its weights); the transformer converts them to its dtype and
// device, which copies only when those differ.
absl::StatusOr<model::TensorMap> ToTensors(const std::shared_ptr<const HostWeights>& w) {
  model::TensorMap map;
  try {
    for (const HostTensor& t : w->tensors) {
      absl::StatusOr<at::ScalarType> type = WireType(t.dtype);
      if (!type.ok())
        return absl::InvalidArgumentError(absl::StrCat(t.name, ": ", type.status().message()));
      map[t.name] = at::from_blob(
          const_cast<char*>(t.data.data()), t.shape, [w](void*) {},
          at::TensorOptions().dtype(*type));
    }
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("weights: ", e.what()));
  }
  return map;
}

class EngineGenerator final : public Generator {
 public:
  EngineGenerator(model::ModelConfig config, std::unique_ptr<Tokenizer> tokenizer,
                  EngineGeneratorOptions options, at::ScalarType dtype, at::Device device)
      : config_(std::move(config)),
        tokenizer_(std::move(tokenizer)),
        options_(std::move(options)),
        dtype_(dtype),
        device_(device) {
    thread_ = std::thread([this] {
      pthread_setname_np(pthread_self(), "actor-engine");
      Loop();
    });
  }
  ~EngineGenerator() override { Stop(); }

  void Submit(GenerateSpec spec, GenerateCallback done) override {
    model::GenerationRequest r;
    r.prompt = std::move(spec.prompt);
    r.num_samples = spec.num_samples;
    r.eos_ids = std::move(spec.eos_ids);
    const v1::SamplingParams& s = spec.sampling;
    r.params.temperature = s.temperature();
    r.params.top_k = s.top_k();
    r.params.top_p = s.top_p() > 0 ? s.top_p() : 1.0;
    r.params.max_new_tokens = s.max_new_tokens() > 0 ? s.max_new_tokens() : 256;
    r.params.stop.assign(s.stop().begin(), s.stop().end());
    r.params.seed = s.seed();
    absl::MutexLock lock(&mu_);
    if (stopped_ || engine_ == nullptr) {
      absl::Status why = stopped_ ? absl::CancelledError("generator stopped")
                                  : absl::FailedPreconditionError("no weights yet");
      mu_.Unlock();
      done(why);
      mu_.Lock();
      return;
    }
    pending_.push_back({engine_->Submit(std::move(r)), std::move(done)});
    kick_ = true;
    cv_.SignalAll();
  }

  absl::Status SwapWeights(std::shared_ptr<const HostWeights> weights) override {
    absl::StatusOr<model::TensorMap> tensors = ToTensors(weights);
    if (!tensors.ok()) return tensors.status();
    absl::MutexLock lock(&mu_);
    if (stopped_) return absl::CancelledError("generator stopped");
    if (engine_ != nullptr) {
      kick_ = true;  // the swap is installed by the next Step()
      cv_.SignalAll();
      return engine_->SwapWeights(*std::move(tensors), weights->version);
    }
    // First weights: build the model and the engine.
    absl::StatusOr<std::unique_ptr<model::Transformer>> transformer =
        model::Transformer::Create(config_, *std::move(tensors), dtype_, device_);
    if (!transformer.ok()) return transformer.status();
    model::EngineOptions eo;
    eo.num_slots = options_.slots;
    eo.max_len = max_len();
    eo.initial_version = weights->version;
    eo.kv_cache_fraction = options_.kv_cache_fraction;
    if (tokenizer_ != nullptr) {
      const Tokenizer* tok = tokenizer_.get();
      eo.decode = [tok](const std::vector<int32_t>& ids) { return tok->Decode(ids); };
    }
    absl::StatusOr<std::unique_ptr<model::Engine>> engine =
        model::Engine::Create(*std::move(transformer), std::move(eo));
    if (!engine.ok()) return engine.status();
    engine_ = *std::move(engine);
    kick_ = true;
    cv_.SignalAll();
    return absl::OkStatus();
  }

  int64_t version() const override {
    absl::MutexLock lock(&mu_);
    return engine_ != nullptr ? engine_->policy_version() : -1;
  }
  int64_t max_len() const override {
    if (options_.max_len > 0) return options_.max_len;
    int64_t n = config_.max_position_embeddings > 0 ? config_.max_position_embeddings : 4096;
    return std::min<int64_t>(n, 4096);
  }
  int64_t slots() const override {
    absl::MutexLock lock(&mu_);
    return engine_ != nullptr ? engine_->num_slots() : options_.slots;
  }
  int64_t generated_tokens() const override {
    absl::MutexLock lock(&mu_);
    return engine_ != nullptr ? engine_->stats().generated_tokens : 0;
  }

  void Stop() override {
    {
      absl::MutexLock lock(&mu_);
      if (stopped_) return;
      stopped_ = true;
      cv_.SignalAll();
    }
    if (thread_.joinable()) thread_.join();
  }

 private:
  struct Pending {
    std::future<absl::StatusOr<model::GenerationResult>> future;
    GenerateCallback done;
  };

  // Steps the engine (only this thread does) and completes requests.
  void Loop() {
    bool worked = false;
    for (;;) {
      model::Engine* engine;
      {
        absl::MutexLock lock(&mu_);
        // Idle: wait for work (a submission or a swap to install). Whatever
        // arrives while Step() runs sets kick_, so nothing waits for a
        // wake-up that was already sent.
        while (!worked && !kick_ && !stopped_) cv_.WaitWithTimeout(&mu_, absl::Seconds(1));
        kick_ = false;
        if (stopped_) break;
        engine = engine_.get();
      }
      if (engine == nullptr) {
        worked = false;
        continue;
      }
      worked = engine->Step();
      Complete();
    }
    model::Engine* engine;
    {
      absl::MutexLock lock(&mu_);
      engine = engine_.get();
    }
    if (engine != nullptr) engine->Stop();  // fails what is left with Cancelled
    Complete();
  }

  void Complete() {
    std::vector<Pending> ready;
    {
      absl::MutexLock lock(&mu_);
      for (auto it = pending_.begin(); it != pending_.end();) {
        if (it->future.wait_for(std::chrono::seconds(0)) == std::future_status::ready) {
          ready.push_back(std::move(*it));
          it = pending_.erase(it);
        } else {
          ++it;
        }
      }
    }
    for (Pending& p : ready) {
      absl::StatusOr<model::GenerationResult> r = p.future.get();
      if (!r.ok()) {
        p.done(r.status());
        continue;
      }
      std::vector<GeneratedSample> samples;
      samples.reserve(r->completions.size());
      for (model::Completion& c : r->completions) {
        GeneratedSample& s = samples.emplace_back();
        if (tokenizer_ != nullptr) {
          // The text the reward server scores ends before the EOS token (a
          // trailing "<|endoftext|>" would fail format checks).
          const bool eos = c.finish_reason == model::FinishReason::kEos && !c.tokens.empty();
          s.text = tokenizer_->Decode(
              eos ? std::vector<int32_t>(c.tokens.begin(), c.tokens.end() - 1) : c.tokens);
        }
        s.tokens = std::move(c.tokens);
        s.logprobs = std::move(c.logprobs);
        s.versions = std::move(c.versions);
        s.finish_reason = ToProto(c.finish_reason);
      }
      p.done(std::move(samples));
    }
  }

  const model::ModelConfig config_;
  const std::unique_ptr<Tokenizer> tokenizer_;
  const EngineGeneratorOptions options_;
  const at::ScalarType dtype_;
  const at::Device device_;

  mutable absl::Mutex mu_;
  absl::CondVar cv_;
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;
  bool kick_ ABSL_GUARDED_BY(mu_) = false;  // work arrived since the last Step()
  std::unique_ptr<model::Engine> engine_ ABSL_GUARDED_BY(mu_);
  std::deque<Pending> pending_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Generator>> MakeEngineGenerator(const v1::ModelFiles& files,
                                                               EngineGeneratorOptions options) {
  if (files.config_json().empty()) {
    return absl::InvalidArgumentError("the learner sent no config.json for its model");
  }
  absl::StatusOr<model::ModelConfig> config = model::ModelConfig::FromJson(files.config_json());
  if (!config.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("config.json of ", files.source(), ": ", config.status().message()));
  }
  std::unique_ptr<Tokenizer> tokenizer;
  if (!files.tokenizer_json().empty()) {
    absl::StatusOr<std::unique_ptr<Tokenizer>> t =
        Tokenizer::FromJson(files.tokenizer_json(), files.tokenizer_config_json());
    if (!t.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("tokenizer.json of ", files.source(), ": ", t.status().message()));
    }
    tokenizer = *std::move(t);
  } else {
    COHORT_LOG(WARNING) << "the learner sent no tokenizer.json: completions go to the reward "
                           "server without text";
  }
  if (options.slots < 1) {
    return absl::InvalidArgumentError(absl::StrCat("actor.slots: ", options.slots, " (need >= 1)"));
  }
  const std::string dtype_name =
      !options.dtype.empty() ? options.dtype : (files.dtype().empty() ? "float32" : files.dtype());
  at::ScalarType dtype;
  if (dtype_name == "float32") {
    dtype = at::kFloat;
  } else if (dtype_name == "bfloat16") {
    dtype = at::kBFloat16;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("model dtype \"", dtype_name, "\": expected float32 or bfloat16"));
  }
  at::Device device(at::kCPU);
  if (options.device == "cuda") {
    if (!at::hasCUDA()) {
      return absl::FailedPreconditionError("actor.device is cuda but no CUDA device is usable");
    }
    device = at::Device(at::kCUDA, 0);
  } else if (options.device != "cpu") {
    return absl::InvalidArgumentError(
        absl::StrCat("actor.device \"", options.device, "\": expected cpu or cuda"));
  }
  return std::unique_ptr<Generator>(new EngineGenerator(*std::move(config), std::move(tokenizer),
                                                        std::move(options), dtype, device));
}

}  // namespace cohort::actor
