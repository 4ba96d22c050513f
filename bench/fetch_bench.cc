// fetch_bench: weight streaming of a Qwen2.5-0.5B-shaped version (bf16,
// ~0.99 GB) over loopback. No arguments; prints JSON lines.
//
//  1. FetchPolicy (cohort.v1.Learner on a real gRPC server) to 1, 4 and 8
//     concurrent clients, each on its own connection, verifying every
//     chunk's CRC-32C as it streams and discarding the bytes, against a
//     plain TCP stream of the same chunks (same chunk size, a small header
//     per chunk, the same CRC check on the client). The gRPC clients use
//     the actor's receive path (GrpcLearnerClient: raw messages, payload
//     views into the received slices). Lines:
//       {"clients": N, "grpc_gbytes_per_s": x, "tcp_gbytes_per_s": y, "ratio": x/y,
//        "pair_ratios": [...], "grpc_cpu_s_per_gb": ..., "tcp_cpu_s_per_gb": ...,
//        "grpc_parsed_gbytes_per_s": z}
//     (aggregate over the clients; x and y the medians of 3 interleaved
//     gRPC/TCP pairs, pair_ratios each pair's ratio; *_cpu_s_per_gb the
//     benchmark process's CPU seconds, server and clients, per GB streamed;
//     z the median rate through the generated stub, which parses each chunk
//     into a WeightChunk and so copies its payload, run before each pair).
//  2. Bytes per version, full vs delta, after one AdamW update of fp32
//     master weights (Adam's first step moves each weight by lr = 1e-6)
//     rounded to bf16.
//  3. Seconds from Publish() of that version until 8 clients holding the
//     previous version have fetched it as a delta, rebuilt every tensor
//     against their base and verified the tensor and version checksums,
//     through the actor's own path (GrpcLearnerClient::FetchPolicy into
//     actor::WeightAssembler), and swapped: handed the verified weights
//     over as WeightClient does (EngineGenerator wraps them without a copy
//     when its dtype is the wire's, bf16 here; an engine of another dtype
//     converts them once more, not counted). Each client assembles into its
//     own version before last, as WeightClient recycles it (a copy of
//     version 0 made before the publish, untimed): its pages are mapped, so
//     a swap faults in nothing. Two ways of learning of the version:
//       "told": "at_publish"    the client asks for the exact version as
//                               soon as Publish() returns, and the learner
//                               streams it while the store still computes
//                               its CRCs and delta (WeightStore::
//                               GetPublished); the stream's last chunk
//                               waits for the version to be complete
//       "told": "when_visible"  the client asks once the version is
//                               visible (WaitPublished), as an actor did
//                               when Heartbeat's latest_policy_version
//                               announced complete versions only (it now
//                               announces a version at Publish(), as
//                               at_publish), not counting the heartbeat wait
//     Times, all from the Publish() call, split by stage:
//       publish_s       Publish() until the version is visible (the store's
//                       CRC and delta work on WeightStoreOptions::threads)
//       first_chunk_s   until a client holds its first chunk
//       stream_s        first to last chunk (receiving, parsing, verifying)
//       verify_cpu_s    of which inside WeightAssembler::Add (decode + CRCs)
//       swap_s          handing the verified weights over (no copy)
//       client_swapped_s  until that client has swapped
//     for 8 concurrent clients (mean and max per client) told either way,
//     for one alone told either way, and for one alone into fresh buffers
//     (an actor's first delta after a full fetch, when it has no version
//     before last yet):
//       {"swap": ..., "told": ..., "actors": 8, "publish_to_all_swapped_s": ...}
//       {"swap_one_actor": ..., "told": ..., "publish_to_swapped_s": ...}
//       {"swap_one_actor_fresh_buffers": ..., ...}
//     On this box the 8 clients share the benchmark's cores with the server,
//     so "cpu_seconds_per_client" (the process's CPU time after the publish,
//     less the store's, / 8) and "client_thread_cpu_s" say what one actor on
//     its own machine would spend; "publish_cpu_s" is the store's CPU time,
//     measured in the when_visible runs (the clients wait meanwhile).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "actor/learner_client.h"
#include "actor/weight_client.h"
#include "cohort/v1/learner.grpc.pb.h"
#include "core/crc32c.h"
#include "core/malloc_tuning.h"
#include "core/rpc.h"
#include "learner/service.h"
#include "learner/weight_store.h"

