// report.html. See report.h.
#include "core/report.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/file.h"
#include "core/status.h"

namespace cohort {
namespace {

using Json = nlohmann::json;

struct Series {
  std::string label;
  std::vector<std::pair<double, double>> points;  // (x, y)
};

struct Chart {
  std::string title;
  std::string unit;
  std::vector<Series> series;
};

std::string Escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

bool Number(const Json& j, const std::string& key, double* v) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_number()) return false;
  *v = it->get<double>();
  return std::isfinite(*v);
}

// The first of `keys` present as a number.
bool AnyNumber(const Json& j, const std::vector<std::string>& keys, double* v) {
  for (const auto& k : keys) {
    if (Number(j, k, v)) return true;
  }
  return false;
}

const std::vector<std::string>& TimeKeys() {
  static const auto* k = new std::vector<std::string>{"time_s", "elapsed_s", "wall_time"};
  return *k;
}

// x of a line: its step, or seconds since the first line that has a time.
bool X(const Json& j, bool over_time, double t0, double* x) {
  if (!over_time) return Number(j, "step", x);
  if (!AnyNumber(j, TimeKeys(), x)) return false;
  *x -= t0;
  return true;
}

double FirstTime(const std::vector<Json>& a, const std::vector<Json>& b) {
  double t0 = HUGE_VAL, t;
  for (const auto* v : {&a, &b}) {
    for (const Json& j : *v) {
      if (AnyNumber(j, TimeKeys(), &t)) t0 = std::min(t0, t);
    }
  }
  // Relative times ("time_s") start at 0 already; epoch times are shifted.
  return t0 == HUGE_VAL || t0 < 1e8 ? 0.0 : t0;
}

Series Collect(const std::vector<Json>& lines, const std::string& label,
               const std::vector<std::string>& keys, bool over_time, double t0) {
  Series s{label, {}};
  for (const Json& j : lines) {
    double x, y;
    if (X(j, over_time, t0, &x) && AnyNumber(j, keys, &y)) s.points.push_back({x, y});
  }
  return s;
}

std::vector<Chart> BuildCharts(const ReportData& d, bool over_time) {
  const double t0 = FirstTime(d.metrics, d.evals);
  std::vector<Chart> charts;
  auto single = [&](const std::string& title, const std::string& unit,
                    const std::vector<std::string>& keys) {
    Chart c{title, unit, {}};
    c.series.push_back(Collect(d.metrics, title, keys, over_time, t0));
    return c;
  };
  charts.push_back(single("reward mean", "", {"reward_mean", "reward/mean", "reward"}));
  Chart acc{"accuracy", "fraction", {}};
  acc.series.push_back(
      Collect(d.metrics, "training samples", {"accuracy", "accuracy_mean"}, over_time, t0));
  acc.series.push_back(Collect(d.evals, "held-out greedy", {"accuracy"}, over_time, t0));
  acc.series.push_back(Collect(d.evals, "held-out sampled", {"sampled_accuracy"}, over_time, t0));
  charts.push_back(acc);
  charts.push_back(single("KL to reference", "nats/token", {"kl", "kl_mean"}));
  charts.push_back(single("response length", "tokens",
                          {"response_length_mean", "completion_length", "mean_length"}));
  charts.push_back(single("staleness", "versions", {"staleness_mean", "staleness"}));
  // Throughput per actor.
  Chart tput{"throughput per actor", "tokens/s", {}};
  std::map<std::string, Series> per_actor;
  for (const Json& j : d.metrics) {
    double x;
    if (!X(j, over_time, t0, &x)) continue;
    for (auto it = j.begin(); it != j.end(); ++it) {
      const std::string& k = it.key();
      if (absl::StartsWith(k, "actor/") && absl::EndsWith(k, "/tokens_per_s") && it->is_number()) {
        std::string name = k.substr(6, k.size() - 6 - 13);
        per_actor[name].label = name;
        per_actor[name].points.push_back({x, it->get<double>()});
      }
    }
    if (j.contains("actors") && j["actors"].is_object()) {
      for (auto it = j["actors"].begin(); it != j["actors"].end(); ++it) {
        if (!it->is_number()) continue;
        per_actor[it.key()].label = it.key();
        per_actor[it.key()].points.push_back({x, it->get<double>()});
      }
    }
  }
  for (auto& [name, s] : per_actor) tput.series.push_back(std::move(s));
  if (tput.series.empty()) {
    tput.series.push_back(
        Collect(d.metrics, "generated", {"tokens_per_s_generated"}, over_time, t0));
  }
  charts.push_back(tput);
  // Idle fractions.
  Chart idle{"idle fraction", "fraction", {}};
  std::map<std::string, Series> idles;
  for (const Json& j : d.metrics) {
    double x;
    if (!X(j, over_time, t0, &x)) continue;
    for (auto it = j.begin(); it != j.end(); ++it) {
      if (absl::EndsWith(it.key(), "idle_fraction") && it->is_number()) {
        idles[it.key()].label = it.key();
        idles[it.key()].points.push_back({x, it->get<double>()});
      }
    }
  }
  for (auto& [name, s] : idles) idle.series.push_back(std::move(s));
  charts.push_back(idle);
  return charts;
}

