// Tests of the safetensors reader and writer (safetensors.h): bit-identical
// round trips of every dtype (empty tensors and scalars included), the
// writer's layout against bytes assembled here by hand from the format's
// description, reading hand-assembled files the writer would never produce,
// one test per malformed-file rule with its error text, atomic writes that
// fail (missing directory, target is a directory, file-size limit mid-write)
// and keep the old file, and files written by Python's safetensors package
// (skipped when python3 lacks safetensors/numpy).
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include "tessera/error.h"
#include "tessera/safetensors.h"
#include "test_util.h"

namespace tessera {
namespace {

namespace fs = std::filesystem;
using test_util::error_of;

// A fresh directory under the system's temp dir, removed at the end.
struct TempDir {
  fs::path path;
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "tessera_st_XXXXXX").string();
    path = ::mkdtemp(tmpl.data());
  }
  ~TempDir() { fs::remove_all(path); }
  std::string file(const std::string& name) const { return (path / name).string(); }
  std::vector<std::string> entries() const {
    std::vector<std::string> r;
    for (const auto& e : fs::directory_iterator(path)) r.push_back(e.path().filename().string());
    std::sort(r.begin(), r.end());
    return r;
  }
};

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out << bytes;
}

// The format by hand: u64 little-endian length, header, data.
std::string assemble(const std::string& header, const std::string& data) {
  std::string out;
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
  return out + header + data;
}

// Random bytes for a Buffer (bools 0/1), so round trips check every bit.
Buffer random_buffer(DType t, Shape shape, uint32_t seed) {
  Buffer b(t, std::move(shape));
  std::mt19937 rng(seed);
  auto* p = static_cast<uint8_t*>(b.data());
  for (size_t i = 0; i < b.bytes(); ++i) p[i] = t == DType::boolean ? rng() % 2 : rng() & 0xff;
  return b;
}

bool same_bytes(const Buffer& a, const Buffer& b) {
  return a.type() == b.type() && std::memcmp(a.data(), b.data(), a.bytes()) == 0;
}

// The Error text of opening `bytes` as a file (the mmap path).
std::string open_error(const std::string& bytes) {
  TempDir dir;
  const std::string path = dir.file("bad.safetensors");
  write_file(path, bytes);
  const std::string mapped = error_of([&] { SafetensorsFile::open(path); });
  const std::string in_memory = error_of([&] { SafetensorsFile::from_bytes(bytes, path); });
  EXPECT_EQ(mapped, in_memory);  // both readers apply the same rules
  EXPECT_NE(mapped.find(path), std::string::npos) << mapped;
  return mapped;
}

#define EXPECT_HAS(text, piece) EXPECT_NE((text).find(piece), std::string::npos) << (text)

TEST(Safetensors, RoundTripEveryDtypeBitIdentical) {
  TempDir dir;
  std::map<std::string, Buffer> tensors;
  uint32_t seed = 1;
  for (DType t : all_dtypes) {
    const std::string n = dtype_name(t);
    tensors[n + ".matrix"] = random_buffer(t, {3, 5}, seed++);
    tensors[n + ".scalar"] = random_buffer(t, {}, seed++);
    tensors[n + ".empty"] = random_buffer(t, {0}, seed++);
    tensors[n + ".empty3d"] = random_buffer(t, {2, 0, 7}, seed++);
    tensors[n + ".odd"] = random_buffer(t, {7}, seed++);
  }
  const std::map<std::string, std::string> meta = {{"format", "pt"}, {"note", "ünïcode \"quoted\"\n"}};
  const std::string path = dir.file("all.safetensors");
  save_safetensors(path, tensors, meta);

  std::map<std::string, std::string> got_meta;
  std::map<std::string, Buffer> got = load_safetensors(path, &got_meta);
  EXPECT_EQ(got_meta, meta);
  ASSERT_EQ(got.size(), tensors.size());
  for (const auto& [name, b] : tensors) {
    ASSERT_TRUE(got.count(name)) << name;
    EXPECT_TRUE(same_bytes(got.at(name), b)) << name;
  }
  // The view API points into the mapping, at aligned offsets (the writer's
  // order puts wider dtypes first).
  SafetensorsFile f = SafetensorsFile::open(path);
  EXPECT_EQ(f.header_bytes() % 8, 0u);
  for (const SafetensorsTensorView& v : f.tensors()) {
    EXPECT_EQ(v.bytes, tensors.at(v.name).bytes()) << v.name;
    EXPECT_EQ(reinterpret_cast<uintptr_t>(v.data) % dtype_size(v.dtype), 0u) << v.name;
    EXPECT_EQ(std::memcmp(v.data, tensors.at(v.name).data(), v.bytes), 0) << v.name;
    EXPECT_EQ(&f.tensor(v.name), &v);
  }
  // Bytes in memory and on disk are the same.
  EXPECT_EQ(read_file(path), serialize_safetensors(tensors, meta));
  EXPECT_HAS(error_of([&] { f.tensor("nope"); }), "no tensor 'nope'");
}

