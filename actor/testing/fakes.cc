#include "actor/testing/fakes.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "core/crc32c.h"
#include "core/status.h"
#include "core/varint.h"

namespace cohort::actor::testing {

namespace v1 = ::cohort::v1;

// ---------------------------------------------------------------------------
// FakeGenerator

FakeGenerator::FakeGenerator(Options options)
    : options_(options), version_(options.initial_version) {
  thread_ = std::thread([this] { Loop(); });
}

FakeGenerator::~FakeGenerator() { Stop(); }

void FakeGenerator::Submit(GenerateSpec spec, GenerateCallback done) {
  if (static_cast<int64_t>(spec.prompt.size()) >= options_.max_len) {
    done(absl::InvalidArgumentError(absl::StrCat(
        "prompt of ", spec.prompt.size(), " tokens does not fit max_len ", options_.max_len)));
    return;
  }
  auto r = std::make_unique<Request>();
  r->samples.resize(static_cast<size_t>(spec.num_samples));
  absl::MutexLock lock(&mu_);
  if (stopped_) {
    mu_.Unlock();
    done(absl::CancelledError("generator stopped"));
    mu_.Lock();
    return;
  }
  submitted_.push_back(spec);
  r->index = submitted_.size() - 1;
  r->spec = std::move(spec);
  r->done = std::move(done);
  queue_.push_back(std::move(r));
  cv_.SignalAll();
}

absl::Status FakeGenerator::SwapWeights(std::shared_ptr<const HostWeights> weights) {
  if (weights == nullptr || weights->tensors.empty()) {
    return absl::InvalidArgumentError("no tensors");
  }
  absl::MutexLock lock(&mu_);
  pending_ = std::move(weights);
  cv_.SignalAll();
  return absl::OkStatus();
}

int64_t FakeGenerator::version() const {
  absl::MutexLock lock(&mu_);
  return version_;
}

int64_t FakeGenerator::generated_tokens() const {
  absl::MutexLock lock(&mu_);
  return tokens_;
}

void FakeGenerator::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopped_ = true;
    cv_.SignalAll();
  }
  if (thread_.joinable()) thread_.join();
}

std::vector<GenerateSpec> FakeGenerator::submitted() const {
  absl::MutexLock lock(&mu_);
  return submitted_;
}

int FakeGenerator::max_in_flight() const {
  absl::MutexLock lock(&mu_);
  return max_in_flight_;
}

std::vector<int64_t> FakeGenerator::swaps() const {
  absl::MutexLock lock(&mu_);
  return swaps_;
}

