// Arithmetic on literal numeric matrices in an answer: sums, differences,
// scalar multiples, products and transposes ("A + B", "2A", "AB", "A^T").
//
// Bounds: at most kMaxItems entries per matrix (operands and results), at
// most kMaxFactors matrices and scalars in all; each product costs at most
// rows x inner x cols <= kMaxItems^2 multiplications.
#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include "reward_server/verifiers/answer_value.h"
#include "reward_server/verifiers/extract.h"

namespace cohort::reward::answer {
namespace {

constexpr int kMaxFactors = 32;

struct Num {
  bool matrix = false;
  int rows = 1, cols = 1;
  std::vector<Complex> v{Complex(1, 0)};
};

bool IsMatrixEnv(std::string_view env) {
  return env == "pmatrix" || env == "bmatrix" || env == "matrix" || env == "Bmatrix" ||
         env == "smallmatrix" || env == "array";
}

std::optional<Complex> Constant(std::string_view text) {
  auto e = Expression::Parse(text);
  if (!e || e->has_variables()) return std::nullopt;
  Complex z = e->Evaluate({});
  if (!std::isfinite(z.real()) || !std::isfinite(z.imag())) return std::nullopt;
  return z;
}

// A \begin{env}...\end{env} at s[i]; sets *end past it.
std::optional<Num> MatrixLiteral(std::string_view s, std::size_t i, std::size_t* end,
                                 std::string* why) {
  std::size_t close = s.find('}', i);
  if (close == std::string_view::npos) return std::nullopt;
  std::string_view env = s.substr(i + 7, close - i - 7);
  if (!IsMatrixEnv(env)) return std::nullopt;
  std::string end_tag = "\\end{" + std::string(env) + "}";
  std::size_t stop = s.find(end_tag, close);
  if (stop == std::string_view::npos) return std::nullopt;
  std::string_view body = TrimAscii(s.substr(close + 1, stop - close - 1));
  if (body.find("\\begin{") != std::string_view::npos) return std::nullopt;
  if (env == "array" && !body.empty() && body[0] == '{') {
    std::size_t spec_end = body.find('}');
    if (spec_end == std::string_view::npos) return std::nullopt;
    body = TrimAscii(body.substr(spec_end + 1));
  }
  *end = stop + end_tag.size();
  Num m;
  m.matrix = true;
  m.v.clear();
  std::vector<std::string_view> rows = SplitTopLevel(body, "\\\\");
  while (!rows.empty() && TrimAscii(rows.back()).empty()) rows.pop_back();
  m.rows = static_cast<int>(rows.size());
  m.cols = 0;
  for (std::string_view row : rows) {
    std::vector<std::string_view> cells = SplitTopLevel(row, "&");
    if (m.cols == 0) m.cols = static_cast<int>(cells.size());
    if (static_cast<int>(cells.size()) != m.cols || m.v.size() + cells.size() > kMaxItems) {
      *why = "ragged or too large matrix";
      return std::nullopt;
    }
    for (std::string_view cell : cells) {
      auto z = Constant(cell);
      if (!z) return std::nullopt;  // symbolic entries: not arithmetic we do
      m.v.push_back(*z);
    }
  }
  if (m.rows == 0 || m.cols == 0) return std::nullopt;
  return m;
}

std::optional<Num> Multiply(const Num& a, const Num& b, std::string* why) {
  if (!a.matrix || !b.matrix) {
    const Num& m = a.matrix ? a : b;
    Complex c = a.matrix ? b.v[0] : a.v[0];
    Num r = m;
    for (Complex& z : r.v) z *= c;
    return r;
  }
  if (a.cols != b.rows) {
    *why = "matrix product of incompatible shapes";
    return std::nullopt;
  }
  if (static_cast<std::size_t>(a.rows) * b.cols > kMaxItems) {
    *why = "matrix product too large";
    return std::nullopt;
  }
  Num r;
  r.matrix = true;
  r.rows = a.rows;
  r.cols = b.cols;
  r.v.assign(static_cast<std::size_t>(r.rows) * r.cols, Complex(0, 0));
  for (int i = 0; i < a.rows; ++i) {
    for (int j = 0; j < b.cols; ++j) {
      Complex acc(0, 0);
      for (int k = 0; k < a.cols; ++k) acc += a.v[i * a.cols + k] * b.v[k * b.cols + j];
      r.v[i * r.cols + j] = acc;
    }
  }
  return r;
}

Num Transpose(const Num& m) {
  Num r = m;
  r.rows = m.cols;
  r.cols = m.rows;
  for (int i = 0; i < m.rows; ++i) {
    for (int j = 0; j < m.cols; ++j) r.v[j * r.cols + i] = m.v[i * m.cols + j];
  }
  return r;
}

bool SkipOperator(std::string_view s, std::size_t* i) {
  for (std::string_view op :
       {std::string_view("\\cdot"), std::string_view("\\times"), std::string_view("*")}) {
    if (s.compare(*i, op.size(), op) == 0) {
      *i += op.size();
      return true;
    }
  }
  return false;
}

}  // namespace

std::optional<Value> AnalyzeMatrixExpression(std::string_view s, std::string* why) {
  std::vector<Num> terms;
  Num term;  // the product so far (starts as the scalar 1)
  bool have_factor = false;
  bool any_matrix = false;
  int sign = 1;
  int factors = 0;
  auto finish_term = [&]() -> bool {
    if (!have_factor) return false;
    for (Complex& z : term.v) z *= static_cast<double>(sign);
    terms.push_back(std::move(term));
    term = Num();
    have_factor = false;
    sign = 1;
    return true;
  };
  auto push = [&](const Num& f) -> bool {
    if (++factors > kMaxFactors) {
      *why = "matrix expression too long";
      return false;
    }
    auto r = Multiply(term, f, why);
    if (!r) return false;
    term = std::move(*r);
    have_factor = true;
    return true;
  };
  std::size_t i = 0;
  while (i < s.size()) {
    char c = s[i];
    if (c == ' ') {
      ++i;
      continue;
    }
    if ((c == '+' || c == '-') && have_factor) {
      if (!finish_term()) return std::nullopt;
      sign = c == '-' ? -1 : 1;
      ++i;
      continue;
    }
    if (c == '-' && !have_factor) {
      sign = -sign;
      ++i;
      continue;
    }
    if (SkipOperator(s, &i)) continue;
    if (s.compare(i, 7, "\\begin{") == 0) {
      std::size_t end = 0;
      auto m = MatrixLiteral(s, i, &end, why);
      if (!m) return std::nullopt;
      i = end;
      while (i < s.size() && s[i] == ' ') ++i;
      for (std::string_view t : {std::string_view("^{T}"), std::string_view("^T"),
                                 std::string_view("^{\\top}"), std::string_view("^\\top")}) {
        if (s.compare(i, t.size(), t) == 0) {
          *m = Transpose(*m);
          i += t.size();
          break;
        }
      }
      any_matrix = true;
      if (!push(*m)) return std::nullopt;
      continue;
    }
    // A scalar: up to the next matrix, top-level + or -, or operator.
    std::size_t start = i;
    int depth = 0;
    while (i < s.size()) {
      char d = s[i];
      if (d == '(' || d == '[' || d == '{') ++depth;
      if (d == ')' || d == ']' || d == '}') --depth;
      if (depth == 0 && i > start &&
          (d == '+' || d == '-' || s.compare(i, 7, "\\begin{") == 0 ||
           s.compare(i, 5, "\\cdot") == 0 || s.compare(i, 6, "\\times") == 0 || d == '*')) {
        break;
      }
      ++i;
    }
    auto z = Constant(s.substr(start, i - start));
    if (!z) return std::nullopt;
    Num scalar;
    scalar.v = {*z};
    if (!push(scalar)) return std::nullopt;
  }
  if (!finish_term() || !any_matrix) return std::nullopt;
  Num sum = terms[0];
  for (std::size_t k = 1; k < terms.size(); ++k) {
    const Num& t = terms[k];
    if (!t.matrix || !sum.matrix || t.rows != sum.rows || t.cols != sum.cols) {
      *why = "matrix sum of incompatible shapes";
      return std::nullopt;
    }
    for (std::size_t e = 0; e < sum.v.size(); ++e) sum.v[e] += t.v[e];
  }
  if (!sum.matrix) return std::nullopt;
  Value v;
  v.kind = Value::Kind::kMatrix;
  v.rows = sum.rows;
  v.cols = sum.cols;
  for (Complex z : sum.v) {
    Value item;
    item.kind = Value::Kind::kScalar;
    item.points[0] = z;
    char buf[64];
    std::snprintf(buf, sizeof buf, "#%.17g,%.17g", z.real(), z.imag());
    item.key = buf;
    v.items.push_back(std::move(item));
  }
  return v;
}

}  // namespace cohort::reward::answer