TEST(Safetensors, WriterLayoutMatchesTheFormatByteByByte) {
  const Buffer b = Buffer::from({1.5, -2}, {2}, DType::f32);
  const Buffer a = Buffer::from({1, -2, 3}, {3}, DType::i8);
  const Buffer c = Buffer::from({-5}, {1}, DType::i64);
  const Buffer flag = Buffer::from({1}, {}, DType::boolean);
  const Buffer h = Buffer::from({1, 2}, {1, 2}, DType::bf16);
  // Written out from the format's description: widest dtype first, then by
  // name; metadata first; compact JSON; spaces up to a multiple of 8.
  std::string header =
      "{\"__metadata__\":{\"k\":\"v\"},"
      "\"c\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[0,8]},"
      "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]},"
      "\"h\":{\"dtype\":\"BF16\",\"shape\":[1,2],\"data_offsets\":[16,20]},"
      "\"a\":{\"dtype\":\"I8\",\"shape\":[3],\"data_offsets\":[20,23]},"
      "\"flag\":{\"dtype\":\"BOOL\",\"shape\":[],\"data_offsets\":[23,24]}}";
  ASSERT_NE(header.size() % 8, 0u);  // so that padding is exercised
  while (header.size() % 8) header += ' ';
  std::string data;
  auto put = [&](uint64_t v, int bytes) {
    for (int i = 0; i < bytes; ++i) data.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  };
  put(static_cast<uint64_t>(int64_t{-5}), 8);
  put(0x3fc00000, 4);  // 1.5f
  put(0xc0000000, 4);  // -2.0f
  put(0x3f80, 2);      // bf16 1.0
  put(0x4000, 2);      // bf16 2.0
  put(1, 1);
  put(0xfe, 1);
  put(3, 1);
  put(1, 1);
  const std::string expected = assemble(header, data);
  const std::string got =
      serialize_safetensors({{"b", b}, {"a", a}, {"c", c}, {"flag", flag}, {"h", h}}, {{"k", "v"}});
  EXPECT_EQ(got, expected);
  EXPECT_EQ(got.substr(8, header.size()).back(), ' ');

  // No metadata: no "__metadata__" key at all; an empty file is "{}" padded.
  EXPECT_EQ(serialize_safetensors({}), assemble("{}      ", ""));
  EXPECT_EQ(serialize_safetensors({{"x", Buffer(DType::u8, {0})}}),
            assemble("{\"x\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[0,0]}}   ", ""));
}

TEST(Safetensors, ReadsHandAssembledFiles) {
  // Any key order, offsets not in key order, unaligned tensors, no padding,
  // whitespace and newlines, unknown fields (ignored, as the reference does).
  const std::string header =
      "{ \"z\" : {\"data_offsets\": [1, 9], \"shape\": [2], \"dtype\": \"F32\", \"extra\": [1]},\n"
      "  \"a\": {\"dtype\": \"U8\", \"shape\": [], \"data_offsets\": [0, 1]},\n"
      "  \"__metadata__\": {\"who\": \"hand\"},\n"
      "  \"e\": {\"dtype\": \"F16\", \"shape\": [0, 3], \"data_offsets\": [9, 9]},"
      "  \"m\": {\"dtype\": \"F64\", \"shape\": [1, 1], \"data_offsets\": [9, 17]} }";
  std::string data;
  data.push_back(static_cast<char>(200));
  const float z[2] = {0.25f, -3.0f};
  data.append(reinterpret_cast<const char*>(z), 8);
  const double m = 1.0 / 3;
  data.append(reinterpret_cast<const char*>(&m), 8);
  const std::string bytes = assemble(header, data);
  TempDir dir;
  write_file(dir.file("hand.safetensors"), bytes);
  for (const SafetensorsFile& f :
       {SafetensorsFile::open(dir.file("hand.safetensors")), SafetensorsFile::from_bytes(bytes)}) {
    EXPECT_EQ(f.names(), (std::vector<std::string>{"a", "z", "e", "m"}));  // data order
    EXPECT_EQ(f.metadata(), (std::map<std::string, std::string>{{"who", "hand"}}));
    auto t = f.to_buffers();
    EXPECT_EQ(t.at("a").type(), (TensorType{DType::u8, {}}));
    EXPECT_EQ(t.at("a").get(0), 200);
    EXPECT_EQ(t.at("z").type(), (TensorType{DType::f32, {2}}));
    EXPECT_EQ(t.at("z").to_f64(), (std::vector<double>{0.25, -3.0}));
    EXPECT_EQ(t.at("e").type(), (TensorType{DType::f16, {0, 3}}));
    EXPECT_EQ(t.at("m").get(0), m);
    const SafetensorsTensorView& v = f.tensor("z");
    EXPECT_EQ(v.begin, 1u);
    EXPECT_EQ(v.end, 9u);
    float first;
    std::memcpy(&first, v.data, 4);
    EXPECT_EQ(first, 0.25f);
  }
}