void FakeGenerator::Loop() {
  std::vector<std::unique_ptr<Request>> active;
  for (;;) {
    std::vector<std::pair<GenerateCallback, absl::StatusOr<std::vector<GeneratedSample>>>> done;
    {
      absl::MutexLock lock(&mu_);
      while (!stopped_ && queue_.empty() && active.empty() && pending_ == nullptr) cv_.Wait(&mu_);
      if (stopped_) {
        for (auto& r : active) done.emplace_back(std::move(r->done), absl::CancelledError("stop"));
        for (auto& r : queue_) done.emplace_back(std::move(r->done), absl::CancelledError("stop"));
        active.clear();
        queue_.clear();
        mu_.Unlock();
        for (auto& [cb, result] : done) cb(std::move(result));
        mu_.Lock();
        return;
      }
      if (pending_ != nullptr) {
        version_ = pending_->version;
        swaps_.push_back(version_);
        pending_ = nullptr;
      }
      // Fill "slots": whole groups while they fit.
      int64_t used = 0;
      for (auto& r : active) used += r->spec.num_samples;
      while (!queue_.empty() &&
             (active.empty() || used + queue_.front()->spec.num_samples <= options_.slots)) {
        used += queue_.front()->spec.num_samples;
        active.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
      max_in_flight_ = std::max(max_in_flight_, static_cast<int>(active.size()));
      // One step for every active request.
      for (auto& r : active) {
        for (size_t i = 0; i < r->samples.size(); ++i) {
          GeneratedSample& s = r->samples[i];
          const int32_t id = static_cast<int32_t>(
              (r->spec.sampling.seed() + i * 7 + static_cast<uint64_t>(r->step) * 13) % 50 + 10);
          s.tokens.push_back(id);
          s.logprobs.push_back(-0.5f);
          s.versions.push_back(version_);
          s.text += absl::StrCat("t", id, " ");
          ++tokens_;
        }
        ++r->step;
      }
      for (auto it = active.begin(); it != active.end();) {
        Request& r = **it;
        if (r.step >= options_.tokens_per_sample) {
          for (GeneratedSample& s : r.samples) {
            if (!r.spec.eos_ids.empty()) {
              s.tokens.back() = r.spec.eos_ids[0];
              s.finish_reason = v1::FINISH_REASON_EOS;
            } else {
              s.finish_reason = v1::FINISH_REASON_LENGTH;
            }
          }
          done.emplace_back(std::move(r.done), std::move(r.samples));
          it = active.erase(it);
        } else {
          ++it;
        }
      }
    }
    for (auto& [cb, result] : done) cb(std::move(result));
    absl::SleepFor(options_.step_time);
  }
}

// ---------------------------------------------------------------------------
// FakeRewardClient

std::vector<v1::RewardResult> FakeRewardClient::Score(const std::vector<v1::ScoreSample>& samples) {
  bool failing;
  {
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(
        +[](bool* blocked) { return !*blocked; }, &blocked_));
    ++calls_;
    samples_ += static_cast<int64_t>(samples.size());
    failing = failing_;
  }
  std::vector<v1::RewardResult> results;
  for (const v1::ScoreSample& s : samples) {
    if (failing) {
      results.push_back(UnscoredResult(s.id(), v1::REWARD_STATUS_ERROR, "fake outage"));
      continue;
    }
    v1::RewardResult& r = results.emplace_back();
    r.set_id(s.id());
    r.set_status(v1::REWARD_STATUS_OK);
    r.set_reward(s.completion().empty() ? 0.0 : 1.0);
  }
  return results;
}

void FakeRewardClient::SetFailing(bool failing) {
  absl::MutexLock lock(&mu_);
  failing_ = failing;
}
void FakeRewardClient::Block() {
  absl::MutexLock lock(&mu_);
  blocked_ = true;
}
void FakeRewardClient::Unblock() {
  absl::MutexLock lock(&mu_);
  blocked_ = false;
}
int64_t FakeRewardClient::calls() const {
  absl::MutexLock lock(&mu_);
  return calls_;
}
int64_t FakeRewardClient::samples() const {
  absl::MutexLock lock(&mu_);
  return samples_;
}

// ---------------------------------------------------------------------------
// Weights

HostWeights FakeWeights(int64_t version, int tensors, int64_t elements) {
  HostWeights w;
  w.version = version;
  uint32_t crc = 0;
  for (int t = 0; t < tensors; ++t) {
    HostTensor& h = w.tensors.emplace_back();
    h.name = absl::StrCat("w.", t);
    h.dtype = v1::DTYPE_F32;
    h.shape = {elements};
    std::vector<float> values(static_cast<size_t>(elements));
    for (int64_t i = 0; i < elements; ++i) {
      values[static_cast<size_t>(i)] = static_cast<float>((t * 131 + i * 17) % 1000) / 1000.0f;
    }
    // Version v changes element (v * 37 + k) % elements for k < v (a few).
    for (int64_t k = 0; k < std::min<int64_t>(version, 5); ++k) {
      values[static_cast<size_t>((version * 37 + k * 101 + t) % elements)] +=
          static_cast<float>(version);
    }
    h.data.assign(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float));
    crc = Crc32cExtend(crc, h.data.data(), h.data.size());
  }
  w.crc32c = crc;
  return w;
}