const char* const kColors[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e",
                               "#9467bd", "#8c564b", "#e377c2", "#17becf"};

std::string Num(double v) {
  if (v == 0) return "0";
  double a = std::fabs(v);
  if (a >= 1e4 || a < 1e-2) return absl::StrFormat("%.2g", v);
  if (a >= 100) return absl::StrFormat("%.0f", v);
  return absl::StrFormat("%.3g", v);
}

bool HasPoints(const Chart& c) {
  for (const auto& s : c.series) {
    if (!s.points.empty()) return true;
  }
  return false;
}

std::string RenderChart(const Chart& c, const std::string& xlabel) {
  const double W = 420, H = 220, L = 52, R = 10, T = 24, B = 36;
  std::string out = absl::StrFormat(
      "<svg class=\"chart\" width=\"%.0f\" height=\"%.0f\" viewBox=\"0 0 %.0f %.0f\" "
      "xmlns=\"http://www.w3.org/2000/svg\" role=\"img\" aria-label=\"%s\">",
      W, H, W, H, Escape(c.title));
  absl::StrAppend(&out, "<text x=\"", L, "\" y=\"15\" class=\"title\">", Escape(c.title),
                  c.unit.empty() ? "" : " (" + Escape(c.unit) + ")", "</text>");
  if (!HasPoints(c)) {
    absl::StrAppend(&out, "<text x=\"", W / 2, "\" y=\"", H / 2,
                    "\" text-anchor=\"middle\" class=\"empty\">no data</text></svg>");
    return out;
  }
  double x0 = HUGE_VAL, x1 = -HUGE_VAL, y0 = HUGE_VAL, y1 = -HUGE_VAL;
  for (const auto& s : c.series) {
    for (auto [x, y] : s.points) {
      x0 = std::min(x0, x), x1 = std::max(x1, x), y0 = std::min(y0, y), y1 = std::max(y1, y);
    }
  }
  if (y0 > 0 && y0 < 0.5 * y1) y0 = 0;
  if (x1 <= x0) x1 = x0 + 1;
  if (y1 <= y0) y1 = y0 + (y0 == 0 ? 1 : std::fabs(y0) * 0.1);
  auto px = [&](double x) { return L + (x - x0) / (x1 - x0) * (W - L - R); };
  auto py = [&](double y) { return H - B - (y - y0) / (y1 - y0) * (H - T - B); };
  absl::StrAppend(&out, "<rect x=\"", L, "\" y=\"", T, "\" width=\"", W - L - R, "\" height=\"",
                  H - T - B, "\" class=\"frame\"/>");
  for (int i = 0; i <= 4; ++i) {
    double y = y0 + (y1 - y0) * i / 4, x = x0 + (x1 - x0) * i / 4;
    absl::StrAppend(&out, "<line x1=\"", L, "\" x2=\"", W - R, "\" y1=\"", py(y), "\" y2=\"", py(y),
                    "\" class=\"grid\"/>");
    absl::StrAppend(&out, "<text x=\"", L - 4, "\" y=\"", py(y) + 4,
                    "\" text-anchor=\"end\" class=\"tick\">", Num(y), "</text>");
    absl::StrAppend(&out, "<text x=\"", px(x), "\" y=\"", H - B + 14,
                    "\" text-anchor=\"middle\" class=\"tick\">", Num(x), "</text>");
  }
  absl::StrAppend(&out, "<text x=\"", (L + W - R) / 2, "\" y=\"", H - 4,
                  "\" text-anchor=\"middle\" class=\"tick\">", Escape(xlabel), "</text>");
  int color = 0, legend = 0;
  for (const auto& s : c.series) {
    const char* col = kColors[color++ % 8];
    if (s.points.empty()) continue;
    std::string pts;
    for (auto [x, y] : s.points) absl::StrAppend(&pts, absl::StrFormat("%.1f,%.1f ", px(x), py(y)));
    absl::StrAppend(&out, "<polyline class=\"series\" fill=\"none\" stroke=\"", col,
                    "\" stroke-width=\"1.6\" points=\"", pts, "\"/>");
    if (s.points.size() <= 30) {
      for (auto [x, y] : s.points) {
        absl::StrAppend(
            &out, absl::StrFormat("<circle cx=\"%.1f\" cy=\"%.1f\" r=\"2\" fill=\"%s\"/>", px(x),
                                  py(y), col));
      }
    }
    if (c.series.size() > 1) {
      absl::StrAppend(&out, "<text x=\"", W - R - 4, "\" y=\"", T + 14 + 13 * legend++,
                      "\" text-anchor=\"end\" class=\"legend\" fill=\"", col, "\">",
                      Escape(s.label), "</text>");
    }
  }
  out += "</svg>";
  return out;
}