// --- one test per malformed-file rule --------------------------------------

std::string tensor_json(const std::string& name, const std::string& dtype, const std::string& shape, uint64_t b,
                        uint64_t e) {
  return "\"" + name + "\":{\"dtype\":\"" + dtype + "\",\"shape\":" + shape + ",\"data_offsets\":[" +
         std::to_string(b) + "," + std::to_string(e) + "]}";
}

TEST(SafetensorsMalformed, ShorterThanTheLengthField) {
  const std::string e = open_error(std::string("\x02\0\0\0\0", 5));
  EXPECT_HAS(e, "the file is 5 bytes, shorter than the 8-byte header length");
  EXPECT_HAS(open_error(""), "the file is 0 bytes");
}

TEST(SafetensorsMalformed, HeaderLongerThanTheLimit) {
  std::string bytes = assemble("{}", "");
  const uint64_t n = 100000001;
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  EXPECT_HAS(open_error(bytes), "the header length is 100000001 bytes, more than the limit of 100000000");
  for (int i = 0; i < 8; ++i) bytes[i] = '\xff';  // 2^64 - 1
  EXPECT_HAS(open_error(bytes), "the header length is 18446744073709551615 bytes, more than the limit");
}

TEST(SafetensorsMalformed, HeaderLengthPastTheEndOfTheFile) {
  std::string bytes = assemble("{}      ", "");
  bytes[0] = 17;  // 8 + 17 > 16
  EXPECT_HAS(open_error(bytes),
             "the header length is 17 bytes, which runs past the end of the file (header bytes 8 to 25, file size 16)");
}

TEST(SafetensorsMalformed, HeaderIsNotJson) {
  EXPECT_HAS(open_error(assemble("{\"a\": {\"dtype\": ", "")), "the 16-byte header is not valid UTF-8 JSON");
  EXPECT_HAS(open_error(assemble("{} trailing", "")), "the 11-byte header is not valid UTF-8 JSON");
  EXPECT_HAS(open_error(assemble(std::string("{\"\xff\xfe\":1}"), "")), "is not valid UTF-8 JSON");
  EXPECT_HAS(open_error(assemble(std::string("{}\0\0\0\0\0\0", 8), "")), "is not valid UTF-8 JSON");
}

TEST(SafetensorsMalformed, HeaderNestedTooDeep) {
  const std::string deep = "{\"a\":" + std::string(200, '[') + std::string(200, ']') + "}";
  EXPECT_HAS(open_error(assemble(deep, "")), "-byte header nests JSON deeper than 128 levels");
  // 128 levels is still only a malformed entry, not a nesting error.
  const std::string ok_depth = "{\"a\":" + std::string(127, '[') + std::string(127, ']') + "}";
  EXPECT_HAS(open_error(assemble(ok_depth, "")), "tensor 'a': the entry is an array, not an object");
}

TEST(SafetensorsMalformed, HeaderIsNotAnObject) {
  EXPECT_HAS(open_error(assemble("[1, 2]", "")), "the header is an array, not a JSON object");
  EXPECT_HAS(open_error(assemble("\"text\"", "")), "the header is a string, not a JSON object");
  EXPECT_HAS(open_error(assemble("{\"t\": 3}", "")), "tensor 't': the entry is an unsigned integer, not an object");
}