namespace {

// XOR_RLE of `now` against `base` over [begin, end).
std::string EncodeDelta(const std::string& base, const std::string& now, size_t begin, size_t end) {
  std::string out;
  size_t i = begin;
  while (i < end) {
    size_t zeros = 0;
    while (i + zeros < end && base[i + zeros] == now[i + zeros]) ++zeros;
    size_t literal = 0;
    while (i + zeros + literal < end && base[i + zeros + literal] != now[i + zeros + literal]) {
      ++literal;
    }
    AppendVarint(zeros, &out);
    AppendVarint(literal, &out);
    for (size_t k = 0; k < literal; ++k) {
      out.push_back(static_cast<char>(base[i + zeros + k] ^ now[i + zeros + k]));
    }
    i += zeros + literal;
  }
  return out;
}

}  // namespace

std::vector<v1::WeightChunk> ChunkWeights(const HostWeights& w, int64_t chunk_bytes,
                                          const HostWeights* base) {
  std::vector<v1::WeightChunk> chunks;
  for (size_t t = 0; t < w.tensors.size(); ++t) {
    const HostTensor& h = w.tensors[t];
    const size_t size = h.data.size();
    for (size_t offset = 0; offset < size || (size == 0 && offset == 0);
         offset += static_cast<size_t>(chunk_bytes)) {
      v1::WeightChunk& c = chunks.emplace_back();
      c.set_version(w.version);
      c.set_tensor_name(h.name);
      c.set_dtype(h.dtype);
      for (int64_t d : h.shape) c.add_shape(d);
      c.set_offset(static_cast<int64_t>(offset));
      c.set_tensor_bytes(static_cast<int64_t>(size));
      const size_t end = std::min(size, offset + static_cast<size_t>(chunk_bytes));
      if (base != nullptr) {
        c.set_encoding(v1::WEIGHT_ENCODING_XOR_RLE);
        c.set_base_version(base->version);
        c.set_data(EncodeDelta(base->tensors[t].data, h.data, offset, end));
      } else {
        c.set_data(h.data.substr(offset, end - offset));
      }
      c.set_decoded_bytes(static_cast<int64_t>(end - offset));
      c.set_crc32c(Crc32c(c.data()));
      c.set_tensor_index(static_cast<int32_t>(t));
      c.set_tensor_count(static_cast<int32_t>(w.tensors.size()));
      if (end == size) {
        c.set_tensor_last(true);
        c.set_tensor_crc32c(Crc32c(h.data));
      }
      if (size == 0) break;
    }
  }
  if (!chunks.empty()) {
    chunks.back().set_last(true);
    chunks.back().set_version_crc32c(w.crc32c);
  }
  return chunks;
}

// ---------------------------------------------------------------------------
// FakeLearner

namespace {
int64_t NowMs() { return absl::ToUnixMillis(absl::Now()); }
}  // namespace

FakeLearner::FakeLearner(Options options) : options_(std::move(options)) {
  for (int i = 0; i < options_.prompts; ++i) queue_.push_back(i);
}

absl::Status FakeLearner::Check(const std::string& actor_id) const {
  if (unavailable_) return absl::UnavailableError("fake learner unavailable");
  if (!actor_id.empty() && actors_.count(actor_id) == 0) {
    return absl::NotFoundError(absl::StrCat("unknown actor_id ", actor_id));
  }
  return absl::OkStatus();
}

void FakeLearner::ExpireLocked() {
  const int64_t now = NowMs();
  for (auto it = leases_.begin(); it != leases_.end();) {
    if (it->second.deadline_ms < now) {
      if (settled_.count(it->second.prompt_id) == 0) queue_.push_back(it->second.prompt_id);
      it = leases_.erase(it);
    } else {
      ++it;
    }
  }
}