namespace cohort::learner {
namespace {

constexpr int64_t kChunk = 4 << 20;

// Qwen2.5-0.5B: hidden 896, intermediate 4864, 24 layers, 14 heads of 64,
// 2 KV heads, vocab 151936, tied embeddings, q/k/v biases.
std::vector<std::pair<std::string, std::vector<int64_t>>> Shapes() {
  std::vector<std::pair<std::string, std::vector<int64_t>>> s;
  const int64_t h = 896, inter = 4864, kv = 128, vocab = 151936;
  s.push_back({"model.embed_tokens.weight", {vocab, h}});
  s.push_back({"model.norm.weight", {h}});
  for (int l = 0; l < 24; ++l) {
    std::string p = absl::StrCat("model.layers.", l, ".");
    s.push_back({p + "self_attn.q_proj.weight", {h, h}});
    s.push_back({p + "self_attn.q_proj.bias", {h}});
    s.push_back({p + "self_attn.k_proj.weight", {kv, h}});
    s.push_back({p + "self_attn.k_proj.bias", {kv}});
    s.push_back({p + "self_attn.v_proj.weight", {kv, h}});
    s.push_back({p + "self_attn.v_proj.bias", {kv}});
    s.push_back({p + "self_attn.o_proj.weight", {h, h}});
    s.push_back({p + "mlp.gate_proj.weight", {inter, h}});
    s.push_back({p + "mlp.up_proj.weight", {inter, h}});
    s.push_back({p + "mlp.down_proj.weight", {h, inter}});
    s.push_back({p + "input_layernorm.weight", {h}});
    s.push_back({p + "post_attention_layernorm.weight", {h}});
  }
  return s;
}

uint16_t ToBf16(float f) {  // round to nearest even
  uint32_t u;
  std::memcpy(&u, &f, 4);
  u += 0x7FFF + ((u >> 16) & 1);
  return static_cast<uint16_t>(u >> 16);
}

struct Model {
  std::vector<std::vector<float>> master;  // fp32 master weights
  WeightSnapshot Bf16() const {
    WeightSnapshot snap;
    auto shapes = Shapes();
    for (size_t t = 0; t < shapes.size(); ++t) {
      WeightTensor w;
      w.name = shapes[t].first;
      w.dtype = WeightDType::kBF16;
      w.shape = shapes[t].second;
      w.size = static_cast<int64_t>(master[t].size()) * 2;
      auto data = AllocateWeightBytes(w.size);
      auto* out = reinterpret_cast<uint16_t*>(data.get());
      for (size_t i = 0; i < master[t].size(); ++i) out[i] = ToBf16(master[t][i]);
      w.data = data;
      snap.tensors.push_back(std::move(w));
    }
    return snap;
  }
};

Model MakeModel() {
  Model m;
  std::mt19937_64 rng(1);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  std::vector<float> pool(1 << 20);
  for (auto& x : pool) x = normal(rng);
  for (const auto& [name, shape] : Shapes()) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    std::vector<float> w(n);
    bool norm = name.find("norm") != std::string::npos;
    uint64_t off = rng();
    for (int64_t i = 0; i < n; ++i) {
      w[i] = norm ? 1.0f : pool[(off + i * 2654435761u) & (pool.size() - 1)];
    }
    m.master.push_back(std::move(w));
  }
  return m;
}

// Adam's first update: m/sqrt(v) = sign(g), so each weight moves by lr.
void AdamFirstStep(Model* m, double lr) {
  std::mt19937_64 rng(2);
  for (auto& w : m->master) {
    for (size_t i = 0; i < w.size(); ++i) {
      if ((i & 63) == 0) rng();
      float sign = ((rng() >> (i & 63)) & 1) ? 1.0f : -1.0f;
      w[i] -= static_cast<float>(lr) * sign;
    }
  }
}

std::shared_ptr<grpc::Channel> OwnChannel(const std::string& address) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);  // one connection per client
  args.SetMaxReceiveMessageSize(64 << 20);
  return grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
}