std::string Fraction(const Json& j, const char* key) {
  double v;
  return Number(j, key, &v) ? absl::StrFormat("%.1f%%", 100 * v) : "–";
}

std::string Plain(const Json& j, const char* key) {
  double v;
  return Number(j, key, &v) ? Num(v) : "–";
}

std::string StagesTable(const Json& summary) {
  if (!summary.contains("stages") || !summary["stages"].is_array()) return "";
  std::string out =
      "<h2>Stages</h2><table><tr><th>stage</th><th>kind</th><th>steps</th><th>seconds</th>"
      "<th>greedy accuracy before → after</th><th>sampled accuracy before → after</th>"
      "<th>format rate after</th><th>mean length after</th></tr>";
  for (const Json& s : summary["stages"]) {
    if (!s.is_object()) continue;
    Json before = s.value("eval_before", Json::object());
    Json after = s.value("eval_after", Json::object());
    absl::StrAppend(&out, "<tr><td>", Escape(s.value("name", "")), "</td><td>",
                    Escape(s.value("kind", "")), "</td><td>", Plain(s, "steps"), "</td><td>",
                    Plain(s, "duration_s"), "</td><td>", Fraction(before, "accuracy"), " → ",
                    Fraction(after, "accuracy"), "</td><td>", Fraction(before, "sampled_accuracy"),
                    " → ", Fraction(after, "sampled_accuracy"), "</td><td>",
                    Fraction(after, "format_rate"), "</td><td>", Plain(after, "mean_length"),
                    "</td></tr>");
  }
  return out + "</table>";
}

std::string LedgerTable(const Json& summary) {
  if (!summary.contains("ledger") || !summary["ledger"].is_object()) return "";
  std::string out = "<h2>Prompt ledger</h2><table><tr>";
  std::string row = "<tr>";
  for (auto it = summary["ledger"].begin(); it != summary["ledger"].end(); ++it) {
    absl::StrAppend(&out, "<th>", Escape(it.key()), "</th>");
    absl::StrAppend(&row, "<td>", Escape(it->is_string() ? it->get<std::string>() : it->dump()),
                    "</td>");
  }
  return out + "</tr>" + row + "</tr></table>";
}

std::string Completions(const std::vector<Json>& evals) {
  std::string out;
  for (const Json& e : evals) {
    if (!e.contains("completions") || !e["completions"].is_array() || e["completions"].empty()) {
      continue;
    }
    absl::StrAppend(&out, "<h3>", Escape(e.value("stage", "")), " step ", Plain(e, "step"),
                    ": greedy ", Fraction(e, "accuracy"), ", sampled ",
                    Fraction(e, "sampled_accuracy"), ", format ", Fraction(e, "format_rate"),
                    "</h3><table class=\"samples\"><tr><th>prompt</th><th>completion</th>"
                    "<th></th></tr>");
    for (const Json& c : e["completions"]) {
      if (!c.is_object()) continue;
      bool ok = c.value("correct", false);
      absl::StrAppend(&out, "<tr><td><code>", Escape(c.value("prompt", "")),
                      "</code></td><td><code>", Escape(c.value("completion", "")),
                      "</code></td><td>", ok ? "✓" : "✗", "</td></tr>");
    }
    out += "</table>";
  }
  return out.empty() ? "" : "<h2>Sampled completions at each held-out eval</h2>" + out;
}

