// The text of a `define` node's UserDef, and the lexing helpers the graph
// printer and parser share (names, strings, numbers, tokens).
//
// A UserDef prints as three attributes of its `define` line:
//
//   mm = define(a, w, vars=[i, j], rdoms=[r0: 0..8], body="sum(a(i, r0) * w(r0, j))")
//
// vars are the definition's index Vars (row-major). rdoms lists each RDom
// the body uses, in order of first appearance: a one-dimensional RDom as
// `r0: MIN..END`, a multi-dimensional one as `(r0: 0..4, r1: 0..8)`, where
// the RVar runs over the half-open range [MIN, END) (extent END - MIN). RVars
// are renamed r0, r1, ... so that the printed form does not depend on
// Halide's global name counters.
//
// The body is the Halide Expr in infix form:
//   literals    5 (i32), -5, 0.5 / 1.0 / 1e-05 / inf / nan (f32), true, false;
//               other types as T(literal): f64(0.1), i64(5), u8(3), f16(1.5)
//   casts       T(x) for T in f64 f32 f16 bf16 i64 i32 i16 i8 u64 u32 u16 u8 bool;
//               a cast of an i32 or f32 literal keeps its parentheses:
//               f64((0.5)) is a Cast node, f64(0.5) a 64-bit literal
//   operators   + - * / % == != < <= > >= && || ! and unary -, C precedence
//   calls       min max select; sum maximum minimum product (inline
//               reductions, kept as PureExtern "tessera.<kind>" calls);
//               Halide math (exp, log, sqrt, sin, ..., pow, atan2, floor,
//               ceil, round, trunc, is_nan, is_inf, is_finite, fast_inverse,
//               fast_inverse_sqrt) printed without the _f32 suffix;
//               intrinsics abs absd strict_float bitwise_and bitwise_or
//               bitwise_xor bitwise_not shift_left shift_right
//   tensor reads name(i, r0): input k of the node, read through the Image
//               call named placeholders[k]; quoted ("exp"(i)) when the name
//               is not a plain identifier or clashes with a builtin.
// Everything else (Let, vector types, RDom predicates, other calls, Params)
// is refused with an Error naming the construct.
//
// The parser rebuilds the IR node by node (Add::make, Cast::make, ...), so
// the parsed body is structurally identical to the printed one; it never lets
// Halide insert implicit casts. It makes fresh placeholder names (tensor
// reads are placeholder_read calls, user_def.h) and fresh RDoms.
// This file does not know about Graphs or lines; parser.cpp maps the byte
// offsets it reports to lines and columns.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "tessera/error.h"
#include "tessera/graph.h"
#include "user_def.h"

namespace tessera {
namespace text {

// ---- Names, strings, numbers ---------------------------------------------

// [A-Za-z_][A-Za-z0-9_.]*: printed bare; other names are quoted.
bool is_name(std::string_view s);
// "..." with \" \\ \n \t \r and \xHH for other control and non-ASCII bytes.
std::string quote(std::string_view s);
// s bare when is_name(s), else quote(s).
std::string name_text(std::string_view s);
// The shortest text that reads back as exactly `v` ("0.5", "1e-05", "2",
// "inf", "-inf", "nan"). With force_float, integral values get ".0".
std::string format_double(double v, bool force_float);
// Same for a value that is exactly a float (f32, f16, bf16 literals).
std::string format_float(float v, bool force_float);

// ---- Tokens --------------------------------------------------------------

enum class Tok { end, name, number, string, punct };

struct Token {
  Tok kind = Tok::end;
  std::string text;       // name, number text, punctuation, or the unescaped string
  size_t pos = 0;         // byte offset of the token's first character
  bool is_float = false;  // number: has a '.' or an exponent
  // string: for every byte of `text` (and one past the end), its offset in the source.
  std::vector<size_t> source_pos;
};

// A syntax error at byte offset `pos` of the text being lexed or parsed.
class SyntaxError : public Error {
 public:
  SyntaxError(size_t pos, const std::string& msg) : Error(msg), pos(pos) {}
  size_t pos;
};

// Splits one line (or a body string) into tokens. Throws SyntaxError on a
// character that starts no token, an unterminated string or a bad escape.
// '#' is a token; the caller decides what follows it.
std::vector<Token> tokenize(std::string_view src);

// A number token's value: the magnitude of an integer token (throws
// SyntaxError when it is not an integer or is above 2^64 - 1), or any number
// token as a double (throws SyntaxError when it overflows).
uint64_t token_uint(const Token& t);
double token_double(const Token& t);

// ---- UserDef text ----------------------------------------------------------

struct RVarText {
  std::string name;
  int64_t min = 0;
  int64_t end = 0;  // exclusive: extent = end - min
};
using RDomText = std::vector<RVarText>;

struct UserDefText {
  std::vector<std::string> vars;
  std::vector<RDomText> rdoms;
  std::string body;
};

// `[i, j]` and `[r0: 0..8, (r1: 0..4, r2: 0..2)]`.
std::string format_vars(const std::vector<std::string>& vars);
std::string format_rdoms(const std::vector<RDomText>& rdoms);

// Prints `def`, whose input k is a tensor named input_names[k] of type
// input_types[k]. Throws Error naming the construct the text cannot express.
UserDefText print_user_def(const UserDef& def, const std::vector<std::string>& input_names,
                           const std::vector<TensorType>& input_types);

// Rebuilds a UserDef. Errors in the body throw SyntaxError with the offset in
// `text.body`; errors in vars or rdoms throw Error.
std::shared_ptr<UserDef> parse_user_def(const UserDefText& text, const std::vector<std::string>& input_names,
                                        const std::vector<TensorType>& input_types);

}  // namespace text
}  // namespace tessera