// One client: streams `version` through the actor's own receive path
// (GrpcLearnerClient::FetchPolicy: raw messages, the payload as views into
// the received slices), verifies each chunk's CRC-32C; returns payload bytes.
int64_t GrpcFetch(const std::string& address, int64_t version) {
  std::unique_ptr<actor::LearnerClient> client = actor::MakeGrpcLearnerClient(OwnChannel(address));
  v1::FetchPolicyRequest req;
  req.set_version(version);
  int64_t bytes = 0;
  absl::Status s = client->FetchPolicy(req, [&](const actor::ChunkView& c) {
    if (c.Crc32c() != c.meta().crc32c()) {
      std::fprintf(stderr, "CRC mismatch\n");
      std::abort();
    }
    bytes += static_cast<int64_t>(c.size());
    return absl::OkStatus();
  });
  if (!s.ok()) std::abort();
  return bytes;
}

// The same through the generated stub, which parses each chunk into a
// WeightChunk (copying its payload): what GrpcFetch saves.
int64_t GrpcParsedFetch(const std::string& address, int64_t version) {
  auto stub = v1::Learner::NewStub(OwnChannel(address));
  grpc::ClientContext ctx;
  v1::FetchPolicyRequest req;
  req.set_version(version);
  auto reader = stub->FetchPolicy(&ctx, req);
  v1::WeightChunk c;
  int64_t bytes = 0;
  while (reader->Read(&c)) {
    if (Crc32c(c.data()) != c.crc32c()) {
      std::fprintf(stderr, "CRC mismatch\n");
      std::abort();
    }
    bytes += static_cast<int64_t>(c.data().size());
  }
  if (!reader->Finish().ok()) std::abort();
  return bytes;
}

// The TCP baseline: per chunk a 16-byte header (payload size, CRC) and the
// payload, written straight from the stored bytes.
struct TcpServer {
  int listen_fd = -1;
  int port = 0;
  std::shared_ptr<const PublishedVersion> version;
  std::vector<std::thread> threads;

  void Start() {
    listen_fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(listen_fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
    ::listen(listen_fd, 64);
    socklen_t len = sizeof(a);
    ::getsockname(listen_fd, reinterpret_cast<sockaddr*>(&a), &len);
    port = ntohs(a.sin_port);
  }
  void Serve(int clients) {
    for (int i = 0; i < clients; ++i) {
      int fd = ::accept(listen_fd, nullptr, nullptr);
      threads.emplace_back([this, fd] {
        for (const ChunkRef& c : version->full) {
          uint64_t header[2] = {static_cast<uint64_t>(c.size), c.crc32c};
          SendAll(fd, header, sizeof(header));
          SendAll(fd, c.data, c.size);
        }
        ::close(fd);
      });
    }
  }
  void Join() {
    for (auto& t : threads) t.join();
    threads.clear();
  }
  static void SendAll(int fd, const void* p, size_t n) {
    const char* b = static_cast<const char*>(p);
    while (n > 0) {
      ssize_t w = ::send(fd, b, n, MSG_NOSIGNAL);
      if (w <= 0) std::abort();
      b += w;
      n -= static_cast<size_t>(w);
    }
  }
};

int64_t TcpFetch(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(port);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) std::abort();
  std::vector<char> buf(kChunk);
  int64_t bytes = 0;
  auto recv_all = [fd](char* p, size_t n) {
    while (n > 0) {
      ssize_t r = ::recv(fd, p, n, 0);
      if (r <= 0) return false;
      p += r;
      n -= static_cast<size_t>(r);
    }
    return true;
  };
  uint64_t header[2];
  while (recv_all(reinterpret_cast<char*>(header), sizeof(header))) {
    if (header[0] > buf.size() || !recv_all(buf.data(), header[0])) std::abort();
    if (Crc32c(buf.data(), header[0]) != header[1]) std::abort();
    bytes += static_cast<int64_t>(header[0]);
  }
  ::close(fd);
  return bytes;
}

