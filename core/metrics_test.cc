#include "core/metrics.h"

#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

#include <httplib.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "core/testing/require.h"

namespace cohort {
namespace {

using ::testing::HasSubstr;

// A strict reader of the text format 0.0.4 as cohort writes it: every
// sample belongs to a family announced by HELP then TYPE; names and labels
// are well-formed; values parse. Returns sample name+labels -> value, and
// fails the test on any violation of the format or the naming rules.
std::map<std::string, double> ParseExposition(const std::string& text) {
  static const std::regex kHelp(R"(# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) (.*))");
  static const std::regex kType(R"(# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram))");
  static const std::regex kSample(
      R"re(([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\\n]|\\["\\n])*",?)*\})? (\S+))re");
  std::map<std::string, double> samples;
  std::map<std::string, std::string> types;
  std::string help_for, family;
  std::istringstream in(text);
  std::string line;
  int n = 0;
  while (std::getline(in, line)) {
    ++n;
    std::smatch m;
    if (std::regex_match(line, m, kHelp)) {
      help_for = m[1];
      EXPECT_FALSE(types.count(help_for)) << "family repeated: " << line;
      continue;
    }
    if (std::regex_match(line, m, kType)) {
      EXPECT_EQ(m[1], help_for) << "TYPE without HELP at line " << n;
      family = m[1];
      types[family] = m[2];
      EXPECT_EQ(family.rfind("cohort_", 0), 0u) << family;
      if (m[2] == "counter") {
        EXPECT_TRUE(family.size() > 6 && family.substr(family.size() - 6) == "_total") << family;
      }
      continue;
    }
    if (!std::regex_match(line, m, kSample)) {
      ADD_FAILURE() << "line " << n << " is not a sample: " << line;
      continue;
    }
    std::string name = m[1];
    EXPECT_FALSE(family.empty()) << "sample before any TYPE: " << line;
    if (types[family] == "histogram") {
      EXPECT_TRUE(name == family + "_bucket" || name == family + "_sum" ||
                  name == family + "_count")
          << line;
    } else {
      EXPECT_EQ(name, family) << line;
    }
    std::string value = m[m.size() - 1];
    double v = value == "+Inf" ? HUGE_VAL : value == "-Inf" ? -HUGE_VAL : std::stod(value);
    samples[name + m[2].str()] = v;
  }
  return samples;
}

TEST(MetricsTest, RendersTextFormat) {
  MetricsRegistry registry;
  registry.GetCounter("cohort_test_requests_total", "Requests.", {{"method", "Score"}})
      ->Increment(3);
  registry.GetGauge("cohort_test_queue_depth", "Queued items.\nSecond line \\.")->Set(-2.5);
  Histogram* h = registry.GetHistogram("cohort_test_latency_seconds", "Latency.", {0.1, 1, 10},
                                       {{"task", "math"}});
  h->Observe(0.05);
  h->Observe(0.1);  // bounds are inclusive
  h->Observe(5);
  h->Observe(100);
  EXPECT_EQ(registry.Render(),
            "# HELP cohort_test_latency_seconds Latency.\n"
            "# TYPE cohort_test_latency_seconds histogram\n"
            "cohort_test_latency_seconds_bucket{task=\"math\",le=\"0.1\"} 2\n"
            "cohort_test_latency_seconds_bucket{task=\"math\",le=\"1\"} 2\n"
            "cohort_test_latency_seconds_bucket{task=\"math\",le=\"10\"} 3\n"
            "cohort_test_latency_seconds_bucket{task=\"math\",le=\"+Inf\"} 4\n"
            "cohort_test_latency_seconds_sum{task=\"math\"} 105.15\n"
            "cohort_test_latency_seconds_count{task=\"math\"} 4\n"
            "# HELP cohort_test_queue_depth Queued items.\\nSecond line \\\\.\n"
            "# TYPE cohort_test_queue_depth gauge\n"
            "cohort_test_queue_depth -2.5\n"
            "# HELP cohort_test_requests_total Requests.\n"
            "# TYPE cohort_test_requests_total counter\n"
            "cohort_test_requests_total{method=\"Score\"} 3\n");
  EXPECT_EQ(h->Count(), 4u);
}

