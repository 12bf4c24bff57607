// safetensors reading (mmap + validation) and writing (layout + atomic save);
// the format and the rules are in include/tessera/safetensors.h.
//
// This file knows the file format only: what the tensors mean (checkpoints,
// PEFT adapters) is elsewhere.
#include "tessera/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>

#include "tessera/atomic_file.h"
#include "tessera/error.h"

namespace tessera {
namespace {

using json = nlohmann::json;

constexpr uint64_t kMaxHeaderBytes = 100000000;  // the reference's MAX_HEADER_SIZE
constexpr int kMaxHeaderDepth = 128;             // serde_json's recursion limit

// Every dtype the format defines, with its size in bits; `supported` says
// whether tessera has it (then `dtype` is its DType).
struct FormatDType {
  const char* name;
  unsigned bits;
  bool supported;
  DType dtype;
};
constexpr FormatDType kFormatDTypes[] = {
    {"F64", 64, true, DType::f64},          {"F32", 32, true, DType::f32},
    {"F16", 16, true, DType::f16},          {"BF16", 16, true, DType::bf16},
    {"I64", 64, true, DType::i64},          {"I32", 32, true, DType::i32},
    {"I8", 8, true, DType::i8},             {"U8", 8, true, DType::u8},
    {"BOOL", 8, true, DType::boolean},      {"F4", 4, false, DType::u8},
    {"F6_E2M3", 6, false, DType::u8},       {"F6_E3M2", 6, false, DType::u8},
    {"F8_E5M2", 8, false, DType::u8},       {"F8_E4M3", 8, false, DType::u8},
    {"F8_E8M0", 8, false, DType::u8},       {"F8_E4M3FNUZ", 8, false, DType::u8},
    {"F8_E5M2FNUZ", 8, false, DType::u8},   {"I16", 16, false, DType::u8},
    {"U16", 16, false, DType::u8},          {"U32", 32, false, DType::u8},
    {"U64", 64, false, DType::u8},          {"C64", 64, false, DType::u8},
};

const char* format_name(DType t) {
  for (const FormatDType& f : kFormatDTypes)
    if (f.supported && f.dtype == t) return f.name;
  return "?";
}

// The writer's order: widest alignment first, as the reference writer sorts.
int layout_rank(DType t) {
  switch (t) {
    case DType::i64: return 0;
    case DType::f64: return 1;
    case DType::f32: return 2;
    case DType::i32: return 3;
    case DType::bf16: return 4;
    case DType::f16: return 5;
    case DType::i8: return 6;
    case DType::u8: return 7;
    case DType::boolean: return 8;
  }
  return 9;
}

const char* json_kind(const json& j) {
  switch (j.type()) {
    case json::value_t::null: return "null";
    case json::value_t::object: return "an object";
    case json::value_t::array: return "an array";
    case json::value_t::string: return "a string";
    case json::value_t::boolean: return "a boolean";
    case json::value_t::number_integer: return "a negative integer";
    case json::value_t::number_unsigned: return "an unsigned integer";
    case json::value_t::number_float: return "a fractional number";
    default: return "a non-JSON value";
  }
}

// Throws with the file's name in front.
template <typename... Parts>
[[noreturn]] void bad_file(const std::string& file, const Parts&... parts) {
  fail("safetensors file '", file, "': ", parts...);
}

// One tensor entry of the header, checked for JSON types and its dtype.
struct Entry {
  std::string name;
  DType dtype;
  Shape shape;
  uint64_t begin, end, bytes;
};

Entry parse_entry(const std::string& file, const std::string& name, const json& v) {
  auto where = [&] { return "tensor '" + name + "': "; };
  if (!v.is_object()) bad_file(file, where(), "the entry is ", json_kind(v), ", not an object");
  for (const char* field : {"dtype", "shape", "data_offsets"})
    if (!v.contains(field)) bad_file(file, where(), "the entry has no \"", field, "\"");
  Entry e{name, DType::f32, {}, 0, 0, 0};

  const json& dt = v.at("dtype");
  if (!dt.is_string()) bad_file(file, where(), "\"dtype\" is ", json_kind(dt), ", not a string");
  const std::string dname = dt.get<std::string>();
  const FormatDType* fd = nullptr;
  for (const FormatDType& f : kFormatDTypes)
    if (dname == f.name) fd = &f;
  if (!fd) bad_file(file, where(), "unknown dtype \"", dname, "\"");
  if (!fd->supported)
    bad_file(file, where(), "dtype ", dname,
             " is not supported by tessera (supported: F64 F32 F16 BF16 I64 I32 I8 U8 BOOL)");
  e.dtype = fd->dtype;

  const json& sh = v.at("shape");
  if (!sh.is_array()) bad_file(file, where(), "\"shape\" is ", json_kind(sh), ", not an array");
  // Element count and bytes, with overflow checks in the order the
  // reference multiplies (dims left to right, then the element size).
  uint64_t count = 1;
  for (size_t i = 0; i < sh.size(); ++i) {
    const json& d = sh[i];
    if (!d.is_number_unsigned())
      bad_file(file, where(), "shape dimension ", i, " is ", json_kind(d), " (", d.dump(),
               "), not a non-negative integer");
    const uint64_t dim = d.get<uint64_t>();
    if (dim > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ||
        __builtin_mul_overflow(count, dim, &count) || count > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
      bad_file(file, where(), "shape ", sh.dump(), ": the element count overflows 63 bits");
    e.shape.push_back(static_cast<int64_t>(dim));
  }
  if (__builtin_mul_overflow(count, static_cast<uint64_t>(dtype_size(e.dtype)), &e.bytes))
    bad_file(file, where(), "shape ", sh.dump(), " x ", dname, ": the byte size overflows 64 bits");

  const json& off = v.at("data_offsets");
  if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned())
    bad_file(file, where(), "\"data_offsets\" is ", off.dump(), ", not [begin, end] (two non-negative integers)");
  e.begin = off[0].get<uint64_t>();
  e.end = off[1].get<uint64_t>();
  return e;
}

}  // namespace

Buffer SafetensorsTensorView::to_buffer() const {
  Buffer b(dtype, shape);
  if (bytes) std::memcpy(b.data(), data, bytes);
  return b;
}

void SafetensorsFile::parse(const uint8_t* bytes, size_t size) {
  const std::string& file = path_;
  if (size < 8)
    bad_file(file, "the file is ", size, " bytes, shorter than the 8-byte header length that starts every file");
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | bytes[i];
  if (n > kMaxHeaderBytes)
    bad_file(file, "the header length is ", n, " bytes, more than the limit of ", kMaxHeaderBytes);
  if (n > size - 8)
    bad_file(file, "the header length is ", n, " bytes, which runs past the end of the file (header bytes 8 to ",
             8 + n, ", file size ", size, ")");
  header_bytes_ = n;
  const char* text = reinterpret_cast<const char*>(bytes + 8);

  // A NUL byte is never valid JSON (raw control characters are not allowed
  // even inside strings), but nlohmann's lexer takes it for the end of the
  // input and would accept "{}\0garbage".
  if (const void* nul = std::memchr(text, '\0', n))
    bad_file(file, "the ", n, "-byte header is not valid UTF-8 JSON: it has a NUL byte at header offset ",
             static_cast<const char*>(nul) - text);

  // Parse, noting names given twice at the top level (JSON parsers keep one).
  std::set<std::string> seen;
  std::string duplicate;
  bool has_duplicate = false;
  json header;
  try {
    header = json::parse(text, text + n, [&](int depth, json::parse_event_t event, json& parsed) {
      // A valid header nests 3 levels deep; serde_json (the reference's
      // parser) stops at 128. Deeper input only costs memory.
      if (depth > kMaxHeaderDepth)
        bad_file(file, "the ", n, "-byte header nests JSON deeper than ", kMaxHeaderDepth, " levels");
      if (event == json::parse_event_t::key && depth == 1 && !has_duplicate) {
        const std::string& key = parsed.get_ref<const std::string&>();
        if (!seen.insert(key).second) {
          has_duplicate = true;
          duplicate = key;
        }
      }
      return true;
    });
  } catch (const json::exception& ex) {
    bad_file(file, "the ", n, "-byte header is not valid UTF-8 JSON: ", ex.what());
  }
  if (has_duplicate) bad_file(file, "the header names '", duplicate, "' more than once");
  if (!header.is_object()) bad_file(file, "the header is ", json_kind(header), ", not a JSON object");

  std::vector<Entry> entries;
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") {
      const json& m = it.value();
      if (!m.is_object()) bad_file(file, "\"__metadata__\" is ", json_kind(m), ", not an object of strings");
      for (auto mt = m.begin(); mt != m.end(); ++mt) {
        if (!mt.value().is_string())
          bad_file(file, "\"__metadata__\" entry '", mt.key(), "' is ", json_kind(mt.value()), ", not a string");
        metadata_[mt.key()] = mt.value().get<std::string>();
      }
      continue;
    }
    entries.push_back(parse_entry(file, it.key(), it.value()));
  }

  // Sorted by offsets, the tensors must tile the data buffer from 0.
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t start = 0;
  const Entry* previous = nullptr;
  for (const Entry& e : entries) {
    if (e.end < e.begin)
      bad_file(file, "tensor '", e.name, "': data_offsets [", e.begin, ", ", e.end, "] end before they begin");
    if (e.begin > start)
      bad_file(file, "tensor '", e.name, "': data_offsets [", e.begin, ", ", e.end, "] leave a hole: bytes ", start,
               " to ", e.begin, " of the data buffer belong to no tensor",
               previous ? " (the previous tensor '" + previous->name + "' ends at " + std::to_string(start) + ")" : "");
    if (e.begin < start)
      bad_file(file, "tensor '", e.name, "': data_offsets [", e.begin, ", ", e.end, "] overlap tensor '",
               previous->name, "' [", previous->begin, ", ", previous->end, "]");
    if (e.end - e.begin != e.bytes)
      bad_file(file, "tensor '", e.name, "': data_offsets [", e.begin, ", ", e.end, "] hold ", e.end - e.begin,
               " bytes, but shape ", to_string(e.shape), " x ", format_name(e.dtype), " needs ", e.bytes);
    start = e.end;
    previous = &e;
  }
  const uint64_t data_bytes = size - 8 - n;
  if (start != data_bytes)
    bad_file(file, "the tensors cover ", start, " bytes of data but the file has ", data_bytes,
             " after its header (8 + ", n, " + ", start, " = ", 8 + n + start, " != file size ", size, ")");

  const uint8_t* data = bytes + 8 + n;
  for (const Entry& e : entries) {
    index_[e.name] = tensors_.size();
    tensors_.push_back(SafetensorsTensorView{e.name, e.dtype, e.shape, data + e.begin, static_cast<size_t>(e.bytes),
                                             static_cast<size_t>(e.begin), static_cast<size_t>(e.end)});
  }
}