TEST(SafetensorsMalformed, MissingOrMistypedFields) {
  EXPECT_HAS(open_error(assemble("{\"t\":{\"dtype\":\"F32\",\"shape\":[]}}", "1234")),
             "tensor 't': the entry has no \"data_offsets\"");
  EXPECT_HAS(open_error(assemble("{\"t\":{\"dtype\":7,\"shape\":[],\"data_offsets\":[0,4]}}", "1234")),
             "tensor 't': \"dtype\" is an unsigned integer, not a string");
  EXPECT_HAS(open_error(assemble("{\"t\":{\"dtype\":\"F32\",\"shape\":{},\"data_offsets\":[0,4]}}", "1234")),
             "tensor 't': \"shape\" is an object, not an array");
  EXPECT_HAS(open_error(assemble("{\"t\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4,4]}}", "1234")),
             "tensor 't': \"data_offsets\" is [0,4,4], not [begin, end]");
  EXPECT_HAS(open_error(assemble("{\"t\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[-1,4]}}", "1234")),
             "tensor 't': \"data_offsets\" is [-1,4], not [begin, end]");
}

TEST(SafetensorsMalformed, NegativeAndFractionalDimensions) {
  EXPECT_HAS(open_error(assemble("{" + tensor_json("t", "F32", "[2,-1]", 0, 4) + "}", "1234")),
             "tensor 't': shape dimension 1 is a negative integer (-1), not a non-negative integer");
  EXPECT_HAS(open_error(assemble("{" + tensor_json("t", "F32", "[1.5]", 0, 4) + "}", "1234")),
             "tensor 't': shape dimension 0 is a fractional number (1.5)");
  EXPECT_HAS(open_error(assemble("{" + tensor_json("t", "F32", "[18446744073709551616]", 0, 4) + "}", "1234")),
             "tensor 't': shape dimension 0 is a fractional number");  // past u64: JSON parsers give a double
}

TEST(SafetensorsMalformed, OverflowingShape) {
  EXPECT_HAS(open_error(assemble("{" + tensor_json("big", "F32", "[4294967296,4294967296]", 0, 4) + "}", "1234")),
             "tensor 'big': shape [4294967296,4294967296]: the element count overflows 63 bits");
  EXPECT_HAS(open_error(assemble("{" + tensor_json("big", "F32", "[9223372036854775808]", 0, 4) + "}", "1234")),
             "the element count overflows 63 bits");
  // The count fits in 63 bits; times 8 bytes it does not fit in 64.
  EXPECT_HAS(open_error(assemble("{" + tensor_json("big", "F64", "[4611686018427387904]", 0, 4) + "}", "1234")),
             "tensor 'big': shape [4611686018427387904] x F64: the byte size overflows 64 bits");
}

TEST(SafetensorsMalformed, ShapeTimesDtypeSizeDiffersFromOffsets) {
  EXPECT_HAS(open_error(assemble("{" + tensor_json("t", "F32", "[2,3]", 0, 20) + "}", std::string(20, 'x'))),
             "tensor 't': data_offsets [0, 20] hold 20 bytes, but shape [2, 3] x F32 needs 24");
}

TEST(SafetensorsMalformed, OffsetsWithAHole) {
  EXPECT_HAS(open_error(assemble("{" + tensor_json("a", "U8", "[2]", 0, 2) + "," + tensor_json("b", "U8", "[2]", 3, 5) +
                                     "}",
                                 "12345")),
             "tensor 'b': data_offsets [3, 5] leave a hole: bytes 2 to 3 of the data buffer belong to no tensor "
             "(the previous tensor 'a' ends at 2)");
  EXPECT_HAS(open_error(assemble("{" + tensor_json("a", "U8", "[2]", 1, 3) + "}", "123")),
             "tensor 'a': data_offsets [1, 3] leave a hole: bytes 0 to 1");
}

TEST(SafetensorsMalformed, OffsetsThatOverlap) {
  EXPECT_HAS(open_error(assemble("{" + tensor_json("a", "U8", "[4]", 0, 4) + "," + tensor_json("b", "U8", "[2]", 2, 4) +
                                     "}",
                                 "1234")),
             "tensor 'b': data_offsets [2, 4] overlap tensor 'a' [0, 4]");
  // Two tensors over the same bytes.
  EXPECT_HAS(open_error(assemble("{" + tensor_json("a", "U8", "[4]", 0, 4) + "," + tensor_json("b", "U8", "[4]", 0, 4) +
                                     "}",
                                 "1234")),
             "overlap tensor 'a' [0, 4]");
}

