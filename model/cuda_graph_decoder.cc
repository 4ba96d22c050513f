#include "model/cuda_graph_decoder.h"

#include <algorithm>
#include <map>
#include <set>
#include <type_traits>
#include <utility>

#include "model/aten.h"
#include <ATen/core/grad_mode.h>

#include "absl/strings/str_cat.h"
#include "model/torch_error.h"

#if COHORT_TORCH_HAS_CUDA
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace cohort::model {

#if COHORT_TORCH_HAS_CUDA

bool CudaGraphsAvailable() { return at::hasCUDA(); }

namespace {

std::vector<int64_t> Buckets(std::vector<int64_t> given, int64_t first, int64_t limit) {
  if (given.empty()) {
    for (int64_t b = first; b < limit; b *= 2) given.push_back(b);
  }
  given.push_back(limit);
  std::set<int64_t> kept;
  for (int64_t b : given) {
    if (b >= 1 && b <= limit) kept.insert(b);
  }
  return std::vector<int64_t>(kept.begin(), kept.end());
}

int64_t BucketFor(const std::vector<int64_t>& buckets, int64_t n) {
  return *std::lower_bound(buckets.begin(), buckets.end(), n);  // last bucket == limit >= n
}

}  // namespace

class CudaGraphDecoder::Impl {
 public:
  struct Graph {
    std::unique_ptr<at::cuda::CUDAGraph> graph;
    at::Tensor ids, pos, slot_index;  // static inputs [B, 1], [B], [B]
    at::Tensor logits;                // static output [B, vocab]
  };

  Impl(const Transformer& model, KvCache& cache, CudaGraphOptions options)
      : model(model),
        cache(cache),
        batch_buckets(Buckets(options.batch_buckets, 1, cache.num_slots())),
        length_buckets(Buckets(options.length_buckets, std::min<int64_t>(256, cache.max_len()),
                               cache.max_len())) {}

  // Data pointers of the weights the graphs were captured with.
  std::vector<const void*> WeightPointers() const {
    std::vector<const void*> p;
    for (const auto& [name, t] : model.weights()) p.push_back(t.data_ptr());
    std::sort(p.begin(), p.end());
    return p;
  }

  Graph& Get(int64_t b, int64_t len) {
    std::vector<const void*> now = WeightPointers();
    if (now != captured_with) {
      graphs.clear();  // new weight tensors: recapture (into a fresh pool)
      pool_set = false;
      pool = decltype(pool){0, 0};
      captured_with = std::move(now);
    }
    auto key = std::make_pair(b, len);
    auto it = graphs.find(key);
    if (it != graphs.end()) return it->second;
    Graph g;
    auto long_opts = at::TensorOptions().dtype(at::kLong).device(model.device());
    g.ids = at::zeros({b, 1}, long_opts);
    g.pos = at::full({b}, cache.max_len() - 1, long_opts);
    g.slot_index = at::arange(b, long_opts);
    g.graph = std::make_unique<at::cuda::CUDAGraph>();
    c10::cuda::CUDAGuard device_guard(model.device());
    c10::cuda::CUDAStream side = c10::cuda::getStreamFromPool();
    side.synchronize();
    c10::cuda::getCurrentCUDAStream().synchronize();
    {
      c10::cuda::CUDAStreamGuard stream_guard(side);
      // Warm-up outside the capture (lazy initialisation, kernel choice).
      model.DecodeOnDevice(cache, g.ids, g.pos, g.slot_index, 0, len);
      side.synchronize();
      // {0, 0} (first graph): a new pool; later graphs share it.
      g.graph->capture_begin(pool, cudaStreamCaptureModeThreadLocal);
      g.logits = model.DecodeOnDevice(cache, g.ids, g.pos, g.slot_index, 0, len);
      g.graph->capture_end();
      if (!pool_set) {
        pool = g.graph->pool();
        pool_set = true;
      }
    }
    side.synchronize();
    ++captured;
    return graphs.emplace(key, std::move(g)).first->second;
  }

  const Transformer& model;
  KvCache& cache;
  const std::vector<int64_t> batch_buckets, length_buckets;
  std::map<std::pair<int64_t, int64_t>, Graph> graphs;
  std::vector<const void*> captured_with;
  // The pool id type's name moved between LibTorch versions; pool() has it.
  std::remove_cv_t<std::remove_reference_t<decltype(std::declval<at::cuda::CUDAGraph&>().pool())>>
      pool{0, 0};
  bool pool_set = false;
  int64_t captured = 0;
  int64_t replayed = 0;
};

absl::StatusOr<std::unique_ptr<CudaGraphDecoder>> CudaGraphDecoder::Create(
    const Transformer& model, KvCache& cache, CudaGraphOptions options) {
  if (!model.device().is_cuda() || !at::hasCUDA()) {
    return absl::FailedPreconditionError(
        absl::StrCat("cuda graphs: the model is on ", model.device().str(), ", not a CUDA device"));
  }
  if (cache.num_layers() != model.config().num_hidden_layers) {
    return absl::InvalidArgumentError("cuda graphs: the cache does not belong to this model");
  }
  return std::unique_ptr<CudaGraphDecoder>(
      new CudaGraphDecoder(std::make_unique<Impl>(model, cache, std::move(options))));
}

absl::StatusOr<at::Tensor> CudaGraphDecoder::Decode(const std::vector<int64_t>& slots,
                                                    const std::vector<int32_t>& tokens) {
  Impl& m = *impl_;
  if (slots.empty() || slots.size() != tokens.size()) {
    return absl::InvalidArgumentError(absl::StrCat("decode: need one token per slot, got ",
                                                   slots.size(), " slots and ", tokens.size(),
                                                   " tokens"));
  }
  const int64_t vocab = m.model.config().vocab_size;
  int64_t hi = 0, read_len = 0;
  std::set<int64_t> seen;
  for (size_t i = 0; i < slots.size(); ++i) {
    const int64_t s = slots[i];
    if (s < 0 || s >= m.cache.num_slots() || !seen.insert(s).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("decode: slot ", s, " out of range or repeated"));
    }
    if (tokens[i] < 0 || tokens[i] >= vocab) {
      return absl::InvalidArgumentError(
          absl::StrCat("decode: token id ", tokens[i], " outside the vocabulary [0, ", vocab, ")"));
    }
    if (m.cache.length(s) >= m.cache.max_len()) {
      return absl::OutOfRangeError(
          absl::StrCat("decode: slot ", s, " is full (", m.cache.max_len(), " positions)"));
    }
    hi = std::max(hi, s + 1);
    read_len = std::max(read_len, m.cache.length(s) + 1);
  }
  const int64_t b = BucketFor(m.batch_buckets, hi);
  const int64_t len = BucketFor(m.length_buckets, read_len);
  return GuardTorch("decode (cuda graph)", [&]() -> absl::StatusOr<at::Tensor> {
    at::NoGradGuard no_grad;
    Impl::Graph& g = m.Get(b, len);
    // Rows not decoded: token 0 written at position max_len - 1.
    at::Tensor host = at::empty({2, b}, at::kLong);
    int64_t* ids = host.data_ptr<int64_t>();
    int64_t* pos = ids + b;
    std::fill(ids, ids + b, 0);
    std::fill(pos, pos + b, m.cache.max_len() - 1);
    for (size_t i = 0; i < slots.size(); ++i) {
      ids[slots[i]] = tokens[i];
      pos[slots[i]] = m.cache.length(slots[i]);
    }
    at::Tensor dev = host.to(m.model.device());
    g.ids.copy_(dev[0].view({b, 1}));
    g.pos.copy_(dev[1]);
    g.graph->replay();
    ++m.replayed;
    at::Tensor rows = at::tensor(at::ArrayRef<int64_t>(slots), at::kLong).to(m.model.device());
    at::Tensor logits = g.logits.index_select(0, rows);
    for (int64_t s : slots) m.cache.set_length(s, m.cache.length(s) + 1);
    return logits;
  });
}

#else  // !COHORT_TORCH_HAS_CUDA

bool CudaGraphsAvailable() { return false; }

class CudaGraphDecoder::Impl {
 public:
  int64_t captured = 0;
  int64_t replayed = 0;
};

absl::StatusOr<std::unique_ptr<CudaGraphDecoder>> CudaGraphDecoder::Create(const Transformer&,
                                                                           KvCache&,
                                                                           CudaGraphOptions) {
  return absl::UnimplementedError("cuda graphs: this build's LibTorch has no CUDA");
}

absl::StatusOr<at::Tensor> CudaGraphDecoder::Decode(const std::vector<int64_t>&,
                                                    const std::vector<int32_t>&) {
  return absl::UnimplementedError("cuda graphs: this build's LibTorch has no CUDA");
}

#endif  // COHORT_TORCH_HAS_CUDA

CudaGraphDecoder::CudaGraphDecoder(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
CudaGraphDecoder::~CudaGraphDecoder() = default;
int64_t CudaGraphDecoder::graphs_captured() const { return impl_->captured; }
int64_t CudaGraphDecoder::replays() const { return impl_->replayed; }

}  // namespace cohort::model