constexpr char kStyle[] = R"(<style>
body{font-family:system-ui,sans-serif;margin:24px;color:#222;background:#fff}
h1{font-size:22px}h2{font-size:17px;margin-top:28px}h3{font-size:14px}
.row{display:flex;flex-wrap:wrap;gap:12px}
svg.chart{border:1px solid #ddd;background:#fcfcfc}
.title{font-size:13px;font-weight:600}.tick{font-size:10px;fill:#555}
.legend{font-size:10px}.empty{font-size:12px;fill:#999}
.frame{fill:none;stroke:#bbb}.grid{stroke:#eee}
table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ddd;padding:3px 6px}
code{font-size:11px;white-space:pre-wrap;word-break:break-all}
</style>)";

// Counts the chart lines the browser drew into body[data-charts-drawn].
constexpr char kCheckScript[] = R"(<script>
window.addEventListener('load',function(){var n=0;
document.querySelectorAll('svg.chart').forEach(function(svg){
var drawn=false;svg.querySelectorAll('polyline.series').forEach(function(p){
var b=p.getBBox();if(b.width>0||b.height>0)drawn=true;});if(drawn)n++;});
document.body.setAttribute('data-charts-drawn',String(n));});
</script>)";

}  // namespace

int CountDrawnCharts(const ReportData& data) {
  int n = 0;
  for (bool over_time : {false, true}) {
    for (const Chart& c : BuildCharts(data, over_time)) n += HasPoints(c);
  }
  return n;
}

std::string RenderReport(const ReportData& data) {
  std::string out = "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>" +
                    Escape(data.title) + "</title>" + kStyle + "</head><body>";
  absl::StrAppend(&out, "<h1>", Escape(data.title), "</h1>");
  if (data.summary.contains("git_revision") && data.summary["git_revision"].is_string()) {
    absl::StrAppend(&out, "<p>revision <code>",
                    Escape(data.summary["git_revision"].get<std::string>()), "</code></p>");
  }
  out += StagesTable(data.summary);
  for (bool over_time : {false, true}) {
    absl::StrAppend(&out, "<h2>Over ", over_time ? "time" : "steps", "</h2><div class=\"row\">");
    for (const Chart& c : BuildCharts(data, over_time)) {
      out += RenderChart(c, over_time ? "seconds" : "step");
    }
    out += "</div>";
  }
  out += LedgerTable(data.summary);
  out += Completions(data.evals);
  out += kCheckScript;
  out += "</body></html>\n";
  return out;
}

absl::Status WriteReport(const std::string& run_dir) {
  ReportData data;
  int bad = 0;
  auto read_lines = [&](const std::string& path, std::vector<Json>* out) {
    std::ifstream in(path);
    std::string line;
    while (std::getline(in, line)) {
      if (line.empty()) continue;
      Json j = Json::parse(line, nullptr, /*allow_exceptions=*/false);
      if (j.is_object()) {
        out->push_back(std::move(j));
      } else {
        ++bad;
      }
    }
  };
  read_lines(run_dir + "/metrics.jsonl", &data.metrics);
  read_lines(run_dir + "/evals.jsonl", &data.evals);
  if (PathExists(run_dir + "/summary.json")) {
    ASSIGN_OR_RETURN(std::string text, ReadFile(run_dir + "/summary.json"));
    Json j = Json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (j.is_object()) data.summary = std::move(j);
  }
  if (data.summary.contains("name") && data.summary["name"].is_string()) {
    data.title = "cohort run: " + data.summary["name"].get<std::string>();
  }
  std::string html = RenderReport(data);
  if (bad > 0) {
    html.insert(html.find("</h1>") + 5,
                absl::StrCat("<p>", bad, " malformed JSONL lines were skipped.</p>"));
  }
  return WriteFileAtomically(run_dir + "/report.html", html);
}

}  // namespace cohort
