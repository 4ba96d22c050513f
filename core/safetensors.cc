#include "core/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/file.h"
#include "core/status.h"
#include "nlohmann/json.hpp"

namespace cohort::safetensors {
namespace {

using Json = nlohmann::json;
using OrderedJson = nlohmann::ordered_json;

std::string ShapeText(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

// product(shape) * dtype_size, or nullopt on overflow.
std::optional<uint64_t> ByteSize(const std::vector<int64_t>& shape, size_t dtype_size) {
  uint64_t n = dtype_size;
  for (int64_t d : shape) {
    if (d < 0) return std::nullopt;
    if (__builtin_mul_overflow(n, static_cast<uint64_t>(d), &n)) return std::nullopt;
  }
  return n;
}

absl::Status Invalid(std::string_view what) {
  return absl::InvalidArgumentError(std::string(what));
}

uint64_t ReadLe64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

void WriteLe64(uint64_t v, char* out) {
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((v >> (8 * i)) & 0xff);
}

absl::Status ParseEntry(const std::string& name, const Json& value, uint64_t data_size,
                        HeaderEntry* entry) {
  auto err = [&](const std::string& what) {
    return Invalid(absl::StrCat("tensor '", name, "': ", what));
  };
  if (!value.is_object()) return err("entry is not a JSON object");
  entry->name = name;

  auto dtype_it = value.find("dtype");
  if (dtype_it == value.end()) return err("missing \"dtype\"");
  if (!dtype_it->is_string()) return err("\"dtype\" is not a string");
  entry->dtype = dtype_it->get<std::string>();
  std::optional<size_t> dsize = DTypeSize(entry->dtype);
  if (!dsize) return err(absl::StrCat("unknown dtype '", entry->dtype, "'"));

  auto shape_it = value.find("shape");
  if (shape_it == value.end()) return err("missing \"shape\"");
  if (!shape_it->is_array()) return err("\"shape\" is not an array");
  for (const Json& d : *shape_it) {
    if (!d.is_number_unsigned() || d.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) {
      return err(absl::StrCat("\"shape\" has ", d.dump(), ", expected non-negative integers"));
    }
    entry->shape.push_back(static_cast<int64_t>(d.get<uint64_t>()));
  }

  auto off_it = value.find("data_offsets");
  if (off_it == value.end()) return err("missing \"data_offsets\"");
  if (!off_it->is_array() || off_it->size() != 2 || !(*off_it)[0].is_number_unsigned() ||
      !(*off_it)[1].is_number_unsigned()) {
    return err(absl::StrCat("\"data_offsets\" is ", off_it->dump(),
                            ", expected [begin, end] with non-negative integers"));
  }
  entry->begin = (*off_it)[0].get<uint64_t>();
  entry->end = (*off_it)[1].get<uint64_t>();
  if (entry->end < entry->begin) {
    return err(
        absl::StrCat("data_offsets [", entry->begin, ", ", entry->end, ") end before begin"));
  }
  std::optional<uint64_t> want = ByteSize(entry->shape, *dsize);
  if (!want) return err(absl::StrCat("shape ", ShapeText(entry->shape), " overflows"));
  if (*want != entry->end - entry->begin) {
    return err(absl::StrCat("shape ", ShapeText(entry->shape), " of ", entry->dtype, " needs ",
                            *want, " bytes but data_offsets [", entry->begin, ", ", entry->end,
                            ") span ", entry->end - entry->begin));
  }
  if (entry->end > data_size) {
    return err(absl::StrCat("data_offsets [", entry->begin, ", ", entry->end,
                            ") outside the data section of ", data_size,
                            " bytes (truncated file?)"));
  }
  return absl::OkStatus();
}

std::string ErrnoText() { return std::strerror(errno); }

bool SafeShardName(const std::string& name) {
  return !name.empty() && name.find('/') == std::string::npos && name != "." && name != "..";
}

}  // namespace

std::optional<size_t> DTypeSize(std::string_view dtype) {
  static const std::unordered_map<std::string_view, size_t> kSizes = {
      {"BOOL", 1}, {"U8", 1},  {"I8", 1},  {"F8_E5M2", 1}, {"F8_E4M3", 1},
      {"I16", 2},  {"U16", 2}, {"F16", 2}, {"BF16", 2},    {"I32", 4},
      {"U32", 4},  {"F32", 4}, {"F64", 8}, {"I64", 8},     {"U64", 8}};
  auto it = kSizes.find(dtype);
  if (it == kSizes.end()) return std::nullopt;
  return it->second;
}

absl::StatusOr<Header> ParseHeader(std::string_view text, uint64_t data_size) {
  // Top-level keys are collected during parsing: nlohmann::json keeps only
  // the last of duplicate keys, which would hide a malformed header.
  std::set<std::string> seen;
  std::string duplicate;
  auto on_event = [&](int depth, Json::parse_event_t event, Json& parsed) {
    if (event == Json::parse_event_t::key && depth == 1 && parsed.is_string()) {
      if (!seen.insert(parsed.get<std::string>()).second && duplicate.empty()) {
        duplicate = parsed.get<std::string>();
      }
    }
    return true;
  };
  Json root;
  try {
    root = Json::parse(text.begin(), text.end(), on_event);
  } catch (const Json::exception& e) {
    return Invalid(absl::StrCat("header is not valid JSON: ", e.what()));
  }
  if (!root.is_object()) {
    return Invalid(absl::StrCat("header is not a JSON object (it is ", root.type_name(), ")"));
  }
  if (!duplicate.empty()) {
    return Invalid(absl::StrCat("duplicate tensor name '", duplicate, "' in header"));
  }
  Header header;
  for (auto it = root.begin(); it != root.end(); ++it) {
    if (it.key() == "__metadata__") {
      if (!it.value().is_object()) return Invalid("\"__metadata__\" is not a JSON object");
      for (auto m = it.value().begin(); m != it.value().end(); ++m) {
        if (!m.value().is_string()) {
          return Invalid(absl::StrCat("\"__metadata__\" value of '", m.key(), "' is not a string"));
        }
        header.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    HeaderEntry entry;
    RETURN_IF_ERROR(ParseEntry(it.key(), it.value(), data_size, &entry));
    header.tensors.push_back(std::move(entry));
  }
  // Overlaps: sort the non-empty ranges by begin; each must start at or
  // after the furthest end seen so far.
  std::vector<const HeaderEntry*> ranges;
  for (const HeaderEntry& e : header.tensors) {
    if (e.end > e.begin) ranges.push_back(&e);
  }
  std::sort(ranges.begin(), ranges.end(), [](const HeaderEntry* a, const HeaderEntry* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  for (size_t i = 1; i < ranges.size(); ++i) {
    const HeaderEntry* prev = ranges[i - 1];
    const HeaderEntry* cur = ranges[i];
    if (cur->begin < prev->end) {
      return Invalid(absl::StrCat("overlapping data_offsets: tensor '", prev->name, "' [",
                                  prev->begin, ", ", prev->end, ") and tensor '", cur->name, "' [",
                                  cur->begin, ", ", cur->end, ")"));
    }
  }
  return header;
}

absl::StatusOr<Header> ParseBuffer(const uint8_t* bytes, size_t size, size_t* data_offset) {
  if (size < 8) {
    return Invalid(
        absl::StrCat("truncated: ", size, " bytes, need at least 8 for the header length"));
  }
  uint64_t n = ReadLe64(bytes);
  if (n > kMaxHeaderBytes) {
    return Invalid(
        absl::StrCat("header length ", n, " exceeds the limit of ", kMaxHeaderBytes, " bytes"));
  }
  if (n > size - 8) {
    return Invalid(
        absl::StrCat("header length ", n, " beyond file size ", size, " (truncated file?)"));
  }
  std::string_view text(reinterpret_cast<const char*>(bytes + 8), n);
  if (data_offset != nullptr) *data_offset = 8 + n;
  return ParseHeader(text, size - 8 - n);
}

// --- File ---------------------------------------------------------------

absl::StatusOr<std::unique_ptr<File>> File::Open(const std::string& path) {
  auto fail = [&](absl::Status s) {
    return Annotate(s, absl::StrCat("safetensors file '", path, "'"));
  };
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return fail(absl::NotFoundError(absl::StrCat("cannot open: ", ErrnoText())));
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    std::string e = ErrnoText();
    ::close(fd);
    return fail(absl::InternalError(absl::StrCat("fstat: ", e)));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return fail(Invalid("not a regular file"));
  }
  std::unique_ptr<File> file(new File());
  file->path_ = path;
  size_t size = static_cast<size_t>(st.st_size);
  if (size < 8) {
    ::close(fd);
    return fail(Invalid(
        absl::StrCat("truncated: ", size, " bytes, need at least 8 for the header length")));
  }
  void* map = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  std::string map_error = map == MAP_FAILED ? ErrnoText() : "";
  ::close(fd);
  if (map == MAP_FAILED) return fail(absl::InternalError(absl::StrCat("mmap: ", map_error)));
  file->map_ = map;
  file->map_size_ = size;
  const uint8_t* bytes = static_cast<const uint8_t*>(map);
  size_t data_offset = 0;
  auto header = ParseBuffer(bytes, size, &data_offset);
  if (!header.ok()) return fail(header.status());
  file->metadata_ = std::move(header->metadata);
  file->tensors_.reserve(header->tensors.size());
  for (HeaderEntry& e : header->tensors) {
    TensorInfo info;
    info.name = std::move(e.name);
    info.dtype = std::move(e.dtype);
    info.shape = std::move(e.shape);
    info.data = bytes + data_offset + e.begin;
    info.size_bytes = static_cast<size_t>(e.end - e.begin);
    file->index_.emplace(info.name, file->tensors_.size());
    file->tensors_.push_back(std::move(info));
  }
  return file;
}

File::~File() {
  if (map_ != nullptr) ::munmap(map_, map_size_);
}

const TensorInfo* File::Find(std::string_view name) const {
  auto it = index_.find(std::string(name));
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

// --- Checkpoint ---------------------------------------------------------

absl::StatusOr<std::unique_ptr<Checkpoint>> Checkpoint::Open(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  std::unique_ptr<Checkpoint> ckpt(new Checkpoint());
  if (fs::is_regular_file(path, ec)) {
    ASSIGN_OR_RETURN(auto file, File::Open(path));
    for (const TensorInfo& t : file->tensors()) ckpt->by_name_[t.name] = &t;
    ckpt->files_.push_back(std::move(file));
    return ckpt;
  }
  if (!fs::is_directory(path, ec)) {
    return absl::NotFoundError(absl::StrCat("checkpoint '", path, "': no such file or directory"));
  }
  const fs::path dir(path);
  const fs::path index_path = dir / "model.safetensors.index.json";
  if (!fs::exists(index_path, ec)) {
    const fs::path single = dir / "model.safetensors";
    if (!fs::exists(single, ec)) {
      return absl::NotFoundError(
          absl::StrCat("checkpoint directory '", path,
                       "' has neither model.safetensors nor model.safetensors.index.json"));
    }
    return Open(single.string());
  }

  auto index_err = [&](const std::string& what) {
    return Invalid(absl::StrCat("index '", index_path.string(), "': ", what));
  };
  absl::StatusOr<std::string> text = ReadFile(index_path.string());
  if (!text.ok()) return text.status();
  Json index;
  try {
    index = Json::parse(*text);
  } catch (const Json::exception& e) {
    return index_err(absl::StrCat("not valid JSON: ", e.what()));
  }
  if (!index.is_object()) return index_err("not a JSON object");
  auto wm = index.find("weight_map");
  if (wm == index.end() || !wm->is_object()) {
    return index_err("missing \"weight_map\" object");
  }
  std::map<std::string, std::string> weight_map;
  std::set<std::string> shard_names;
  for (auto it = wm->begin(); it != wm->end(); ++it) {
    if (!it.value().is_string() || !SafeShardName(it.value().get<std::string>())) {
      return index_err(
          absl::StrCat("weight_map entry '", it.key(), "' is not a file name in the directory"));
    }
    weight_map[it.key()] = it.value().get<std::string>();
    shard_names.insert(it.value().get<std::string>());
  }
  for (const std::string& shard : shard_names) {
    ASSIGN_OR_RETURN(auto file, File::Open((dir / shard).string()));
    for (const TensorInfo& t : file->tensors()) {
      auto w = weight_map.find(t.name);
      if (w == weight_map.end()) {
        return index_err(
            absl::StrCat("tensor '", t.name, "' of shard '", shard, "' is not in the weight_map"));
      }
      if (w->second != shard) {
        return index_err(absl::StrCat("tensor '", t.name, "' is in shard '", shard,
                                      "' but the weight_map says '", w->second, "'"));
      }
      ckpt->by_name_[t.name] = &t;
    }
    ckpt->files_.push_back(std::move(file));
  }
  for (const auto& [name, shard] : weight_map) {
    if (ckpt->by_name_.find(name) == ckpt->by_name_.end()) {
      return index_err(absl::StrCat("weight_map puts tensor '", name, "' in '", shard,
                                    "', which does not hold it"));
    }
  }
  return ckpt;
}

std::vector<const TensorInfo*> Checkpoint::tensors() const {
  std::vector<const TensorInfo*> out;
  out.reserve(by_name_.size());
  for (const auto& [name, t] : by_name_) out.push_back(t);
  return out;
}

const TensorInfo* Checkpoint::Find(std::string_view name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : it->second;
}

// --- Writing ------------------------------------------------------------

namespace {

absl::Status CheckViews(const std::vector<TensorView>& tensors) {
  std::set<std::string_view> names;
  for (const TensorView& t : tensors) {
    if (t.name.empty() || t.name == "__metadata__") {
      return Invalid(absl::StrCat("tensor name '", t.name, "' is not allowed"));
    }
    if (!names.insert(t.name).second) {
      return Invalid(absl::StrCat("duplicate tensor name '", t.name, "'"));
    }
    std::optional<size_t> dsize = DTypeSize(t.dtype);
    if (!dsize) {
      return Invalid(absl::StrCat("tensor '", t.name, "': unknown dtype '", t.dtype, "'"));
    }
    std::optional<uint64_t> want = ByteSize(t.shape, *dsize);
    if (!want || *want != t.size_bytes) {
      return Invalid(absl::StrCat("tensor '", t.name, "': shape ", ShapeText(t.shape), " of ",
                                  t.dtype, " does not match ", t.size_bytes, " bytes"));
    }
    if (t.size_bytes > 0 && t.data == nullptr) {
      return Invalid(absl::StrCat("tensor '", t.name, "': no data"));
    }
  }
  return absl::OkStatus();
}

// Largest dtype first, then by name: every tensor starts aligned to its
// element size when the data section is 8-byte aligned.
std::vector<const TensorView*> FileOrder(const std::vector<TensorView>& tensors) {
  std::vector<const TensorView*> order;
  for (const TensorView& t : tensors) order.push_back(&t);
  std::sort(order.begin(), order.end(), [](const TensorView* a, const TensorView* b) {
    size_t sa = *DTypeSize(a->dtype), sb = *DTypeSize(b->dtype);
    return sa != sb ? sa > sb : a->name < b->name;
  });
  return order;
}

std::string BuildHeader(const std::vector<const TensorView*>& order,
                        const std::map<std::string, std::string>& metadata) {
  OrderedJson root = OrderedJson::object();
  if (!metadata.empty()) {
    OrderedJson meta = OrderedJson::object();
    for (const auto& [k, v] : metadata) meta[k] = v;
    root["__metadata__"] = std::move(meta);
  }
  uint64_t offset = 0;
  for (const TensorView* t : order) {
    OrderedJson entry = OrderedJson::object();
    entry["dtype"] = t->dtype;
    entry["shape"] = t->shape;
    entry["data_offsets"] = {offset, offset + t->size_bytes};
    offset += t->size_bytes;
    root[t->name] = std::move(entry);
  }
  std::string text = root.dump();
  size_t pad = (8 - (8 + text.size()) % 8) % 8;
  text.append(pad, ' ');
  return text;
}

absl::Status WriteOrdered(const std::string& path, const std::vector<const TensorView*>& order,
                          const std::map<std::string, std::string>& metadata) {
  std::string header = BuildHeader(order, metadata);
  const std::string tmp = path + ".tmp";
  auto io_error = [&](const char* op) {
    return absl::InternalError(
        absl::StrCat("writing safetensors file '", path, "': ", op, ": ", ErrnoText()));
  };
  FILE* f = std::fopen(tmp.c_str(), "wb");
  if (f == nullptr) return io_error("open");
  char len[8];
  WriteLe64(header.size(), len);
  bool ok = std::fwrite(len, 1, 8, f) == 8 &&
            std::fwrite(header.data(), 1, header.size(), f) == header.size();
  for (const TensorView* t : order) {
    if (!ok) break;
    if (t->size_bytes > 0) {
      ok = std::fwrite(t->data, 1, t->size_bytes, f) == t->size_bytes;
    }
  }
  if (!ok) {
    absl::Status s = io_error("write");
    std::fclose(f);
    std::remove(tmp.c_str());
    return s;
  }
  if (std::fclose(f) != 0) {
    absl::Status s = io_error("close");
    std::remove(tmp.c_str());
    return s;
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    absl::Status s = io_error("rename");
    std::remove(tmp.c_str());
    return s;
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::string> SerializeHeader(const std::vector<TensorView>& tensors,
                                            const std::map<std::string, std::string>& metadata) {
  RETURN_IF_ERROR(CheckViews(tensors));
  std::vector<const TensorView*> order;
  for (const TensorView& t : tensors) order.push_back(&t);
  return BuildHeader(order, metadata);
}

absl::Status WriteFile(const std::string& path, const std::vector<TensorView>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  RETURN_IF_ERROR(CheckViews(tensors));
  return WriteOrdered(path, FileOrder(tensors), metadata);
}

absl::StatusOr<std::vector<std::string>> WriteSharded(
    const std::string& dir, const std::vector<TensorView>& tensors, uint64_t max_shard_bytes,
    const std::map<std::string, std::string>& metadata, const std::string& prefix) {
  RETURN_IF_ERROR(CheckViews(tensors));
  if (max_shard_bytes == 0) return Invalid("max_shard_bytes must be positive");
  std::vector<const TensorView*> by_name;
  for (const TensorView& t : tensors) by_name.push_back(&t);
  std::sort(by_name.begin(), by_name.end(),
            [](const TensorView* a, const TensorView* b) { return a->name < b->name; });
  std::vector<std::vector<TensorView>> shards;
  uint64_t current = 0, total = 0;
  for (const TensorView* t : by_name) {
    if (shards.empty() || (current > 0 && current + t->size_bytes > max_shard_bytes)) {
      shards.emplace_back();
      current = 0;
    }
    shards.back().push_back(*t);
    current += t->size_bytes;
    total += t->size_bytes;
  }
  if (shards.empty()) shards.emplace_back();
  const std::filesystem::path base(dir);
  std::vector<std::string> written;
  if (shards.size() == 1) {
    std::string name = prefix + ".safetensors";
    RETURN_IF_ERROR(WriteFile((base / name).string(), shards[0], metadata));
    written.push_back(name);
    return written;
  }
  Json weight_map = Json::object();
  for (size_t i = 0; i < shards.size(); ++i) {
    char name[256];
    std::snprintf(name, sizeof(name), "%s-%05zu-of-%05zu.safetensors", prefix.c_str(), i + 1,
                  shards.size());
    RETURN_IF_ERROR(WriteFile((base / name).string(), shards[i], metadata));
    for (const TensorView& t : shards[i]) weight_map[t.name] = name;
    written.push_back(name);
  }
  Json index = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
  std::string index_name = prefix + ".safetensors.index.json";
  RETURN_IF_ERROR(WriteFileAtomically((base / index_name).string(), index.dump(2) + "\n"));
  written.push_back(index_name);
  return written;
}

}  // namespace cohort::safetensors