TEST(MetricsTest, LabelsAreEscapedAndOrderFree) {
  MetricsRegistry registry;
  Counter* a = registry.GetCounter("cohort_test_events_total", "Events.",
                                   {{"b", "x"}, {"a", "quote\" back\\ nl\n"}});
  Counter* b = registry.GetCounter("cohort_test_events_total", "Events.",
                                   {{"a", "quote\" back\\ nl\n"}, {"b", "x"}});
  Counter* c = registry.GetCounter("cohort_test_events_total", "Events.", {{"b", "y"}});
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  a->Increment();
  std::string text = registry.Render();
  EXPECT_THAT(text,
              HasSubstr("cohort_test_events_total{a=\"quote\\\" back\\\\ nl\\n\",b=\"x\"} 1\n"));
  auto samples = ParseExposition(text);
  EXPECT_EQ(samples.size(), 2u);
}

TEST(MetricsTest, ProcessMetricsAndParse) {
  MetricsRegistry* registry = MetricsRegistry::Default();
  registry
      ->GetHistogram("cohort_test_tokens", "Tokens per sample.",
                     Histogram::ExponentialBuckets(1, 2, 12))
      ->Observe(300);
  auto samples = ParseExposition(registry->Render());
  ASSERT_TRUE(samples.count("cohort_process_resident_memory_bytes"));
  EXPECT_GT(samples["cohort_process_resident_memory_bytes"], 1e6);
  double start = samples["cohort_process_start_time_seconds"];
  double now = static_cast<double>(time(nullptr));
  EXPECT_GT(start, now - 3600);
  EXPECT_LE(start, now + 1);
  EXPECT_TRUE(samples.count("cohort_process_cpu_seconds_total"));
  EXPECT_GT(samples["cohort_process_open_fds"], 2);
  EXPECT_EQ(samples["cohort_test_tokens_bucket{le=\"512\"}"], 1);
  EXPECT_EQ(samples["cohort_test_tokens_bucket{le=\"256\"}"], 0);
}

TEST(MetricsDeathTest, NamingRulesAreChecked) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  MetricsRegistry registry;
  EXPECT_DEATH(registry.GetCounter("cohort_requests", "x"), "must end in _total");
  EXPECT_DEATH(registry.GetGauge("requests_inflight", "x"), "must start with cohort_");
  EXPECT_DEATH(registry.GetGauge("cohort_x_total", "x"), "must not end in _total");
  EXPECT_DEATH(registry.GetGauge("cohort-x", "x"), "invalid metric name");
  EXPECT_DEATH(registry.GetGauge("cohort_x", "x", {{"bad-label", "v"}}), "invalid label name");
  EXPECT_DEATH(registry.GetHistogram("cohort_x_seconds", "x", {1}, {{"le", "1"}}), "reserved");
  EXPECT_DEATH(registry.GetHistogram("cohort_x_seconds", "x", {2, 1}), "increase strictly");
  registry.GetGauge("cohort_x", "x");
  EXPECT_DEATH(registry.GetCounter("cohort_x", "x"), "registered as gauge");
  EXPECT_DEATH(registry.GetGauge("cohort_x", "other help"), "another help text");
  Counter* counter = registry.GetCounter("cohort_y_total", "y");
  EXPECT_DEATH(counter->Increment(-1), "must be >= 0");
}