SafetensorsFile SafetensorsFile::open(const std::string& path) {
  SafetensorsFile f;
  f.path_ = path;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) bad_file(path, "cannot open: ", std::strerror(errno));
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    bad_file(path, "cannot stat: ", std::strerror(err));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    bad_file(path, "not a regular file");
  }
  const size_t size = static_cast<size_t>(st.st_size);
  if (size == 0) {
    ::close(fd);
    f.parse(nullptr, 0);  // throws: too short
  }
  void* p = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  const int err = errno;
  ::close(fd);
  if (p == MAP_FAILED) bad_file(path, "cannot mmap ", size, " bytes: ", std::strerror(err));
  f.storage_ = std::shared_ptr<const void>(p, [size](const void* q) { ::munmap(const_cast<void*>(q), size); });
  f.parse(static_cast<const uint8_t*>(p), size);
  return f;
}

SafetensorsFile SafetensorsFile::from_bytes(std::string bytes, const std::string& label) {
  SafetensorsFile f;
  f.path_ = label;
  auto owned = std::make_shared<const std::string>(std::move(bytes));
  f.storage_ = owned;
  f.parse(reinterpret_cast<const uint8_t*>(owned->data()), owned->size());
  return f;
}

std::vector<std::string> SafetensorsFile::names() const {
  std::vector<std::string> r;
  for (const SafetensorsTensorView& t : tensors_) r.push_back(t.name);
  return r;
}