absl::StatusOr<v1::JoinResponse> FakeLearner::Join(const v1::JoinRequest& request) {
  absl::MutexLock lock(&mu_);
  if (unavailable_) return absl::UnavailableError("fake learner unavailable");
  if (!options_.refuse_join.empty()) return absl::FailedPreconditionError(options_.refuse_join);
  if (request.protocol_version() != v1::LEARNER_PROTOCOL_CURRENT) {
    return absl::FailedPreconditionError("protocol version mismatch");
  }
  std::string id = absl::StrCat("actor-", incarnation_, "-", next_actor_++);
  actors_.insert(id);
  ++joins_;
  v1::JoinResponse r;
  r.set_actor_id(id);
  r.set_policy_version(latest_);
  r.set_group_size(options_.group_size);
  r.mutable_sampling()->set_temperature(1.0f);
  r.mutable_sampling()->set_top_p(1.0f);
  r.mutable_sampling()->set_max_new_tokens(options_.max_new_tokens);
  r.set_heartbeat_interval_ms(options_.heartbeat_interval_ms);
  r.set_lease_ttl_ms(options_.lease_ttl_ms);
  for (const std::string& a : options_.reward_addresses) r.add_reward_addresses(a);
  if (!options_.reward_addresses.empty()) r.set_reward_address(options_.reward_addresses[0]);
  r.set_run_id("fake-run");
  r.set_protocol_version(v1::LEARNER_PROTOCOL_CURRENT);
  if (options_.model.model_fingerprint().empty()) {
    r.mutable_model()->set_model_fingerprint("fake-model");
    r.mutable_model()->set_source("preset:fake");
    r.mutable_model()->add_eos_token_ids(2);
  } else {
    *r.mutable_model() = options_.model;
  }
  r.set_deterministic(options_.deterministic);
  r.set_stage("grpo");
  r.set_stage_kind("grpo");
  return r;
}

absl::StatusOr<v1::LeasePromptsResponse> FakeLearner::LeasePrompts(
    const v1::LeasePromptsRequest& request) {
  absl::MutexLock lock(&mu_);
  absl::Status s = Check(request.actor_id());
  if (!s.ok()) return s;
  ExpireLocked();
  v1::LeasePromptsResponse r;
  r.set_policy_version(latest_);
  r.set_drain(drain_);
  if (drain_) return r;
  while (!hold_leases_ && !queue_.empty() && r.leases_size() < request.max_prompts()) {
    const int64_t prompt = queue_.front();
    queue_.pop_front();
    if (settled_.count(prompt) > 0) continue;
    v1::Lease* l = r.add_leases();
    l->set_lease_id(absl::StrCat("L", incarnation_, "-", next_lease_++));
    l->set_prompt_id(prompt);
    l->set_deadline_unix_ms(NowMs() + options_.lease_ttl_ms);
    const int n = options_.long_prompts.count(prompt) > 0 ? 1000 : 3 + static_cast<int>(prompt % 5);
    for (int i = 1; i <= n; ++i) l->add_prompt_token_ids(i);
    l->set_prompt_text(absl::StrCat("prompt ", prompt));
    l->set_task(options_.task);
    l->set_answer(options_.answer);
    l->set_group_size(options_.group_size);
    l->mutable_sampling()->set_temperature(1.0f);
    l->mutable_sampling()->set_top_p(1.0f);
    l->mutable_sampling()->set_max_new_tokens(options_.max_new_tokens);
    l->mutable_sampling()->set_seed(static_cast<uint64_t>(prompt) * 1000 + 1);
    l->set_prompt_uid(absl::StrCat(prompt));
    l->set_policy_version(options_.deterministic ? pinned_ : latest_);
    l->set_version_pinned(options_.deterministic);
    l->set_attempt(1);
    l->set_model_fingerprint(options_.model.model_fingerprint().empty()
                                 ? std::string("fake-model")
                                 : options_.model.model_fingerprint());
    leases_[l->lease_id()] = {prompt, request.actor_id(), l->deadline_unix_ms()};
  }
  if (r.leases_size() == 0) r.set_retry_after_ms(20);
  return r;
}