template <typename F>
double TimeClients(int clients, F fetch, int64_t expect) {
  absl::Time t0 = absl::Now();
  std::vector<std::thread> threads;
  std::atomic<int64_t> total{0};
  for (int i = 0; i < clients; ++i) {
    threads.emplace_back([&] { total += fetch(); });
  }
  for (auto& t : threads) t.join();
  double s = absl::ToDoubleSeconds(absl::Now() - t0);
  if (total.load() != expect * clients) std::abort();
  return static_cast<double>(total.load()) / s / 1e9;
}

// Seconds per stage of one client's swap (see the header).
struct SwapTimes {
  double first_chunk_s = 0, stream_s = 0, verify_cpu_s = 0, swap_s = 0, done_s = 0;
  double thread_cpu_s = 0;  // CPU time of the client's thread for all of it
};

double ThreadCpuSeconds() {
  timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}

double ProcessCpuSeconds() {
  struct rusage u;
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         1e-6 * static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

// The store's version as an actor holds it after fetching it in full.
actor::HostWeights HostCopy(const PublishedVersion& v) {
  actor::HostWeights w;
  w.version = v.version;
  w.crc32c = v.version_crc32c;
  for (const WeightTensor& t : v.weights.tensors) {
    actor::HostTensor& h = w.tensors.emplace_back();
    h.name = t.name;
    h.dtype = v1::DTYPE_BF16;
    h.shape = t.shape;
    h.data.assign(reinterpret_cast<const char*>(t.data.get()), static_cast<size_t>(t.size));
  }
  return w;
}
std::shared_ptr<const actor::HostWeights> AsHostWeights(const PublishedVersion& v) {
  return std::make_shared<const actor::HostWeights>(HostCopy(v));
}

// An actor holding `base` that fetches `version` as a delta through
// GrpcLearnerClient into a WeightAssembler (CRC per chunk, delta decoded
// against the base, tensor and version CRCs) assembling into `spare`'s
// buffers (the version before last, as WeightClient recycles it; empty =
// fresh buffers), then swaps: hands the verified weights over as
// WeightClient does, which EngineGenerator wraps without a copy (same
// dtype). Times are from `published` (the Publish() call).
SwapTimes DeltaSwap(actor::LearnerClient* client, int64_t version,
                    const std::shared_ptr<const actor::HostWeights>& base, actor::HostWeights spare,
                    absl::Time published, std::shared_ptr<const actor::HostWeights>* swapped) {
  actor::WeightAssembler assembler(version, base);
  const bool recycling = !spare.tensors.empty();
  assembler.ReuseBuffers(std::move(spare));
  v1::FetchPolicyRequest req;
  req.set_version(version);
  req.set_exact_version(true);
  req.set_delta(true);
  req.set_base_version(base->version);
  SwapTimes times;
  const double cpu0 = ThreadCpuSeconds();
  absl::Time first = absl::InfiniteFuture();
  absl::Duration in_add;
  absl::Status status = client->FetchPolicy(req, [&](const actor::ChunkView& c) {
    const absl::Time now = absl::Now();
    if (first == absl::InfiniteFuture()) first = now;
    absl::Status s = assembler.Add(c);
    in_add += absl::Now() - now;
    return s;
  });
  const absl::Time streamed = absl::Now();
  absl::StatusOr<actor::HostWeights> w = assembler.Finish();
  if (!status.ok() || !w.ok() || !assembler.saw_delta() ||
      (recycling && assembler.reused_bytes() != w->bytes())) {
    std::fprintf(stderr, "delta fetch failed: %s %s\n", std::string(status.message()).c_str(),
                 w.ok() ? "" : std::string(w.status().message()).c_str());
    std::abort();
  }
  const absl::Time swap_start = absl::Now();
  *swapped = std::make_shared<const actor::HostWeights>(*std::move(w));
  const absl::Time done = absl::Now();
  times.first_chunk_s = absl::ToDoubleSeconds(first - published);
  times.stream_s = absl::ToDoubleSeconds(streamed - first);
  times.verify_cpu_s = absl::ToDoubleSeconds(in_add);
  times.swap_s = absl::ToDoubleSeconds(done - swap_start);
  times.done_s = absl::ToDoubleSeconds(done - published);
  times.thread_cpu_s = ThreadCpuSeconds() - cpu0;
  return times;
}

std::string StageJson(const std::vector<SwapTimes>& all) {
  auto stat = [&](double SwapTimes::*field) {
    double sum = 0, max = 0;
    for (const SwapTimes& t : all) {
      sum += t.*field;
      max = std::max(max, t.*field);
    }
    return absl::StrFormat("{\"mean\": %.3f, \"max\": %.3f}", sum / all.size(), max);
  };
  return absl::StrCat("\"first_chunk_s\": ", stat(&SwapTimes::first_chunk_s),
                      ", \"stream_s\": ", stat(&SwapTimes::stream_s),
                      ", \"verify_cpu_s\": ", stat(&SwapTimes::verify_cpu_s),
                      ", \"swap_s\": ", stat(&SwapTimes::swap_s),
                      ", \"client_swapped_s\": ", stat(&SwapTimes::done_s),
                      ", \"client_thread_cpu_s\": ", stat(&SwapTimes::thread_cpu_s));
}

WeightSnapshot CopySnapshot(const WeightSnapshot& from) {
  WeightSnapshot to;
  for (const WeightTensor& t : from.tensors) {
    WeightTensor c = t;
    auto data = AllocateWeightBytes(t.size);
    std::memcpy(data.get(), t.data.get(), static_cast<size_t>(t.size));
    c.data = data;
    to.tensors.push_back(std::move(c));
  }
  return to;
}

int Main() {
  Model model = MakeModel();
  WeightStore store({.keep_versions = 3, .chunk_bytes = kChunk});
  if (!store.Publish(0, model.Bf16()).ok() || !store.WaitPublished(0, absl::Minutes(5))) return 1;
  LearnerServiceOptions so;
  so.chunk_bytes = kChunk;
  MetricsRegistry registry;
  so.metrics = &registry;
  LearnerService service(so, &store);
  ServerOptions server_options;
  server_options.max_message_bytes = 64 << 20;
  auto server = RpcServer::Start(server_options, {&service});
  if (!server.ok()) return 1;
  std::string address = (*server)->address();
  auto v0 = store.Get(0);
  const int64_t bytes = v0->full_bytes;
  std::fprintf(stderr, "version 0: %lld bytes in %zu tensors, %zu chunks\n",
               static_cast<long long>(bytes), v0->weights.tensors.size(), v0->full.size());

  // gRPC and plain TCP alternate, kPairs times per client count, and the
  // line gives the median of each and their ratio: on a shared machine the
  // load changes between two back-to-back measurements by as much as the
  // difference being measured (a single pair's ratio at 8 clients ranged
  // 0.46-0.75 at unchanged code), the median of interleaved pairs much less.
  constexpr int kPairs = 3;
  for (int clients : {1, 4, 8}) {
    std::vector<double> grpc_rates, tcp_rates, ratios, grpc_cpu, tcp_cpu, parsed_rates;
    const double gb = static_cast<double>(bytes) * clients / 1e9;
    for (int pair = 0; pair < kPairs; ++pair) {
      parsed_rates.push_back(TimeClients(
          clients, [&] { return GrpcParsedFetch(address, 0); }, bytes));
      double cpu0 = ProcessCpuSeconds();
      grpc_rates.push_back(TimeClients(
          clients, [&] { return GrpcFetch(address, 0); }, bytes));
      grpc_cpu.push_back((ProcessCpuSeconds() - cpu0) / gb);
      cpu0 = ProcessCpuSeconds();
      TcpServer tcp;
      tcp.version = v0;
      tcp.Start();
      std::thread acceptor([&] { tcp.Serve(clients); });
      tcp_rates.push_back(TimeClients(
          clients, [&] { return TcpFetch(tcp.port); }, bytes));
      acceptor.join();
      tcp.Join();
      ::close(tcp.listen_fd);
      tcp_cpu.push_back((ProcessCpuSeconds() - cpu0) / gb);
      ratios.push_back(grpc_rates.back() / tcp_rates.back());
    }
    auto median = [](std::vector<double> v) {
      std::sort(v.begin(), v.end());
      return v[v.size() / 2];
    };
    std::string pairs;
    for (double r : ratios)
      absl::StrAppend(&pairs, pairs.empty() ? "" : ", ", absl::StrFormat("%.3f", r));
    const double grpc_rate = median(grpc_rates), tcp_rate = median(tcp_rates);
    std::printf(
        "{\"clients\": %d, \"grpc_gbytes_per_s\": %.3f, \"tcp_gbytes_per_s\": %.3f, "
        "\"ratio\": %.3f, \"pair_ratios\": [%s], \"grpc_cpu_s_per_gb\": %.3f, "
        "\"tcp_cpu_s_per_gb\": %.3f, \"grpc_parsed_gbytes_per_s\": %.3f, \"version_bytes\": "
        "%lld, \"chunk_bytes\": %lld}\n",
        clients, grpc_rate, tcp_rate, grpc_rate / tcp_rate, pairs.c_str(), median(grpc_cpu),
        median(tcp_cpu), median(parsed_rates), static_cast<long long>(bytes),
        static_cast<long long>(kChunk));
    std::fflush(stdout);
  }

  // One AdamW step, published as version 1; 8 clients holding version 0
  // swap to it by delta.
  AdamFirstStep(&model, 1e-6);
  WeightSnapshot next = model.Bf16();
  // The store streams tensors sorted by name; line `next` up with it.
  std::sort(next.tensors.begin(), next.tensors.end(),
            [](const WeightTensor& a, const WeightTensor& b) { return a.name < b.name; });
  int64_t changed = 0, elements = 0;
  for (size_t t = 0; t < next.tensors.size(); ++t) {
    const auto* a = reinterpret_cast<const uint16_t*>(next.tensors[t].data.get());
    const auto* b = reinterpret_cast<const uint16_t*>(v0->weights.tensors[t].data.get());
    for (int64_t i = 0; i < next.tensors[t].size / 2; ++i) changed += a[i] != b[i];
    elements += next.tensors[t].size / 2;
  }
  model.master.clear();
  model.master.shrink_to_fit();
  // The clients' base: version 0 as an actor holds it (shared by the 8, to
  // keep the benchmark's memory at one base plus one version per client).
  std::shared_ptr<const actor::HostWeights> base = AsHostWeights(*v0);
  const int store_threads = WeightStoreOptions().threads;
  // Publishes `snapshot` as `version` and has `actors` clients holding
  // `base` swap to it. `at_publish`: they ask as soon as Publish() returns,
  // else once the version is visible. `recycle`: each client first gets its
  // own copy of version 0 (already mapped, untimed) as the version before
  // last whose buffers WeightClient reuses; otherwise it assembles into
  // fresh buffers (an actor's first delta after a full fetch).
  struct SwapRun {
    double publish_s = 0, total_s = 0, cpu_s = 0, publish_cpu_s = 0;
    std::vector<SwapTimes> times;
  };
  auto swap_run_on = [&](WeightStore& on, const std::string& on_address, int64_t version,
                         WeightSnapshot snapshot, int actors, bool at_publish, bool recycle) {
    SwapRun run;
    absl::Notification go;  // the clients may ask
    absl::Time published;
    run.times.resize(actors);
    std::vector<std::thread> threads;
    std::atomic<int> ready{0};
    // The swapped versions, held (as the engines would) until the CPU time
    // is read: an actor recycles its versions, it does not unmap them.
    std::vector<std::shared_ptr<const actor::HostWeights>> held(actors);
    for (int i = 0; i < actors; ++i) {
      threads.emplace_back([&, i] {
        // Connected before the version is published, as a running actor is.
        std::shared_ptr<grpc::Channel> channel = OwnChannel(on_address);
        if (!channel->WaitForConnected(absl::ToChronoTime(absl::Now() + absl::Seconds(30)))) {
          std::abort();
        }
        auto client = actor::MakeGrpcLearnerClient(channel);
        actor::HostWeights spare;
        if (recycle) spare = HostCopy(*v0);
        ++ready;
        go.WaitForNotification();
        run.times[i] =
            DeltaSwap(client.get(), version, base, std::move(spare), published, &held[i]);
      });
    }
    while (ready.load() < actors) absl::SleepFor(absl::Milliseconds(10));
    const double cpu0 = ProcessCpuSeconds();
    published = absl::Now();
    if (!on.Publish(version, std::move(snapshot)).ok()) std::abort();
    if (at_publish) go.Notify();
    on.WaitPublished(version, absl::Minutes(5));
    const absl::Time visible = absl::Now();
    if (!at_publish) {
      run.publish_cpu_s = ProcessCpuSeconds() - cpu0;  // the store's workers (clients wait)
      go.Notify();
    }
    for (auto& t : threads) t.join();
    run.publish_s = absl::ToDoubleSeconds(visible - published);
    run.total_s = absl::ToDoubleSeconds(absl::Now() - published);
    run.cpu_s = ProcessCpuSeconds() - cpu0;
    held.clear();
    return run;
  };
  auto swap_run = [&](int64_t version, WeightSnapshot snapshot, int actors, bool at_publish,
                      bool recycle) {
    return swap_run_on(store, address, version, std::move(snapshot), actors, at_publish, recycle);
  };
  auto told = [](bool at_publish) { return at_publish ? "at_publish" : "when_visible"; };
  // Version 1 (the real step's delta) to 8 actors at once, told at publish;
  // version 2 (version 0's bytes: the same delta backwards) to 8 told when
  // visible, which also measures the store's CPU time alone.
  WeightSnapshot again = CopySnapshot(next);  // version 1's bytes, for later versions
  SwapRun eight = swap_run(1, std::move(next), 8, true, true);
  auto v1 = store.Get(1);
  std::printf(
      "{\"delta\": \"bf16, AdamW first update lr 1e-6 on N(0, 0.02) fp32 master weights\", "
      "\"changed_element_fraction\": %.4f, \"full_bytes\": %lld, \"delta_bytes\": %lld, "
      "\"delta_ratio\": %.4f}\n",
      static_cast<double>(changed) / elements, static_cast<long long>(v1->full_bytes),
      static_cast<long long>(v1->delta_bytes),
      static_cast<double>(v1->delta_bytes) / v1->full_bytes);
  base = AsHostWeights(*v1);
  v1.reset();
  SwapRun eight_visible = swap_run(2, CopySnapshot(v0->weights), 8, false, true);
  for (const SwapRun* r : {&eight, &eight_visible}) {
    const bool at_publish = r == &eight;
    std::printf(
        "{\"swap\": \"publish -> 8 actors fetched the delta into recycled buffers, verified it "
        "and handed it over\", \"told\": \"%s\", "
        "\"actors\": 8, \"store_threads\": %d, \"publish_s\": %.3f, \"publish_cpu_s\": %.3f, "
        "\"publish_to_all_swapped_s\": %.3f, \"cpu_seconds\": %.3f, "
        "\"cpu_seconds_per_client\": %.3f, %s}\n",
        told(at_publish), store_threads, r->publish_s, eight_visible.publish_cpu_s, r->total_s,
        r->cpu_s, (r->cpu_s - eight_visible.publish_cpu_s) / 8, StageJson(r->times).c_str());
  }
  std::fflush(stdout);
  // The same delta to one actor alone (what an actor on its own machine
  // waits), told at publish (version 3 = version 1's bytes against 2) and
  // when visible (4 = version 0's bytes against 3), into recycled buffers;
  // then told at publish into fresh buffers (5 = version 1's bytes).
  {
    base = AsHostWeights(*store.Get(2));
    SwapRun one = swap_run(3, CopySnapshot(again), 1, true, true);
    base = AsHostWeights(*store.Get(3));
    SwapRun one_visible = swap_run(4, CopySnapshot(v0->weights), 1, false, true);
    for (const SwapRun* r : {&one, &one_visible}) {
      const bool at_publish = r == &one;
      std::printf(
          "{\"swap_one_actor\": \"publish -> 1 actor fetched the delta into recycled buffers, "
          "verified it and handed it over\", \"told\": \"%s\", \"store_threads\": %d, "
          "\"publish_s\": %.3f, \"publish_cpu_s\": %.3f, \"publish_to_swapped_s\": %.3f, "
          "\"cpu_seconds\": %.3f, %s}\n",
          told(at_publish), store_threads, r->publish_s, one_visible.publish_cpu_s, r->total_s,
          r->cpu_s, StageJson(r->times).c_str());
    }
    std::fflush(stdout);
    base = AsHostWeights(*store.Get(4));
    SwapRun fresh = swap_run(5, std::move(again), 1, true, false);
    std::printf(
        "{\"swap_one_actor_fresh_buffers\": \"the same into fresh buffers (no version before "
        "last yet)\", \"told\": \"at_publish\", \"store_threads\": %d, \"publish_s\": %.3f, "
        "\"publish_to_swapped_s\": %.3f, \"cpu_seconds\": %.3f, %s}\n",
        store_threads, fresh.publish_s, fresh.total_s, fresh.cpu_s, StageJson(fresh.times).c_str());
  }
  // One actor whose fetch has a core of its own: a store with one worker
  // (WeightStoreOptions::threads = 1) on its own server, so the store and
  // the client each have one of this box's two cores, as the learner and
  // an actor on their own machines have theirs. Told at publish (version 1
  // = version 1's bytes against 0), then when visible (2 = version 0's).
  {
    WeightStore store1({.keep_versions = 2, .chunk_bytes = kChunk, .threads = 1});
    if (!store1.Publish(0, CopySnapshot(v0->weights)).ok() ||
        !store1.WaitPublished(0, absl::Minutes(5))) {
      return 1;
    }
    LearnerService service1(so, &store1);
    auto server1 = RpcServer::Start(server_options, {&service1});
    if (!server1.ok()) return 1;
    const std::string address1 = (*server1)->address();
    base = AsHostWeights(*v0);
    // Version 5 of the main store holds version 1's bytes.
    SwapRun own =
        swap_run_on(store1, address1, 1, CopySnapshot(store.Get(5)->weights), 1, true, true);
    base = AsHostWeights(*store1.Get(1));
    SwapRun own_visible =
        swap_run_on(store1, address1, 2, CopySnapshot(v0->weights), 1, false, true);
    for (const SwapRun* r : {&own, &own_visible}) {
      const bool at_publish = r == &own;
      std::printf(
          "{\"swap_one_actor_own_core\": \"the one-actor swap with one store worker and the "
          "client on the other core\", \"told\": \"%s\", \"store_threads\": 1, "
          "\"publish_s\": %.3f, \"publish_cpu_s\": %.3f, \"publish_to_swapped_s\": %.3f, "
          "\"cpu_seconds\": %.3f, %s}\n",
          told(at_publish), r->publish_s, own_visible.publish_cpu_s, r->total_s, r->cpu_s,
          StageJson(r->times).c_str());
    }
    std::fflush(stdout);
    (*server1)->Shutdown(absl::Seconds(2));
  }
  (*server)->Shutdown(absl::Seconds(2));
  return 0;
}

}  // namespace
}  // namespace cohort::learner

int main() {
  cohort::KeepLargeAllocations();  // as cohort-actor does (core/malloc_tuning.h)
  return cohort::learner::Main();
}
