#include "model/engine.h"

#include <algorithm>
#include <utility>

#include "model/aten.h"
#include <ATen/core/grad_mode.h>

#include "absl/strings/str_cat.h"
#include "core/logging.h"
#include "core/status.h"
#include "model/gpu.h"
#include "model/torch_error.h"

namespace cohort::model {

const char* FinishReasonName(FinishReason reason) {
  switch (reason) {
    case FinishReason::kEos:
      return "eos";
    case FinishReason::kStop:
      return "stop";
    case FinishReason::kLength:
      return "length";
    case FinishReason::kContext:
      return "context";
  }
  return "unknown";
}

struct Engine::Group {
  GenerationRequest request;
  std::promise<absl::StatusOr<GenerationResult>> promise;
  std::vector<Completion> completions;
  bool done = false;        // promise fulfilled
  int64_t next_sample = 0;  // samples given a slot so far
  int64_t finished = 0;     // samples finished
  // After prefill: the prompt's K/V (when G > 1) and the first token's
  // log-probs, with the version of the weights that produced them.
  KvCache::Prefix prefix;
  at::Tensor first_logprobs;  // [vocab] fp32 CPU
  int64_t prefill_version = 0;
};

struct Engine::Slot {
  std::shared_ptr<Group> group;  // null when free
  int64_t sample = 0;
  SampleRng rng;
  int32_t last_token = 0;
};

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(std::unique_ptr<Transformer> model,
                                                       EngineOptions options) {
  if (model == nullptr) {
    return absl::InvalidArgumentError("engine: no model");
  }
  if (model->device().is_cuda() && options.kv_cache_fraction > 0) {
    ASSIGN_OR_RETURN(int64_t free_bytes, FreeDeviceBytes(model->device()));
    ASSIGN_OR_RETURN(options.num_slots,
                     KvSlotsForBytes(model->config(), options.max_len, model->dtype(), free_bytes,
                                     options.kv_cache_fraction, options.max_slots_from_memory));
    COHORT_LOG(INFO) << "engine: " << options.num_slots << " KV-cache slots of " << options.max_len
                     << " positions in " << options.kv_cache_fraction << " of " << free_bytes
                     << " free device bytes";
  }
  ASSIGN_OR_RETURN(KvCache cache,
                   KvCache::Create(model->config(), options.num_slots, options.max_len,
                                   model->dtype(), model->device()));
  model->set_version(options.initial_version);
  const bool graphs = options.cuda_graphs && model->device().is_cuda() && CudaGraphsAvailable();
  std::unique_ptr<Engine> engine(
      new Engine(std::move(model), std::move(cache), std::move(options)));
  if (graphs) {
    ASSIGN_OR_RETURN(engine->graphs_, CudaGraphDecoder::Create(*engine->model_, engine->cache_));
  }
  return engine;
}

Engine::Engine(std::unique_ptr<Transformer> model, KvCache cache, EngineOptions options)
    : options_(std::move(options)),
      model_(std::move(model)),
      cache_(std::move(cache)),
      slots_(options_.num_slots) {
  batched_prefill_ = options_.batched_prefill.value_or(model_->device().is_cuda());
  absl::MutexLock lock(&mu_);
  version_ = options_.initial_version;
}

Engine::~Engine() { Stop(); }

std::future<absl::StatusOr<GenerationResult>> Engine::Submit(GenerationRequest request) {
  auto group = std::make_shared<Group>();
  auto future = group->promise.get_future();
  auto reject = [&](absl::Status status) {
    group->promise.set_value(std::move(status));
    return std::move(future);
  };
  const GenerationRequest& r = request;
  if (absl::Status s = r.params.Validate(); !s.ok()) return reject(s);
  if (r.prompt.empty()) {
    return reject(absl::InvalidArgumentError("generate: empty prompt"));
  }
  if (r.num_samples < 1) {
    return reject(absl::InvalidArgumentError(
        absl::StrCat("generate: num_samples must be >= 1, got ", r.num_samples)));
  }
  if (static_cast<int64_t>(r.prompt.size()) >= options_.max_len) {
    return reject(absl::InvalidArgumentError(
        absl::StrCat("generate: prompt of ", r.prompt.size(),
                     " tokens leaves no room in the engine's max_len ", options_.max_len)));
  }
  const int64_t vocab = model_->config().vocab_size;
  for (int32_t id : r.prompt) {
    if (id < 0 || id >= vocab) {
      return reject(absl::InvalidArgumentError(absl::StrCat(
          "generate: prompt token id ", id, " outside the vocabulary [0, ", vocab, ")")));
    }
  }
  if (!r.params.stop.empty() && !options_.decode) {
    return reject(absl::InvalidArgumentError("generate: stop strings need EngineOptions::decode"));
  }
  group->request = std::move(request);
  group->completions.resize(group->request.num_samples);
  absl::MutexLock lock(&mu_);
  if (stopped_) {
    return reject(absl::CancelledError("generate: engine stopped"));
  }
  queue_.push_back(std::move(group));
  ++in_flight_groups_;
  work_cv_.Signal();
  return future;
}

absl::Status Engine::SwapWeights(TensorMap weights, int64_t version) {
  RETURN_IF_ERROR(Transformer::CheckWeights(model_->config(), weights));
  absl::MutexLock lock(&mu_);
  pending_weights_.emplace(std::move(weights), version);
  work_cv_.Signal();
  return absl::OkStatus();
}

int64_t Engine::policy_version() const {
  absl::MutexLock lock(&mu_);
  return version_;
}

EngineStats Engine::stats() const {
  absl::MutexLock lock(&mu_);
  return stats_;
}

void Engine::AddStats(const EngineStats& d) {
  absl::MutexLock lock(&mu_);
  stats_.steps += d.steps;
  stats_.generated_tokens += d.generated_tokens;
  stats_.prefill_tokens += d.prefill_tokens;
  stats_.prefix_copies += d.prefix_copies;
  stats_.prefill_batches += d.prefill_batches;
}

void Engine::Start() {
  absl::MutexLock lock(&mu_);
  if (started_thread_ || stopped_) return;
  started_thread_ = true;
  thread_ = std::thread([this] { Loop(); });
}

void Engine::Stop() {
  {
    absl::MutexLock lock(&mu_);
    if (stopped_) return;
    stopped_ = true;
    work_cv_.SignalAll();
  }
  if (thread_.joinable()) thread_.join();
  FailAll(absl::CancelledError("generate: engine stopped"));
}

void Engine::Loop() {
  for (;;) {
    const bool busy = active_ > 0 || !started_.empty();
    {
      absl::MutexLock lock(&mu_);
      while (!busy && !stopped_ && queue_.empty() && !pending_weights_.has_value()) {
        work_cv_.Wait(&mu_);
      }
      if (stopped_) return;
    }
    Step();
  }
}

bool Engine::Step() {
  // Nothing a step calls may unwind into the loop thread (std::terminate):
  // a torch exception (a failed prefix copy, device out of memory) or one
  // thrown by EngineOptions::decode fails the work in flight, whose state
  // it may have left half-updated; queued requests and the engine go on.
  try {
    InstallPendingWeights();
    FillSlots();
    if (active_ == 0) return false;
    DecodeActive();
    return true;
  } catch (const std::exception& e) {
    FailInFlight(TorchError("generate", e));
  } catch (...) {
    FailInFlight(UnknownTorchError("generate"));
  }
  return true;
}

void Engine::FailInFlight(const absl::Status& status) {
  COHORT_LOG(ERROR) << "engine: step failed, failing the requests in flight: " << status.message();
  for (Slot& slot : slots_) {
    if (slot.group != nullptr) FailGroup(slot.group, status);
  }
  for (auto& group : started_) FailGroup(group, status);
  started_.clear();
  active_ = 0;
}

void Engine::RunUntilIdle() {
  while (Step()) {
  }
}

void Engine::InstallPendingWeights() {
  std::optional<std::pair<TensorMap, int64_t>> pending;
  {
    absl::MutexLock lock(&mu_);
    pending.swap(pending_weights_);
  }
  if (!pending.has_value()) return;
  absl::Status status = model_->SwapWeights(std::move(pending->first), pending->second);
  if (!status.ok()) {
    COHORT_LOG(ERROR) << "engine: weight swap to version " << pending->second
                      << " failed, keeping version " << model_->version() << ": "
                      << status.message();
    return;
  }
  absl::MutexLock lock(&mu_);
  version_ = pending->second;
}

void Engine::PrefillNewGroups(EngineStats& delta) {
  std::vector<int64_t> free;
  for (int64_t s = 0; s < static_cast<int64_t>(slots_.size()); ++s) {
    if (slots_[s].group == nullptr) free.push_back(s);
  }
  int64_t waiting = 0;
  for (const auto& g : started_) {
    if (!g->done) waiting += g->request.num_samples - g->next_sample;
  }
  const int64_t room = static_cast<int64_t>(free.size()) - waiting;
  if (room < 2) return;  // one prompt: FillSlots' own path
  // As many groups as fit with all their samples, as FillSlots would take
  // them one by one (a group's other samples take the slots after its own).
  std::vector<std::shared_ptr<Group>> groups;
  std::vector<int64_t> offsets;
  {
    absl::MutexLock lock(&mu_);
    int64_t need = 0;
    while (!queue_.empty() && need + queue_.front()->request.num_samples <= room) {
      offsets.push_back(need);
      need += queue_.front()->request.num_samples;
      groups.push_back(std::move(queue_.front()));
      queue_.pop_front();
    }
  }
  if (groups.size() < 2) {
    absl::MutexLock lock(&mu_);
    for (auto it = groups.rbegin(); it != groups.rend(); ++it) queue_.push_front(std::move(*it));
    return;
  }
  // The slots FillSlots would give these prompts: after the waiting samples.
  std::vector<int64_t> slots;
  for (int64_t offset : offsets) slots.push_back(free[waiting + offset]);
  std::vector<std::vector<int32_t>> prompts;
  for (size_t i = 0; i < groups.size(); ++i) {
    cache_.Reset(slots[i]);
    prompts.push_back(groups[i]->request.prompt);
  }
  absl::StatusOr<at::Tensor> logits = model_->PrefillBatch(cache_, slots, prompts);
  if (!logits.ok()) {
    // Back to the queue's front: FillSlots prefills them one by one and
    // fails only the ones that fail alone.
    COHORT_LOG(WARNING) << "engine: batched prefill failed, prefilling one at a time: "
                        << logits.status().message();
    for (int64_t s : slots) cache_.Reset(s);
    absl::MutexLock lock(&mu_);
    for (auto it = groups.rbegin(); it != groups.rend(); ++it) queue_.push_front(std::move(*it));
    return;
  }
  ++delta.prefill_batches;
  for (size_t i = 0; i < groups.size(); ++i) {
    const std::shared_ptr<Group>& g = groups[i];
    const int64_t s = slots[i];
    delta.prefill_tokens += static_cast<int64_t>(g->request.prompt.size());
    absl::Status status = GuardTorch("generate: after prefill", [&]() -> absl::Status {
      at::NoGradGuard no_grad;
      g->first_logprobs = TemperatureLogProbs(logits->narrow(0, static_cast<int64_t>(i), 1),
                                              {g->request.params.temperature})[0];
      if (g->request.num_samples > 1) g->prefix = cache_.SavePrefix(s, cache_.length(s));
      return absl::OkStatus();
    });
    if (!status.ok()) {
      cache_.Reset(s);
      FailGroup(g, status);
      continue;
    }
    g->prefill_version = model_->version();
    started_.push_back(g);
    Slot& slot = slots_[s];
    slot.group = g;
    slot.sample = g->next_sample++;
    slot.rng = SampleRng::ForSample(g->request.params.seed, slot.sample);
    ++active_;
    Advance(slot, g->first_logprobs.data_ptr<float>(), g->prefill_version);
    ++delta.generated_tokens;
  }
}

void Engine::FillSlots() {
  EngineStats delta;
  if (batched_prefill_) PrefillNewGroups(delta);
  for (int64_t s = 0; s < static_cast<int64_t>(slots_.size()); ++s) {
    if (slots_[s].group != nullptr) continue;
    std::shared_ptr<Group> group;
    bool prefilled_here = false;
    while (group == nullptr) {
      while (!started_.empty() &&
             (started_.front()->done ||
              started_.front()->next_sample >= started_.front()->request.num_samples)) {
        started_.front()->prefix = KvCache::Prefix();  // all samples placed
        started_.pop_front();
      }
      if (!started_.empty()) {
        group = started_.front();
        break;
      }
      std::shared_ptr<Group> next;
      {
        absl::MutexLock lock(&mu_);
        if (queue_.empty()) break;
        next = std::move(queue_.front());
        queue_.pop_front();
      }
      // Prefill the prompt once into this slot (sample 0 decodes here).
      const GenerationRequest& r = next->request;
      cache_.Reset(s);
      absl::StatusOr<at::Tensor> logits = model_->Prefill(cache_, s, r.prompt);
      if (!logits.ok()) {
        cache_.Reset(s);
        FailGroup(next, Annotate(logits.status(), "generate"));
        continue;
      }
      delta.prefill_tokens += static_cast<int64_t>(r.prompt.size());
      try {
        at::NoGradGuard no_grad;
        next->first_logprobs = TemperatureLogProbs(logits->unsqueeze(0), {r.params.temperature})[0];
        if (r.num_samples > 1) {
          next->prefix = cache_.SavePrefix(s, cache_.length(s));
        }
      } catch (const std::exception& e) {
        cache_.Reset(s);
        FailGroup(next, TorchError("generate: after prefill", e));
        continue;
      }
      next->prefill_version = model_->version();
      started_.push_back(next);
      group = next;
      prefilled_here = true;
    }
    if (group == nullptr) break;  // nothing waiting
    Slot& slot = slots_[s];
    slot.group = group;
    slot.sample = group->next_sample++;
    slot.rng = SampleRng::ForSample(group->request.params.seed, slot.sample);
    if (!prefilled_here) {
      cache_.LoadPrefix(group->prefix, s);
      ++delta.prefix_copies;
    }
    ++active_;
    Advance(slot, group->first_logprobs.data_ptr<float>(), group->prefill_version);
    ++delta.generated_tokens;
  }
  AddStats(delta);
}

void Engine::DecodeActive() {
  std::vector<int64_t> slot_ids;
  std::vector<int32_t> tokens;
  std::vector<double> temperatures;
  for (int64_t s = 0; s < static_cast<int64_t>(slots_.size()); ++s) {
    if (slots_[s].group == nullptr) continue;
    slot_ids.push_back(s);
    tokens.push_back(slots_[s].last_token);
    temperatures.push_back(slots_[s].group->request.params.temperature);
  }
  absl::StatusOr<at::Tensor> logits = graphs_ != nullptr ? graphs_->Decode(slot_ids, tokens)
                                                         : model_->Decode(cache_, slot_ids, tokens);
  at::Tensor logprobs;
  if (logits.ok()) {
    try {
      logprobs = TemperatureLogProbs(*logits, temperatures);
    } catch (const std::exception& e) {
      logits = TorchError("generate: sampling", e);
    }
  }
  if (!logits.ok()) {
    for (int64_t s : slot_ids) {
      if (slots_[s].group != nullptr) {
        FailGroup(slots_[s].group, Annotate(logits.status(), "generate"));
      }
    }
    return;
  }
  const int64_t version = model_->version();
  const int64_t vocab = logprobs.size(1);
  const float* base = logprobs.data_ptr<float>();
  for (size_t i = 0; i < slot_ids.size(); ++i) {
    Advance(slots_[slot_ids[i]], base + i * vocab, version);
  }
  EngineStats delta;
  delta.steps = 1;
  delta.generated_tokens = static_cast<int64_t>(slot_ids.size());
  AddStats(delta);
}

bool Engine::Advance(Slot& slot, const float* logprobs, int64_t version) {
  Group& group = *slot.group;
  const GenerationRequest& r = group.request;
  Completion& c = group.completions[slot.sample];
  const SampledToken token =
      SampleFromLogProbs(logprobs, model_->config().vocab_size, r.params, slot.rng);
  c.tokens.push_back(token.id);
  c.logprobs.push_back(token.logprob);
  c.versions.push_back(version);
  slot.last_token = token.id;
  const int64_t n = static_cast<int64_t>(c.tokens.size());
  if (std::find(r.eos_ids.begin(), r.eos_ids.end(), token.id) != r.eos_ids.end()) {
    Finish(slot, FinishReason::kEos);
    return false;
  }
  if (!r.params.stop.empty()) {
    size_t longest = 0;
    for (const std::string& stop : r.params.stop) {
      longest = std::max(longest, stop.size());
    }
    // Every token decodes to at least one byte, so a stop string completed
    // by this token lies within the last `longest` tokens.
    const size_t window = std::min(c.tokens.size(), longest + 1);
    const std::string tail = options_.decode(
        std::vector<int32_t>(c.tokens.end() - static_cast<std::ptrdiff_t>(window), c.tokens.end()));
    for (const std::string& stop : r.params.stop) {
      if (tail.find(stop) != std::string::npos) {
        Finish(slot, FinishReason::kStop);
        return false;
      }
    }
  }
  if (n >= r.params.max_new_tokens) {
    Finish(slot, FinishReason::kLength);
    return false;
  }
  if (static_cast<int64_t>(r.prompt.size()) + n >= options_.max_len) {
    Finish(slot, FinishReason::kContext);
    return false;
  }
  return true;
}

void Engine::Finish(Slot& slot, FinishReason reason) {
  std::shared_ptr<Group> group = std::move(slot.group);
  slot.group = nullptr;
  const int64_t index = &slot - slots_.data();
  cache_.Reset(index);
  --active_;
  group->completions[slot.sample].finish_reason = reason;
  if (++group->finished == group->request.num_samples && !group->done) {
    group->done = true;
    GenerationResult result;
    result.completions = std::move(group->completions);
    group->promise.set_value(std::move(result));
    absl::MutexLock lock(&mu_);
    --in_flight_groups_;
  }
}

void Engine::FailGroup(const std::shared_ptr<Group>& group, absl::Status status) {
  std::shared_ptr<Group> keep = group;  // slots may hold the last reference
  for (size_t s = 0; s < slots_.size(); ++s) {
    if (slots_[s].group == keep) {
      slots_[s].group = nullptr;
      cache_.Reset(static_cast<int64_t>(s));
      --active_;
    }
  }
  if (!keep->done) {
    keep->done = true;
    keep->prefix = KvCache::Prefix();
    keep->promise.set_value(std::move(status));
    absl::MutexLock lock(&mu_);
    --in_flight_groups_;
  }
}

void Engine::FailAll(const absl::Status& status) {
  std::deque<std::shared_ptr<Group>> queued;
  {
    absl::MutexLock lock(&mu_);
    queued.swap(queue_);
  }
  for (auto& group : queued) FailGroup(group, status);
  for (Slot& slot : slots_) {
    if (slot.group != nullptr) FailGroup(slot.group, status);
  }
  for (auto& group : started_) FailGroup(group, status);
  started_.clear();
}

}  // namespace cohort::model