absl::StatusOr<v1::HeartbeatResponse> FakeLearner::Heartbeat(const v1::HeartbeatRequest& request) {
  absl::MutexLock lock(&mu_);
  absl::Status s = Check(request.actor_id());
  if (!s.ok()) return s;
  ExpireLocked();
  if (request.has_engine_time()) engine_time_ = request.engine_time();
  max_reported_version_ = std::max(max_reported_version_, request.policy_version());
  v1::HeartbeatResponse r;
  r.set_latest_policy_version(latest_);
  r.set_drain(drain_);
  const int64_t deadline = NowMs() + options_.lease_ttl_ms;
  for (const std::string& id : request.released_lease_ids()) {
    auto it = leases_.find(id);
    if (it == leases_.end()) continue;
    if (settled_.count(it->second.prompt_id) == 0) queue_.push_front(it->second.prompt_id);
    leases_.erase(it);
    ++released_;
  }
  for (const std::string& id : request.lease_ids()) {
    auto it = leases_.find(id);
    if (it == leases_.end()) {
      r.add_expired_lease_ids(id);
    } else {
      it->second.deadline_ms = deadline;
    }
  }
  r.set_deadline_unix_ms(deadline);
  return r;
}

absl::StatusOr<v1::SubmitGroupResponse> FakeLearner::SubmitGroup(
    const v1::SubmitGroupRequest& request) {
  absl::MutexLock lock(&mu_);
  absl::Status s = Check(request.actor_id());
  if (!s.ok()) return s;
  if (request.has_engine_time()) submit_engine_time_ = request.engine_time();
  const v1::ScoredGroup& g = request.group();
  v1::SubmitGroupResponse r;
  if (submitted_leases_.count(g.lease_id()) > 0) {
    r.set_accepted(true);
    r.set_duplicate(true);
    return r;
  }
  if (g.completions_size() != options_.group_size) {
    return absl::InvalidArgumentError(absl::StrCat("group.completions: ", g.completions_size(),
                                                   " for group_size ", options_.group_size));
  }
  for (const v1::Completion& c : g.completions()) {
    if (c.reward().status() == v1::REWARD_STATUS_UNSPECIFIED) {
      return absl::InvalidArgumentError("group.completions[].reward: no status");
    }
    if (c.logprobs_size() != c.token_ids_size() || c.policy_versions_size() != c.token_ids_size()) {
      return absl::InvalidArgumentError("group.completions[]: lengths differ");
    }
    for (int64_t v : c.policy_versions()) {
      if (v > latest_) {
        return absl::InvalidArgumentError(absl::StrCat("group.completions[].policy_versions: ", v,
                                                       " is not a published version (latest ",
                                                       latest_, ")"));
      }
    }
  }
  auto it = leases_.find(g.lease_id());
  const bool settled = settled_.count(g.prompt_id()) > 0;
  bool re_leased = false;
  for (const auto& [id, l] : leases_)
    re_leased |= (l.prompt_id == g.prompt_id() && id != g.lease_id());
  if (settled || (it == leases_.end() && re_leased)) {
    r.set_accepted(false);
    r.set_reason_code(settled ? "settled" : "re_leased");
    r.set_reason("prompt leased again or settled");
    return r;
  }
  if (it != leases_.end()) leases_.erase(it);
  // Queued again after an expiry? Take it out.
  queue_.erase(std::remove(queue_.begin(), queue_.end(), g.prompt_id()), queue_.end());
  submitted_leases_.insert(g.lease_id());
  settled_.insert(g.prompt_id());
  ++trained_[g.prompt_id()];
  groups_.push_back(g);
  r.set_accepted(true);
  return r;
}