TEST(MetricsTest, ConcurrentUpdatesAndRenders) {
  MetricsRegistry registry;
  constexpr int kThreads = 8;
  constexpr int kPerThread = 20000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&registry, t] {
      Counter* shared = registry.GetCounter("cohort_test_ops_total", "Ops.");
      Counter* own = registry.GetCounter("cohort_test_ops_by_thread_total", "Ops by thread.",
                                         {{"thread", std::to_string(t)}});
      Gauge* gauge = registry.GetGauge("cohort_test_level", "Level.");
      Histogram* h = registry.GetHistogram("cohort_test_size_bytes", "Size.", {10, 100});
      for (int i = 0; i < kPerThread; ++i) {
        shared->Increment();
        own->Increment(0.5);
        gauge->Add(1);
        h->Observe(i % 200);
        if (i % 5000 == 0) ParseExposition(registry.Render());
      }
    });
  }
  for (auto& t : threads) t.join();
  auto samples = ParseExposition(registry.Render());
  EXPECT_EQ(samples["cohort_test_ops_total"], kThreads * kPerThread);
  EXPECT_EQ(samples["cohort_test_ops_by_thread_total{thread=\"3\"}"], kPerThread * 0.5);
  EXPECT_EQ(samples["cohort_test_level"], kThreads * kPerThread);
  EXPECT_EQ(samples["cohort_test_size_bytes_count"], kThreads * kPerThread);
  // 0..10 of each 200: 11 values; kPerThread / 200 cycles per thread.
  EXPECT_EQ(samples["cohort_test_size_bytes_bucket{le=\"10\"}"],
            kThreads * (kPerThread / 200) * 11);
}

TEST(MetricsServerTest, ServesMetricsAndHealthOverHttp) {
  MetricsRegistry registry;
  registry.GetCounter("cohort_test_scrapes_total", "Scrapes.")->Increment(7);
  auto server = MetricsServer::Start("127.0.0.1", 0, &registry);
  ASSERT_TRUE(server.ok()) << server.status();
  int port = (*server)->port();
  ASSERT_GT(port, 0);

  httplib::Client client("127.0.0.1", port);
  auto res = client.Get("/metrics");
  ASSERT_TRUE(res) << httplib::to_string(res.error());
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(res->get_header_value("Content-Type"), "text/plain; version=0.0.4; charset=utf-8");
  EXPECT_THAT(res->body, HasSubstr("cohort_test_scrapes_total 7\n"));
  ParseExposition(res->body);
  auto health = client.Get("/healthz");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
  EXPECT_EQ(health->body, "ok\n");
  EXPECT_EQ(client.Get("/nope")->status, 404);

  // The same port cannot be bound twice.
  auto second = MetricsServer::Start("127.0.0.1", port, &registry);
  EXPECT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);

  (*server)->Stop();
  (*server)->Stop();  // idempotent
  httplib::Client after("127.0.0.1", port);
  after.set_connection_timeout(1);
  EXPECT_FALSE(after.Get("/metrics"));
}

TEST(MetricsServerTest, StopRightAfterStart) {
  MetricsRegistry registry;
  for (int i = 0; i < 5; ++i) {
    auto server = MetricsServer::Start("127.0.0.1", 0, &registry);
    ASSERT_TRUE(server.ok()) << server.status();
  }  // destructors stop
}

TEST(MetricsTest, PromtoolAcceptsExposition) {
  const char* promtool = "/usr/bin/promtool";
  if (access(promtool, X_OK) != 0) {
    COHORT_SKIP_OR_FAIL("promtool not installed (Debian package prometheus); skipping the check");
  }
  MetricsRegistry* registry = MetricsRegistry::Default();
  registry->GetCounter("cohort_test_promtool_samples_total", "Samples.", {{"task", "a\"b"}})
      ->Increment();
  registry->GetHistogram("cohort_test_promtool_latency_seconds", "Latency.", {0.5, 1})
      ->Observe(0.7);
  registry->GetGauge("cohort_test_promtool_bytes", "Bytes.")->Set(1e300);
  std::string path = testing::TempDir() + "/metrics.txt";
  std::ofstream(path) << registry->Render();
  std::string command = std::string(promtool) + " check metrics < " + path + " 2>&1";
  FILE* pipe = popen(command.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string output;
  char buf[512];
  while (size_t n = fread(buf, 1, sizeof(buf), pipe)) output.append(buf, n);
  int rc = pclose(pipe);
  EXPECT_EQ(rc, 0) << output;
}

}  // namespace
}  // namespace cohort
