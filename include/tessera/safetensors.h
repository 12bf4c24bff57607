// Reading and writing safetensors files (Hugging Face's tensor file format).
//
// The format: an 8-byte little-endian u64 N, then N bytes of UTF-8 JSON (the
// header), then the data buffer. The header is an object mapping each tensor
// name to {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}
// (byte offsets into the data buffer, row-major little-endian elements), plus
// an optional "__metadata__" object of string -> string.
//
// Dtypes: F64 F32 F16 BF16 I64 I32 I8 U8 BOOL map to tessera's DTypes; the
// other safetensors dtypes (F8_*, I16, U16, U32, U64, C64, F4, F6_*) are
// rejected with an Error naming the tensor.
//
// Reading validates as the reference implementation (safetensors, Rust)
// does, and rejects with an Error naming the file, the tensor and the byte
// figures: a file shorter than 8 bytes; N > 100,000,000; 8 + N past the end
// of the file; a header that is not UTF-8 JSON (a NUL byte included), is
// not an object, or nests deeper than 128 levels (serde_json's limit); a
// tensor entry without dtype/shape/data_offsets or with values of the wrong JSON
// type (negative or fractional dims, data_offsets not two unsigned
// integers); a shape whose element count or byte size overflows; data
// offsets that, sorted, do not tile the data buffer from 0 without holes or
// overlaps; end - begin != numel x element size; 8 + N + the last end !=
// the file size; a name given twice (the reference silently keeps one; we
// refuse); "__metadata__" that is not an object of strings. Unknown fields
// inside a tensor entry are ignored, as the reference does.
//
// Writing lays tensors out as the reference writer does, so a file written
// here is byte-identical to Python's safetensors.torch.save_file of the
// same tensors and metadata (metadata of two or more entries aside: we
// write its keys sorted, Python in its dict's order): tensors sorted by
// dtype alignment, widest first (I64, F64, F32, I32, BF16, F16, I8, U8,
// BOOL), then by name (byte order);
// every tensor's data starts at a multiple of its element size; the header
// is compact JSON with "__metadata__" first (when there is metadata) and
// tensors in data order, padded with spaces to a multiple of 8 bytes, so
// that the data buffer starts 8-byte aligned in the file. Writes are atomic:
// the bytes go to a temporary file in the target's directory, which is
// fsynced and renamed over the target; on any failure the temporary file is
// removed, the target is left as it was, and an Error names the path and the
// system's reason.
//
// Not handled: big-endian hosts; files changed by another process while
// mapped (truncating a mapped file can raise SIGBUS, as with any mmap).
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "tessera/dtype.h"
#include "tessera/runtime.h"

namespace tessera {

// One tensor of an open file: its type and its bytes inside the mapping
// (valid while the SafetensorsFile, or any copy of it, lives). `data` need
// not be aligned to the element size (files written elsewhere may place
// tensors anywhere); copy with memcpy, or use to_buffer().
struct SafetensorsTensorView {
  std::string name;
  DType dtype = DType::f32;
  Shape shape;
  const uint8_t* data = nullptr;
  size_t bytes = 0;
  size_t begin = 0, end = 0;  // data_offsets, relative to the data buffer

  TensorType type() const { return {dtype, shape}; }
  // A copy into a new (aligned) Buffer.
  Buffer to_buffer() const;
};

// A validated, read-only safetensors file, memory-mapped (no tensor bytes
// are copied). Copies share the mapping, which is unmapped with the last copy.
class SafetensorsFile {
 public:
  // Maps and validates the file; throws Error on any malformed content.
  static SafetensorsFile open(const std::string& path);
  // Validates `bytes` as a whole file held in memory (the file's content,
  // e.g. read from a socket, or a fuzzer's input); `label` names it in errors.
  static SafetensorsFile from_bytes(std::string bytes, const std::string& label = "<memory>");

  const std::string& path() const { return path_; }
  // Tensor names in data order (increasing data_offsets).
  std::vector<std::string> names() const;
  bool contains(const std::string& name) const { return index_.count(name) > 0; }
  // Throws Error naming the file and the tensor if there is none such.
  const SafetensorsTensorView& tensor(const std::string& name) const;
  const std::vector<SafetensorsTensorView>& tensors() const { return tensors_; }  // in data order
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  size_t header_bytes() const { return header_bytes_; }  // N
  // Every tensor copied into a Buffer, by name.
  std::map<std::string, Buffer> to_buffers() const;

 private:
  void parse(const uint8_t* bytes, size_t size);
  std::string path_;
  std::shared_ptr<const void> storage_;  // the mapping (or the in-memory bytes)
  std::vector<SafetensorsTensorView> tensors_;
  std::map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
  size_t header_bytes_ = 0;
};

// The tensors of the file at `path`, copied into Buffers; its "__metadata__"
// goes to *metadata when given. Throws Error as SafetensorsFile::open does.
std::map<std::string, Buffer> load_safetensors(const std::string& path,
                                               std::map<std::string, std::string>* metadata = nullptr);

// The bytes of a safetensors file holding `tensors` and `metadata`, laid out
// as described above. Throws Error on an undefined Buffer or a name or
// metadata text that is not valid UTF-8, or a name "__metadata__".
std::string serialize_safetensors(const std::map<std::string, Buffer>& tensors,
                                  const std::map<std::string, std::string>& metadata = {});

// Writes serialize_safetensors(tensors, metadata) to `path` atomically
// (temporary file in the same directory, fsync, rename, fsync of the
// directory). The target is never left half-written.
void save_safetensors(const std::string& path, const std::map<std::string, Buffer>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

}  // namespace tessera