absl::Status FakeLearner::FetchPolicy(
    const v1::FetchPolicyRequest& request,
    const std::function<absl::Status(const ChunkView&)>& on_chunk) {
  int64_t version;
  bool corrupt, delta;
  {
    absl::MutexLock lock(&mu_);
    if (unavailable_) return absl::UnavailableError("fake learner unavailable");
    version = request.version() > 0 || request.exact_version() ? request.version() : latest_;
    if (version > latest_) return absl::NotFoundError(absl::StrCat("version ", version));
    corrupt = corrupt_ > 0;
    if (corrupt) --corrupt_;
    delta = options_.offer_deltas && request.delta() && request.base_version() > 0 &&
            request.base_version() < version && request.version() > 0;
    ++(delta ? delta_fetches_ : full_fetches_);
  }
  auto make = [this](int64_t v) { return options_.weights ? options_.weights(v) : FakeWeights(v); };
  HostWeights w = make(version);
  HostWeights base;
  if (delta) base = make(request.base_version());
  std::vector<v1::WeightChunk> chunks =
      ChunkWeights(w, options_.chunk_bytes, delta ? &base : nullptr);
  if (corrupt) {
    std::string* data = chunks[chunks.size() / 2].mutable_data();
    if (!data->empty()) (*data)[0] ^= 0x10;  // in flight: the chunk CRC no longer matches
  }
  for (const v1::WeightChunk& c : chunks) {
    const absl::string_view d = c.data();
    const size_t a = d.size() / 3, b = d.size() - d.size() / 5;
    const absl::string_view pieces[3] = {d.substr(0, a), d.substr(a, b - a), d.substr(b)};
    RETURN_IF_ERROR(on_chunk(ChunkView(c, pieces)));
  }
  return absl::OkStatus();
}

void FakeLearner::HoldLeases(bool hold) {
  absl::MutexLock lock(&mu_);
  hold_leases_ = hold;
}

int64_t FakeLearner::max_reported_version() const {
  absl::MutexLock lock(&mu_);
  return max_reported_version_;
}

void FakeLearner::SetUnavailable(bool unavailable) {
  absl::MutexLock lock(&mu_);
  unavailable_ = unavailable;
}

void FakeLearner::Restart() {
  absl::MutexLock lock(&mu_);
  actors_.clear();
  for (const auto& [id, l] : leases_) {
    if (settled_.count(l.prompt_id) == 0) queue_.push_back(l.prompt_id);
  }
  leases_.clear();
  ++incarnation_;
}

void FakeLearner::CorruptNextFetches(int n) {
  absl::MutexLock lock(&mu_);
  corrupt_ = n;
}
void FakeLearner::Publish(int64_t version) {
  absl::MutexLock lock(&mu_);
  latest_ = version;
}
void FakeLearner::SetDrain(bool drain) {
  absl::MutexLock lock(&mu_);
  drain_ = drain;
}
void FakeLearner::SetPinnedVersion(int64_t version) {
  absl::MutexLock lock(&mu_);
  pinned_ = version;
}
std::map<int64_t, int> FakeLearner::trained() const {
  absl::MutexLock lock(&mu_);
  return trained_;
}
std::vector<v1::ScoredGroup> FakeLearner::groups() const {
  absl::MutexLock lock(&mu_);
  return groups_;
}
int64_t FakeLearner::queued() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int64_t>(queue_.size());
}
int64_t FakeLearner::outstanding() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int64_t>(leases_.size());
}
v1::EngineTime FakeLearner::last_engine_time() const {
  absl::MutexLock lock(&mu_);
  return engine_time_;
}

v1::EngineTime FakeLearner::last_submit_engine_time() const {
  absl::MutexLock lock(&mu_);
  return submit_engine_time_;
}

int64_t FakeLearner::released() const {
  absl::MutexLock lock(&mu_);
  return released_;
}
int64_t FakeLearner::joins() const {
  absl::MutexLock lock(&mu_);
  return joins_;
}
int64_t FakeLearner::full_fetches() const {
  absl::MutexLock lock(&mu_);
  return full_fetches_;
}
int64_t FakeLearner::delta_fetches() const {
  absl::MutexLock lock(&mu_);
  return delta_fetches_;
}
bool FakeLearner::done() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(settled_.size()) == options_.prompts;
}

}  // namespace cohort::actor::testing