const SafetensorsTensorView& SafetensorsFile::tensor(const std::string& name) const {
  auto it = index_.find(name);
  if (it == index_.end()) bad_file(path_, "no tensor '", name, "' (the file has ", tensors_.size(), ")");
  return tensors_[it->second];
}

std::map<std::string, Buffer> SafetensorsFile::to_buffers() const {
  std::map<std::string, Buffer> r;
  for (const SafetensorsTensorView& t : tensors_) r[t.name] = t.to_buffer();
  return r;
}

std::map<std::string, Buffer> load_safetensors(const std::string& path, std::map<std::string, std::string>* metadata) {
  SafetensorsFile f = SafetensorsFile::open(path);
  if (metadata) *metadata = f.metadata();
  return f.to_buffers();
}

namespace {

// The header text (padded) and the tensors in data order.
struct Layout {
  std::string header;
  std::vector<std::pair<const std::string*, const Buffer*>> order;
};

std::string json_string(const std::string& s, const char* what) {
  try {
    return json(s).dump();
  } catch (const json::exception&) {
    fail("safetensors: ", what, " is not valid UTF-8");
  }
}

Layout layout(const std::map<std::string, Buffer>& tensors, const std::map<std::string, std::string>& metadata) {
  Layout l;
  for (const auto& [name, b] : tensors) {
    if (!b.defined()) fail("safetensors: tensor '", name, "' is an empty (undefined) Buffer");
    if (name == "__metadata__") fail("safetensors: a tensor cannot be named '__metadata__'");
    l.order.push_back({&name, &b});
  }
  std::stable_sort(l.order.begin(), l.order.end(), [](const auto& a, const auto& b) {
    return layout_rank(a.second->dtype()) < layout_rank(b.second->dtype());  // names are already sorted
  });
  std::string& h = l.header;
  h = "{";
  if (!metadata.empty()) {
    h += "\"__metadata__\":{";
    bool first = true;
    for (const auto& [k, v] : metadata) {
      if (!first) h += ",";
      first = false;
      h += json_string(k, ("metadata key '" + k + "'").c_str()) + ":" +
           json_string(v, ("the metadata value of '" + k + "'").c_str());
    }
    h += "}";
  }
  uint64_t offset = 0;
  for (const auto& [name, b] : l.order) {
    if (h.size() > 1) h += ",";
    h += json_string(*name, ("tensor name '" + *name + "'").c_str());
    h += ":{\"dtype\":\"";
    h += format_name(b->dtype());
    h += "\",\"shape\":[";
    for (size_t i = 0; i < b->shape().size(); ++i) h += (i ? "," : "") + std::to_string(b->shape()[i]);
    h += "],\"data_offsets\":[" + std::to_string(offset) + ",";
    offset += b->bytes();
    h += std::to_string(offset) + "]}";
  }
  h += "}";
  h.append((8 - h.size() % 8) % 8, ' ');
  if (h.size() > kMaxHeaderBytes)
    fail("safetensors: the header would be ", h.size(), " bytes, more than the format's limit of ", kMaxHeaderBytes);
  return l;
}

std::string length_prefix(size_t n) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>((static_cast<uint64_t>(n) >> (8 * i)) & 0xff);
  return s;
}

}  // namespace

std::string serialize_safetensors(const std::map<std::string, Buffer>& tensors,
                                  const std::map<std::string, std::string>& metadata) {
  const Layout l = layout(tensors, metadata);
  std::string out = length_prefix(l.header.size()) + l.header;
  for (const auto& [name, b] : l.order) out.append(static_cast<const char*>(b->data()), b->bytes());
  return out;
}

void save_safetensors(const std::string& path, const std::map<std::string, Buffer>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  const Layout l = layout(tensors, metadata);
  const std::string prefix = length_prefix(l.header.size());
  std::vector<ByteSpan> pieces = {{prefix.data(), prefix.size()}, {l.header.data(), l.header.size()}};
  for (const auto& [name, b] : l.order) pieces.push_back({b->data(), b->bytes()});
  write_file_atomically(path, pieces);
}

}  // namespace tessera