TEST(SafetensorsMalformed, OffsetsThatEndBeforeTheyBegin) {
  EXPECT_HAS(open_error(assemble("{" + tensor_json("a", "U8", "[0]", 4, 0) + "}", "1234")),
             "tensor 'a': data_offsets [4, 0] end before they begin");
}

TEST(SafetensorsMalformed, DataBufferLongerOrShorterThanTheTensors) {
  const std::string header = "{" + tensor_json("a", "F32", "[2]", 0, 8) + "}";
  EXPECT_HAS(open_error(assemble(header, "123456789")),
             "the tensors cover 8 bytes of data but the file has 9 after its header");
  const std::string e = open_error(assemble(header, "1234567"));
  EXPECT_HAS(e, "the tensors cover 8 bytes of data but the file has 7 after its header");
  EXPECT_HAS(e, "= " + std::to_string(8 + header.size() + 8) + " != file size " + std::to_string(8 + header.size() + 7));
}

TEST(SafetensorsMalformed, DuplicateNames) {
  EXPECT_HAS(open_error(assemble("{" + tensor_json("a", "U8", "[2]", 0, 2) + "," + tensor_json("a", "U8", "[2]", 2, 4) +
                                     "}",
                                 "1234")),
             "the header names 'a' more than once");
  EXPECT_HAS(open_error(assemble("{\"__metadata__\":{},\"__metadata__\":{}}", "")),
             "the header names '__metadata__' more than once");
}

TEST(SafetensorsMalformed, MetadataThatIsNotStrings) {
  EXPECT_HAS(open_error(assemble("{\"__metadata__\":{\"epoch\":3}}", "")),
             "\"__metadata__\" entry 'epoch' is an unsigned integer, not a string");
  EXPECT_HAS(open_error(assemble("{\"__metadata__\":[\"a\"]}", "")),
             "\"__metadata__\" is an array, not an object of strings");
  EXPECT_HAS(open_error(assemble("{\"__metadata__\":{\"a\":{\"b\":\"c\"}}}", "")),
             "\"__metadata__\" entry 'a' is an object, not a string");
}

TEST(SafetensorsMalformed, UnknownAndUnsupportedDtypes) {
  EXPECT_HAS(open_error(assemble("{" + tensor_json("w", "F33", "[1]", 0, 4) + "}", "1234")),
             "tensor 'w': unknown dtype \"F33\"");
  EXPECT_HAS(open_error(assemble("{" + tensor_json("w", "f32", "[1]", 0, 4) + "}", "1234")),
             "unknown dtype \"f32\"");  // names are case-sensitive
  for (const char* d : {"F8_E4M3", "F8_E5M2", "I16", "U16", "U32", "U64", "C64", "F4"})
    EXPECT_HAS(open_error(assemble("{" + tensor_json("q", d, "[2]", 0, 2) + "}", "12")),
               std::string("tensor 'q': dtype ") + d + " is not supported by tessera");
}

TEST(SafetensorsMalformed, NotAFile) {
  TempDir dir;
  EXPECT_HAS(error_of([&] { SafetensorsFile::open(dir.file("missing.safetensors")); }),
             "missing.safetensors': cannot open: No such file or directory");
  EXPECT_HAS(error_of([&] { SafetensorsFile::open(dir.path.string()); }), "not a regular file");
}

// --- atomic writes -----------------------------------------------------------

TEST(SafetensorsAtomicWrite, MissingDirectory) {
  TempDir dir;
  const std::string path = dir.file("no/such/dir/x.safetensors");
  const std::string e = error_of([&] { save_safetensors(path, {{"a", Buffer(DType::f32, {2})}}); });
  EXPECT_HAS(e, "write '" + path + "': cannot create a temporary file");
  EXPECT_HAS(e, "No such file or directory");
  EXPECT_TRUE(dir.entries().empty());
}

TEST(SafetensorsAtomicWrite, RenameFailureKeepsTheTargetAndRemovesTheTemporary) {
  TempDir dir;
  const std::string path = dir.file("taken");
  fs::create_directory(path);
  write_file(path + "/inside", "keep me");
  const std::string e = error_of([&] { save_safetensors(path, {{"a", Buffer(DType::f32, {2})}}); });
  EXPECT_HAS(e, "renaming");
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"taken"});  // no temporary file left
  EXPECT_EQ(read_file(path + "/inside"), "keep me");
}

TEST(SafetensorsAtomicWrite, WriteFailureMidFileKeepsTheOldFile) {
  // A file-size limit makes write() fail with EFBIG part-way, even for root.
  TempDir dir;
  const std::string path = dir.file("model.safetensors");
  save_safetensors(path, {{"old", Buffer::from({1, 2, 3}, {3})}}, {{"v", "1"}});
  const std::string before = read_file(path);

  struct rlimit old_limit;
  ASSERT_EQ(getrlimit(RLIMIT_FSIZE, &old_limit), 0);
  void (*old_handler)(int) = signal(SIGXFSZ, SIG_IGN);
  struct rlimit small = old_limit;
  small.rlim_cur = 4096;
  ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &small), 0);
  const std::string e = error_of([&] { save_safetensors(path, {{"new", Buffer(DType::f32, {100000})}}); });
  setrlimit(RLIMIT_FSIZE, &old_limit);
  signal(SIGXFSZ, old_handler);

  EXPECT_HAS(e, "write '" + path + "': writing the temporary file");
  EXPECT_HAS(e, "failed after 4096 bytes: File too large");
  EXPECT_EQ(read_file(path), before);
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"model.safetensors"});
  EXPECT_EQ(load_safetensors(path).at("old").to_f64(), (std::vector<double>{1, 2, 3}));
}

TEST(SafetensorsAtomicWrite, ReplacesAnExistingFileWhole) {
  TempDir dir;
  const std::string path = dir.file("m.safetensors");
  save_safetensors(path, {{"a", Buffer::from({1}, {1})}});
  SafetensorsFile mapped = SafetensorsFile::open(path);  // the old file stays readable while mapped
  save_safetensors(path, {{"b", Buffer::from({2, 3}, {2})}});
  EXPECT_EQ(load_safetensors(path).count("b"), 1u);
  EXPECT_EQ(mapped.to_buffers().at("a").to_f64(), std::vector<double>{1});
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"m.safetensors"});
}

TEST(Safetensors, WriterRejectsWhatTheFormatCannotHold) {
  EXPECT_HAS(error_of([] { serialize_safetensors({{"x", Buffer()}}); }), "tensor 'x' is an empty (undefined) Buffer");
  EXPECT_HAS(error_of([] { serialize_safetensors({{"__metadata__", Buffer(DType::u8, {1})}}); }),
             "cannot be named '__metadata__'");
  EXPECT_HAS(error_of([] { serialize_safetensors({{std::string("\xff"), Buffer(DType::u8, {1})}}); }),
             "is not valid UTF-8");
  EXPECT_HAS(error_of([] { serialize_safetensors({}, {{"k", std::string("\xc3")}}); }),
             "the metadata value of 'k' is not valid UTF-8");
}

// --- files written by Python's safetensors ----------------------------------

const fs::path kDataDir = fs::path(__FILE__).parent_path() / "data" / "safetensors";

// name -> (torch dtype, shape text, raw bytes), from a *_values.txt file.
struct TorchValues {
  std::string dtype, shape, bytes;
};
std::map<std::string, TorchValues> read_torch_values(const fs::path& path) {
  std::map<std::string, TorchValues> r;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    std::string name, dtype, hex;
    ls >> name >> dtype;
    std::string shape;
    std::getline(ls, shape, ']');
    shape += "]";
    ls >> hex;
    std::string bytes;
    for (size_t i = 0; i + 1 < hex.size(); i += 2) bytes.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
    r[name] = {dtype, shape.substr(shape.find('[')), bytes};
  }
  return r;
}

TEST(SafetensorsPython, ReadsAFileWrittenByTorch) {
  // tests/data/safetensors/README.md says how the file was written.
  const std::string path = (kDataDir / "py_torch.safetensors").string();
  const auto want = read_torch_values(kDataDir / "py_torch_values.txt");
  ASSERT_EQ(want.size(), 10u);
  const std::map<std::string, std::string> torch_to_tessera = {
      {"torch.bfloat16", "bf16"}, {"torch.float64", "f64"}, {"torch.uint8", "u8"},  {"torch.float32", "f32"},
      {"torch.int32", "i32"},     {"torch.float16", "f16"}, {"torch.int8", "i8"},   {"torch.bool", "bool"},
      {"torch.int64", "i64"}};
  std::map<std::string, std::string> meta;
  auto got = load_safetensors(path, &meta);
  EXPECT_EQ(meta, (std::map<std::string, std::string>{{"format", "pt"}}));
  ASSERT_EQ(got.size(), want.size());
  for (const auto& [name, w] : want) {
    ASSERT_TRUE(got.count(name)) << name;
    const Buffer& b = got.at(name);
    EXPECT_EQ(dtype_name(b.dtype()), torch_to_tessera.at(w.dtype)) << name;
    EXPECT_EQ(to_string(b.shape()), w.shape) << name;
    EXPECT_EQ(std::string(static_cast<const char*>(b.data()), b.bytes()), w.bytes) << name;
  }
  EXPECT_EQ(got.at("e.scalar").get(0), 2.5);
  EXPECT_EQ(got.at("f.i32").to_f64(), (std::vector<double>{1, -2, 3, 4}));
  // The reference writer's layout is ours: re-serializing gives the same bytes.
  EXPECT_EQ(serialize_safetensors(got, meta), read_file(path));
}

// --- Python's safetensors, when this machine's python3 has it ---------------

bool python_has_safetensors() {
  return std::system("python3 -c 'import safetensors.numpy, numpy' >/dev/null 2>&1") == 0;
}

TEST(SafetensorsPython, ReadsAFileWrittenByPython) {
  if (!python_has_safetensors()) GTEST_SKIP() << "python3 has no safetensors/numpy";
  TempDir dir;
  const std::string path = dir.file("py.safetensors");
  const std::string script = dir.file("w.py");
  write_file(script,
             "import sys, numpy as np\n"
             "from safetensors.numpy import save_file\n"
             "save_file({'w': np.arange(6, dtype=np.float32).reshape(2, 3) / 4,\n"
             "           'h': np.array([1.5, -2], dtype=np.float16),\n"
             "           'i': np.array([-7, 2**40], dtype=np.int64),\n"
             "           'b': np.array([True, False, True]),\n"
             "           's': np.array(3, dtype=np.int8)}, sys.argv[1], metadata={'format': 'np'})\n");
  ASSERT_EQ(std::system(("python3 " + script + " " + path).c_str()), 0);
  std::map<std::string, std::string> meta;
  auto t = load_safetensors(path, &meta);
  EXPECT_EQ(meta.at("format"), "np");
  EXPECT_EQ(t.at("w").type(), (TensorType{DType::f32, {2, 3}}));
  EXPECT_EQ(t.at("w").to_f64(), (std::vector<double>{0, 0.25, 0.5, 0.75, 1, 1.25}));
  EXPECT_EQ(t.at("h").to_f64(), (std::vector<double>{1.5, -2}));
  EXPECT_EQ(t.at("i").to_f64(), (std::vector<double>{-7, 1099511627776.0}));
  EXPECT_EQ(t.at("b").type(), (TensorType{DType::boolean, {3}}));
  EXPECT_EQ(t.at("b").to_f64(), (std::vector<double>{1, 0, 1}));
  EXPECT_EQ(t.at("s").type(), (TensorType{DType::i8, {}}));
  // Python writes the same layout: our bytes for the same tensors are identical.
  EXPECT_EQ(serialize_safetensors(t, meta), read_file(path));
}

TEST(SafetensorsPython, PythonReadsOurFile) {
  if (!python_has_safetensors()) GTEST_SKIP() << "python3 has no safetensors/numpy";
  TempDir dir;
  const std::string path = dir.file("ours.safetensors");
  save_safetensors(path, {{"x", Buffer::from({1, 2, 3, 4}, {2, 2}, DType::f64)}, {"y", Buffer::from({-1}, {}, DType::i32)}});
  const std::string script = dir.file("r.py");
  write_file(script,
             "import sys\n"
             "from safetensors.numpy import load_file\n"
             "t = load_file(sys.argv[1])\n"
             "assert t['x'].tolist() == [[1, 2], [3, 4]] and str(t['x'].dtype) == 'float64'\n"
             "assert t['y'].shape == () and int(t['y']) == -1\n");
  EXPECT_EQ(std::system(("python3 " + script + " " + path).c_str()), 0);
}

}  // namespace
}  // namespace tessera
