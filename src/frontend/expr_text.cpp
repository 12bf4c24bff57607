// Printing and parsing a `define` node's UserDef (see expr_text.h), and the
// tokenizer and number/string formatting the graph printer and parser share.
//
// The printer walks the canonical body Expr (user_def.h) and refuses, with an
// Error naming it, any construct it cannot print exactly. The parser rebuilds
// the IR with the IR node constructors after checking every type itself, so
// that neither Halide's implicit casts nor its internal assertions can get in
// the way. Neither knows about Graphs, lines or columns.
#include "expr_text.h"

#include <algorithm>
#include <atomic>
#include <charconv>
#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <set>
#include <sstream>

#include "halide_util.h"

namespace tessera {
namespace text {

namespace {

bool is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_alnum(char c) { return is_alpha(c) || is_digit(c); }

std::string hex_byte(unsigned char c) {
  const char* digits = "0123456789abcdef";
  return std::string{digits[c >> 4], digits[c & 15]};
}

}  // namespace

// ---- Names, strings, numbers ---------------------------------------------

bool is_name(std::string_view s) {
  if (s.empty() || !is_alpha(s[0])) return false;
  for (char c : s)
    if (!is_alnum(c) && c != '.') return false;
  return true;
}

std::string quote(std::string_view s) {
  std::string r = "\"";
  for (char ch : s) {
    unsigned char c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"': r += "\\\""; break;
      case '\\': r += "\\\\"; break;
      case '\n': r += "\\n"; break;
      case '\t': r += "\\t"; break;
      case '\r': r += "\\r"; break;
      default:
        if (c < 0x20 || c >= 0x7f) r += "\\x" + hex_byte(c);
        else r += ch;
    }
  }
  return r + "\"";
}

std::string name_text(std::string_view s) { return is_name(s) ? std::string(s) : quote(s); }

namespace {
std::string finish_number(std::string s, bool force_float) {
  if (force_float && s.find_first_of(".en") == std::string::npos) s += ".0";
  return s;
}
}  // namespace

std::string format_double(double v, bool force_float) {
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof buf, v);
  return finish_number(std::string(buf, r.ptr), force_float);
}

std::string format_float(float v, bool force_float) {
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof buf, v);
  return finish_number(std::string(buf, r.ptr), force_float);
}

// ---- Tokens --------------------------------------------------------------

std::vector<Token> tokenize(std::string_view s) {
  std::vector<Token> out;
  const size_t n = s.size();
  size_t i = 0;
  while (i < n) {
    char c = s[i];
    if (c == ' ' || c == '\t' || c == '\r') {
      ++i;
      continue;
    }
    Token t;
    t.pos = i;
    if (is_alpha(c)) {
      size_t j = i;
      while (j < n && (is_alnum(s[j]) || s[j] == '.')) ++j;
      t.kind = Tok::name;
      t.text = std::string(s.substr(i, j - i));
      i = j;
    } else if (is_digit(c)) {
      size_t j = i;
      while (j < n && is_digit(s[j])) ++j;
      if (j + 1 < n && s[j] == '.' && is_digit(s[j + 1])) {
        t.is_float = true;
        ++j;
        while (j < n && is_digit(s[j])) ++j;
      }
      if (j < n && (s[j] == 'e' || s[j] == 'E')) {
        size_t k = j + 1;
        if (k < n && (s[k] == '+' || s[k] == '-')) ++k;
        if (k < n && is_digit(s[k])) {
          t.is_float = true;
          j = k;
          while (j < n && is_digit(s[j])) ++j;
        }
      }
      t.kind = Tok::number;
      t.text = std::string(s.substr(i, j - i));
      i = j;
    } else if (c == '"') {
      t.kind = Tok::string;
      size_t j = i + 1;
      bool closed = false;
      while (j < n) {
        char d = s[j];
        if (d == '"') {
          closed = true;
          ++j;
          break;
        }
        t.source_pos.push_back(j);
        if (d != '\\') {
          t.text += d;
          ++j;
          continue;
        }
        if (j + 1 >= n) break;
        char e = s[j + 1];
        switch (e) {
          case '"': t.text += '"'; j += 2; break;
          case '\\': t.text += '\\'; j += 2; break;
          case 'n': t.text += '\n'; j += 2; break;
          case 't': t.text += '\t'; j += 2; break;
          case 'r': t.text += '\r'; j += 2; break;
          case 'x': {
            auto hex = [](char h) {
              if (h >= '0' && h <= '9') return h - '0';
              if (h >= 'a' && h <= 'f') return h - 'a' + 10;
              if (h >= 'A' && h <= 'F') return h - 'A' + 10;
              return -1;
            };
            int hi = j + 2 < n ? hex(s[j + 2]) : -1;
            int lo = j + 3 < n ? hex(s[j + 3]) : -1;
            if (hi < 0 || lo < 0) throw SyntaxError(j, "bad escape in string: \\x needs two hex digits");
            t.text += static_cast<char>(hi * 16 + lo);
            j += 4;
            break;
          }
          default: {
            unsigned char u = static_cast<unsigned char>(e);
            throw SyntaxError(j, u >= 0x20 && u < 0x7f ? "unknown escape '\\" + std::string(1, e) + "' in string"
                                                       : "unknown escape in string");
          }
        }
      }
      if (!closed) throw SyntaxError(i, "unterminated string (missing closing '\"')");
      t.source_pos.push_back(j - 1);
      i = j;
    } else {
      static const char* two[] = {"..", "<=", ">=", "==", "!=", "&&", "||"};
      bool found = false;
      if (i + 1 < n)
        for (const char* p : two)
          if (s[i] == p[0] && s[i + 1] == p[1]) {
            t.text = p;
            found = true;
          }
      if (!found && std::strchr("()[]{},=:#+-*/%!<>", c) != nullptr && c != '\0') {
        t.text = std::string(1, c);
        found = true;
      }
      if (!found) {
        unsigned char u = static_cast<unsigned char>(c);
        if (u >= 0x20 && u < 0x7f) throw SyntaxError(i, "unexpected character '" + std::string(1, c) + "'");
        throw SyntaxError(i, "unexpected byte 0x" + hex_byte(u) + " (not part of any token)");
      }
      t.kind = Tok::punct;
      i += t.text.size();
    }
    out.push_back(std::move(t));
  }
  Token end;
  end.pos = n;
  out.push_back(end);
  return out;
}

uint64_t token_uint(const Token& t) {
  if (t.kind != Tok::number || t.is_float) throw SyntaxError(t.pos, "expected an integer, found '" + t.text + "'");
  uint64_t v = 0;
  auto r = std::from_chars(t.text.data(), t.text.data() + t.text.size(), v);
  if (r.ec != std::errc() || r.ptr != t.text.data() + t.text.size())
    throw SyntaxError(t.pos, "integer " + t.text + " is out of range");
  return v;
}

double token_double(const Token& t) {
  double v = 0;
  auto r = std::from_chars(t.text.data(), t.text.data() + t.text.size(), v);
  if (r.ec != std::errc() || r.ptr != t.text.data() + t.text.size())
    throw SyntaxError(t.pos, "number " + t.text + " is out of the range of a double");
  return v;
}

// ---- UserDef text ----------------------------------------------------------

std::string format_vars(const std::vector<std::string>& vars) {
  std::string s = "[";
  for (size_t i = 0; i < vars.size(); ++i) s += (i ? ", " : "") + vars[i];
  return s + "]";
}

std::string format_rdoms(const std::vector<RDomText>& rdoms) {
  std::string s = "[";
  for (size_t i = 0; i < rdoms.size(); ++i) {
    if (i) s += ", ";
    const RDomText& r = rdoms[i];
    if (r.size() != 1) s += "(";
    for (size_t d = 0; d < r.size(); ++d)
      s += (d ? ", " : "") + r[d].name + ": " + std::to_string(r[d].min) + ".." + std::to_string(r[d].end);
    if (r.size() != 1) s += ")";
  }
  return s + "]";
}

namespace {

using namespace Halide;
using namespace Halide::Internal;

// Halide types the body may use, by name.
const std::pair<const char*, Type>* type_table(size_t* n) {
  static const std::pair<const char*, Type> table[] = {
      {"f64", Float(64)}, {"f32", Float(32)}, {"f16", Float(16)}, {"bf16", BFloat(16)}, {"i64", Int(64)},
      {"i32", Int(32)},   {"i16", Int(16)},   {"i8", Int(8)},     {"u64", UInt(64)},    {"u32", UInt(32)},
      {"u16", UInt(16)},  {"u8", UInt(8)},    {"bool", Bool()}};
  *n = sizeof table / sizeof table[0];
  return table;
}

const char* type_text(const Type& t) {
  size_t n;
  const auto* table = type_table(&n);
  for (size_t i = 0; i < n; ++i)
    if (table[i].second == t) return table[i].first;
  return nullptr;
}

bool type_from_text(const std::string& s, Type* out) {
  size_t n;
  const auto* table = type_table(&n);
  for (size_t i = 0; i < n; ++i)
    if (s == table[i].first) {
      *out = table[i].second;
      return true;
    }
  return false;
}

std::string halide_type_text(const Type& t) {
  if (const char* s = type_text(t)) return s;
  std::ostringstream os;
  os << t;
  return os.str();
}

struct MathFn {
  const char* name;
  int arity;
  bool bool_result;
};
const std::vector<MathFn>& math_fns() {
  static const std::vector<MathFn> fns = {
      {"sqrt", 1, false},  {"sin", 1, false},     {"asin", 1, false},   {"cos", 1, false},
      {"acos", 1, false},  {"tan", 1, false},     {"atan", 1, false},   {"atan2", 2, false},
      {"sinh", 1, false},  {"asinh", 1, false},   {"cosh", 1, false},   {"acosh", 1, false},
      {"tanh", 1, false},  {"atanh", 1, false},   {"exp", 1, false},    {"log", 1, false},
      {"pow", 2, false},   {"floor", 1, false},   {"ceil", 1, false},   {"round", 1, false},
      {"trunc", 1, false}, {"is_nan", 1, true},   {"is_inf", 1, true},  {"is_finite", 1, true},
      {"fast_inverse", 1, false}, {"fast_inverse_sqrt", 1, false}};
  return fns;
}
const MathFn* find_math(const std::string& name) {
  for (const MathFn& f : math_fns())
    if (name == f.name) return &f;
  return nullptr;
}
const char* float_suffix(const Type& t) {
  if (t == Float(16)) return "f16";
  if (t == Float(32)) return "f32";
  if (t == Float(64)) return "f64";
  return nullptr;
}

struct IntrinsicFn {
  const char* name;
  Call::IntrinsicOp op;
  int arity;
  bool unsigned_result;  // the result of a signed int argument is unsigned (abs, absd)
};
const std::vector<IntrinsicFn>& intrinsic_fns() {
  static const std::vector<IntrinsicFn> fns = {
      {"abs", Call::abs, 1, true},
      {"absd", Call::absd, 2, true},
      {"strict_float", Call::strict_float, 1, false},
      {"bitwise_and", Call::bitwise_and, 2, false},
      {"bitwise_or", Call::bitwise_or, 2, false},
      {"bitwise_xor", Call::bitwise_xor, 2, false},
      {"bitwise_not", Call::bitwise_not, 1, false},
      {"shift_left", Call::shift_left, 2, false},
      {"shift_right", Call::shift_right, 2, false}};
  return fns;
}
Type intrinsic_result(const IntrinsicFn& f, const Type& arg) {
  return f.unsigned_result && arg.is_int() ? arg.with_code(Type::UInt) : arg;
}

const char* const kReductions[] = {"sum", "maximum", "minimum", "product"};
bool is_reduction(const std::string& s) {
  for (const char* r : kReductions)
    if (s == r) return true;
  return false;
}

// Words a var or RVar may not be named, and names a tensor read must quote.
bool is_literal_word(const std::string& s) { return s == "true" || s == "false" || s == "inf" || s == "nan"; }
bool is_builtin_word(const std::string& s) {
  Type t;
  return is_literal_word(s) || type_from_text(s, &t) || s == "select" || s == "min" || s == "max" ||
         is_reduction(s) || find_math(s) != nullptr ||
         std::any_of(intrinsic_fns().begin(), intrinsic_fns().end(),
                     [&](const IntrinsicFn& f) { return s == f.name; });
}
bool is_index_name(const std::string& s) { return is_name(s) && !is_literal_word(s); }

bool is_literal(const Expr& e) { return e.as<IntImm>() || e.as<UIntImm>() || e.as<FloatImm>(); }
// Literals printed without a type: 5, -5, 0.5, inf (i32 and f32).
bool prints_bare(const Expr& e) {
  const IntImm* i = e.as<IntImm>();
  const FloatImm* f = e.as<FloatImm>();
  return (i && i->type == Int(32)) || (f && f->type == Float(32));
}
bool is_plain_zero(const Expr& e) {
  if (const IntImm* i = e.as<IntImm>()) return i->value == 0;
  if (const UIntImm* u = e.as<UIntImm>()) return u->value == 0;
  if (const FloatImm* f = e.as<FloatImm>()) return f->value == 0 && !std::signbit(f->value);
  return false;
}

const char* node_type_name(IRNodeType t) {
  switch (t) {
    case IRNodeType::StringImm: return "a string literal";
    case IRNodeType::Broadcast: return "a vector Broadcast";
    case IRNodeType::Load: return "a Load";
    case IRNodeType::Ramp: return "a vector Ramp";
    case IRNodeType::Let: return "a Let";
    case IRNodeType::Shuffle: return "a vector Shuffle";
    case IRNodeType::VectorReduce: return "a VectorReduce";
    default: return "an unknown IR node";
  }
}

// ---- Printer ---------------------------------------------------------------

constexpr int kUnaryPrec = 7;
constexpr int kPrimaryPrec = 8;

struct Printed {
  std::string s;
  int prec;
};

class CollectRDoms : public IRVisitor {
 public:
  std::vector<ReductionDomain> rdoms;
  using IRVisitor::visit;
  void visit(const Variable* v) override {
    if (!v->reduction_domain.defined()) return;
    for (const ReductionDomain& r : rdoms)
      if (r.same_as(v->reduction_domain)) return;
    rdoms.push_back(v->reduction_domain);
  }
};

class BodyPrinter {
 public:
  BodyPrinter(const UserDef& def, const std::vector<std::string>& input_names,
              const std::vector<TensorType>& input_types, UserDefText* out)
      : def_(def), input_names_(input_names), input_types_(input_types) {
    if (def.placeholders.size() != input_names.size())
      unsupported("a definition with " + std::to_string(def.placeholders.size()) + " placeholders for " +
                  std::to_string(input_names.size()) + " inputs");
    // Vars keep their names where they are usable identifiers.
    std::set<std::string> used;
    for (const Var& v : def.vars) used.insert(v.name());
    int fresh = 0;
    std::set<std::string> printed;
    for (const Var& v : def.vars) {
      if (var_names_.count(v.name())) unsupported("two index Vars named '" + v.name() + "'");
      std::string name = v.name();
      if (!is_index_name(name) || printed.count(name)) {
        do name = "v" + std::to_string(fresh++);
        while (used.count(name) || printed.count(name));
      }
      var_names_[v.name()] = name;
      printed.insert(name);
      out->vars.push_back(name);
    }
    // RDoms in order of first appearance; RVars renamed r0, r1, ...
    CollectRDoms c;
    def.body.accept(&c);
    int counter = 0;
    for (const ReductionDomain& rd : c.rdoms) {
      Expr pred = rd.predicate();
      if (pred.defined() && !is_const_one(pred)) unsupported("an RDom with a where() predicate");
      RDomText rt;
      for (const ReductionVariable& rv : rd.domain()) {
        const IntImm* mn = rv.min.as<IntImm>();
        const IntImm* ex = rv.extent.as<IntImm>();
        if (!mn || !ex || mn->type != Int(32) || ex->type != Int(32))
          unsupported("an RDom whose bounds are not i32 constants (RVar '" + rv.var + "')");
        std::string name;
        do name = "r" + std::to_string(counter++);
        while (printed.count(name));
        rvars_.push_back({rd, rv.var, name});
        rt.push_back({name, mn->value, mn->value + ex->value});
      }
      out->rdoms.push_back(rt);
    }
  }

  Printed print(const Expr& e) {
    if (!e.defined()) unsupported("an undefined Expr");
    if (e.type().lanes() != 1) unsupported("a vector Expr of type " + halide_type_text(e.type()));
    switch (e->node_type) {
      case IRNodeType::IntImm: {
        const IntImm* i = e.as<IntImm>();
        if (i->type == Int(32)) return {std::to_string(i->value), kPrimaryPrec};
        return {type_name(i->type) + "(" + std::to_string(i->value) + ")", kPrimaryPrec};
      }
      case IRNodeType::UIntImm: {
        const UIntImm* u = e.as<UIntImm>();
        if (u->type.is_bool()) return {u->value ? "true" : "false", kPrimaryPrec};
        return {type_name(u->type) + "(" + std::to_string(u->value) + ")", kPrimaryPrec};
      }
      case IRNodeType::FloatImm: {
        const FloatImm* f = e.as<FloatImm>();
        if (f->type == Float(32)) return {format_float(static_cast<float>(f->value), true), kPrimaryPrec};
        if (f->type == Float(64)) return {"f64(" + format_double(f->value, true) + ")", kPrimaryPrec};
        return {type_name(f->type) + "(" + format_float(static_cast<float>(f->value), true) + ")", kPrimaryPrec};
      }
      case IRNodeType::Cast: {
        const Cast* c = e.as<Cast>();
        std::string inner = print(c->value).s;
        // T(5) would read back as a literal of type T: keep the cast visible.
        if (prints_bare(c->value)) inner = "(" + inner + ")";
        return {type_name(c->type) + "(" + inner + ")", kPrimaryPrec};
      }
      case IRNodeType::Variable: return {variable(e.as<Variable>()), kPrimaryPrec};
      case IRNodeType::Add: return binary(e.as<Add>(), "+", 5);
      case IRNodeType::Sub: {
        const Sub* s = e.as<Sub>();
        if (is_plain_zero(s->a) && !s->a.type().is_bool()) {
          Printed b = print(s->b);
          std::string t = b.s;
          if (is_literal(s->b) || b.prec < kUnaryPrec || (!t.empty() && t[0] == '-')) t = "(" + t + ")";
          return {"-" + t, kUnaryPrec};
        }
        return binary(s, "-", 5);
      }
      case IRNodeType::Mul: return binary(e.as<Mul>(), "*", 6);
      case IRNodeType::Div: return binary(e.as<Div>(), "/", 6);
      case IRNodeType::Mod: return binary(e.as<Mod>(), "%", 6);
      case IRNodeType::EQ: return binary(e.as<EQ>(), "==", 3);
      case IRNodeType::NE: return binary(e.as<NE>(), "!=", 3);
      case IRNodeType::LT: return binary(e.as<LT>(), "<", 4);
      case IRNodeType::LE: return binary(e.as<LE>(), "<=", 4);
      case IRNodeType::GT: return binary(e.as<GT>(), ">", 4);
      case IRNodeType::GE: return binary(e.as<GE>(), ">=", 4);
      case IRNodeType::And: return binary(e.as<And>(), "&&", 2);
      case IRNodeType::Or: return binary(e.as<Or>(), "||", 1);
      case IRNodeType::Not: return {"!" + wrap(e.as<Not>()->a, kUnaryPrec), kUnaryPrec};
      case IRNodeType::Min: {
        const Min* m = e.as<Min>();
        return {"min(" + print(m->a).s + ", " + print(m->b).s + ")", kPrimaryPrec};
      }
      case IRNodeType::Max: {
        const Max* m = e.as<Max>();
        return {"max(" + print(m->a).s + ", " + print(m->b).s + ")", kPrimaryPrec};
      }
      case IRNodeType::Select: {
        const Select* s = e.as<Select>();
        return {"select(" + print(s->condition).s + ", " + print(s->true_value).s + ", " +
                    print(s->false_value).s + ")",
                kPrimaryPrec};
      }
      case IRNodeType::Call: return {call(e.as<Call>()), kPrimaryPrec};
      default: unsupported(node_type_name(e->node_type));
    }
  }

 private:
  struct RVarName {
    ReductionDomain rdom;
    std::string var;
    std::string name;
  };

  [[noreturn]] void unsupported(const std::string& what) {
    fail("the text form of a define body cannot express ", what);
  }

  std::string type_name(const Type& t) {
    if (const char* s = type_text(t)) return s;
    unsupported("the type " + halide_type_text(t));
  }

  std::string wrap(const Expr& e, int min_prec) {
    Printed p = print(e);
    return p.prec < min_prec ? "(" + p.s + ")" : p.s;
  }

  template <typename T>
  Printed binary(const T* op, const char* sym, int prec) {
    return {wrap(op->a, prec) + " " + sym + " " + wrap(op->b, prec + 1), prec};
  }

  std::string args(const std::vector<Expr>& a) {
    std::string s;
    for (size_t i = 0; i < a.size(); ++i) s += (i ? ", " : "") + print(a[i]).s;
    return s;
  }

  std::string variable(const Variable* v) {
    if (v->param.defined()) unsupported("the Param '" + v->name + "'");
    if (v->image.defined()) unsupported("the Buffer '" + v->name + "'");
    if (v->type != Int(32)) unsupported("the variable '" + v->name + "' of type " + halide_type_text(v->type));
    if (v->reduction_domain.defined()) {
      for (const RVarName& r : rvars_)
        if (r.rdom.same_as(v->reduction_domain) && r.var == v->name) return r.name;
      unsupported("the RVar '" + v->name + "', which is not a dimension of its RDom");
    }
    auto it = var_names_.find(v->name);
    if (it == var_names_.end())
      unsupported("the free variable '" + v->name + "' (not one of the definition's Vars or an RVar)");
    return it->second;
  }

  std::string call(const Call* c) {
    if (c->call_type == Call::Image) {
      for (size_t k = 0; k < def_.placeholders.size(); ++k) {
        if (def_.placeholders[k] != c->name) continue;
        const std::string& name = input_names_[k];
        if (static_cast<int>(c->args.size()) != input_types_[k].rank())
          unsupported("a read of '" + name + "' (" + to_string(input_types_[k]) + ") with " +
                      std::to_string(c->args.size()) + " indices");
        std::string ref = is_name(name) && !is_builtin_word(name) ? name : quote(name);
        return ref + "(" + args(c->args) + ")";
      }
      unsupported("a read of the image '" + c->name + "', which is not one of the node's inputs");
    }
    if (c->call_type == Call::PureExtern) {
      const std::string& n = c->name;
      const std::string prefix = kReducePrefix;
      if (n.compare(0, prefix.size(), prefix) == 0) {
        std::string kind = n.substr(prefix.size());
        if (!is_reduction(kind)) unsupported("the reduction call '" + n + "'");
        if (c->args.size() != 1 || c->args[0].type() != c->type)
          unsupported("the reduction call '" + n + "' with unexpected arguments");
        return kind + "(" + print(c->args[0]).s + ")";
      }
      size_t us = n.rfind('_');
      if (us != std::string::npos && !c->args.empty()) {
        const MathFn* f = find_math(n.substr(0, us));
        const char* suffix = float_suffix(c->args[0].type());
        bool ok = f && suffix && n.substr(us + 1) == suffix && static_cast<int>(c->args.size()) == f->arity &&
                  c->type == (f->bool_result ? Bool() : c->args[0].type());
        for (const Expr& a : c->args) ok = ok && a.type() == c->args[0].type();
        if (ok) return std::string(f->name) + "(" + args(c->args) + ")";
      }
      unsupported("a call to the extern function '" + n + "'");
    }
    if (c->call_type == Call::PureIntrinsic) {
      for (const IntrinsicFn& f : intrinsic_fns()) {
        if (!c->is_intrinsic(f.op)) continue;
        bool ok = static_cast<int>(c->args.size()) == f.arity && c->type == intrinsic_result(f, c->args[0].type());
        for (const Expr& a : c->args) ok = ok && a.type() == c->args[0].type();
        if (!ok) unsupported(std::string("the intrinsic '") + f.name + "' with these argument types");
        return std::string(f.name) + "(" + args(c->args) + ")";
      }
      unsupported("the intrinsic '" + c->name + "'");
    }
    if (c->call_type == Call::Halide) unsupported("a call to the Func '" + c->name + "'");
    unsupported("the call '" + c->name + "'");
  }

  const UserDef& def_;
  const std::vector<std::string>& input_names_;
  const std::vector<TensorType>& input_types_;
  std::map<std::string, std::string> var_names_;  // Halide Var name -> printed name
  std::vector<RVarName> rvars_;
};

// ---- Parser ----------------------------------------------------------------

constexpr int kMaxDepth = 1000;  // expr() and unary() frames: about 500 levels of nesting

class BodyParser {
 public:
  BodyParser(const std::string& body, std::map<std::string, Expr> names,
             const std::vector<std::string>& input_names, const std::vector<TensorType>& input_types,
             const std::vector<std::string>& placeholders)
      : toks_(tokenize(body)),
        names_(std::move(names)),
        input_names_(input_names),
        input_types_(input_types),
        placeholders_(placeholders) {}

  Expr parse() {
    if (peek().kind == Tok::end) throw SyntaxError(peek().pos, "the body is empty");
    Expr e = expr(1);
    if (peek().kind != Tok::end) throw SyntaxError(peek().pos, "unexpected " + describe(peek()) + " after the expression");
    return e;
  }

 private:
  const Token& peek(size_t ahead = 0) const { return toks_[std::min(i_ + ahead, toks_.size() - 1)]; }
  const Token& next() {
    const Token& t = peek();
    if (i_ < toks_.size() - 1) ++i_;
    return t;
  }
  static bool is_punct(const Token& t, const char* p) { return t.kind == Tok::punct && t.text == p; }
  static std::string describe(const Token& t) {
    switch (t.kind) {
      case Tok::end: return "end of the body";
      case Tok::string: return "string " + quote(t.text);
      default: return "'" + t.text + "'";
    }
  }
  void expect(const char* p) {
    if (!is_punct(peek(), p))
      throw SyntaxError(peek().pos, std::string("expected '") + p + "', found " + describe(peek()));
    next();
  }
  [[noreturn]] static void error(size_t pos, const std::string& msg) { throw SyntaxError(pos, msg); }

  struct Depth {
    explicit Depth(BodyParser* p) : p(p) {
      if (++p->depth_ > kMaxDepth) error(p->peek().pos, "the expression is nested too deeply");
    }
    ~Depth() { --p->depth_; }
    BodyParser* p;
  };

  static int binary_prec(const Token& t) {
    if (t.kind != Tok::punct) return -1;
    const std::string& s = t.text;
    if (s == "||") return 1;
    if (s == "&&") return 2;
    if (s == "==" || s == "!=") return 3;
    if (s == "<" || s == "<=" || s == ">" || s == ">=") return 4;
    if (s == "+" || s == "-") return 5;
    if (s == "*" || s == "/" || s == "%") return 6;
    return -1;
  }

  Expr expr(int min_prec) {
    Depth d(this);
    Expr lhs = unary();
    while (true) {
      const Token& op = peek();
      int prec = binary_prec(op);
      if (prec < 0 || prec < min_prec) return lhs;
      Token o = next();
      Expr rhs = expr(prec + 1);
      lhs = make_binary(o, lhs, rhs);
    }
  }

  Expr make_binary(const Token& op, const Expr& a, const Expr& b) {
    const std::string& s = op.text;
    if (a.type() != b.type())
      error(op.pos, "operands of '" + s + "' have different types " + halide_type_text(a.type()) + " and " +
                        halide_type_text(b.type()) + " (cast one of them, e.g. " + halide_type_text(a.type()) +
                        "(...))");
    if ((s == "&&" || s == "||") && !a.type().is_bool())
      error(op.pos, "operands of '" + s + "' must be bool, not " + halide_type_text(a.type()));
    if (s == "+") return Add::make(a, b);
    if (s == "-") return Sub::make(a, b);
    if (s == "*") return Mul::make(a, b);
    if (s == "/") return Div::make(a, b);
    if (s == "%") return Mod::make(a, b);
    if (s == "==") return EQ::make(a, b);
    if (s == "!=") return NE::make(a, b);
    if (s == "<") return LT::make(a, b);
    if (s == "<=") return LE::make(a, b);
    if (s == ">") return GT::make(a, b);
    if (s == ">=") return GE::make(a, b);
    if (s == "&&") return And::make(a, b);
    return Or::make(a, b);
  }

  // A number token or inf / nan (not called): the start of a literal.
  bool at_literal(size_t ahead) const {
    const Token& t = peek(ahead);
    if (t.kind == Tok::number) return true;
    return t.kind == Tok::name && (t.text == "inf" || t.text == "nan") && !is_punct(peek(ahead + 1), "(");
  }

  double literal_double(const Token& t, bool negative) {
    double v = t.kind == Tok::number ? token_double(t)
               : t.text == "inf"     ? std::numeric_limits<double>::infinity()
                                     : std::numeric_limits<double>::quiet_NaN();
    return negative ? -v : v;
  }

  // A literal of type `t`, from a number / inf / nan token.
  Expr literal(const Type& t, const Token& tok, bool negative) {
    if (t.is_float()) {
      double v = literal_double(tok, negative);
      return FloatImm::make(t, v);
    }
    if (tok.kind != Tok::number || tok.is_float)
      error(tok.pos, "expected an integer literal for type " + halide_type_text(t) + ", found " + describe(tok));
    uint64_t m = token_uint(tok);
    std::string range_msg = "literal " + std::string(negative ? "-" : "") + tok.text + " is out of range for " +
                            halide_type_text(t);
    if (t.is_bool()) {
      if (m > 1 || (negative && m != 0)) error(tok.pos, range_msg);
      return UIntImm::make(t, m);
    }
    if (t.is_uint()) {
      if ((negative && m != 0) || (t.bits() < 64 && m > (uint64_t(1) << t.bits()) - 1)) error(tok.pos, range_msg);
      return UIntImm::make(t, m);
    }
    uint64_t limit = uint64_t(1) << (t.bits() - 1);  // |min|; max is limit - 1
    if (negative ? m > limit : m >= limit) error(tok.pos, range_msg);
    int64_t v = negative ? static_cast<int64_t>(0 - m) : static_cast<int64_t>(m);
    return IntImm::make(t, v);
  }

  // An untyped literal: integers are i32, others f32.
  Expr plain_literal(const Token& tok, bool negative) {
    if (tok.kind == Tok::number && !tok.is_float) {
      uint64_t m = token_uint(tok);
      if (negative ? m > (uint64_t(1) << 31) : m >= (uint64_t(1) << 31))
        error(tok.pos, "integer literal " + std::string(negative ? "-" : "") + tok.text +
                           " is out of range for i32 (write i64(...))");
      return literal(Int(32), tok, negative);
    }
    return literal(Float(32), tok, negative);
  }

  Expr unary() {
    Depth d(this);
    const Token& t = peek();
    if (is_punct(t, "-")) {
      size_t pos = next().pos;
      if (at_literal(0)) return plain_literal(next(), true);
      Expr x = unary();
      if (x.type().is_bool()) error(pos, "cannot negate a bool");
      return Sub::make(make_zero(x.type()), x);
    }
    if (is_punct(t, "!")) {
      size_t pos = next().pos;
      Expr x = unary();
      if (!x.type().is_bool()) error(pos, "the operand of '!' must be bool, not " + halide_type_text(x.type()));
      return Not::make(x);
    }
    return primary();
  }

  std::vector<Expr> call_args(const std::string& what, size_t pos, int arity) {
    expect("(");
    std::vector<Expr> args;
    if (!is_punct(peek(), ")")) {
      while (true) {
        args.push_back(expr(1));
        if (is_punct(peek(), ",")) {
          next();
          continue;
        }
        break;
      }
    }
    expect(")");
    if (arity >= 0 && static_cast<int>(args.size()) != arity)
      error(pos, what + " takes " + std::to_string(arity) + " argument" + (arity == 1 ? "" : "s") + ", got " +
                     std::to_string(args.size()));
    return args;
  }

  Expr primary() {
    const Token& t = peek();
    if (at_literal(0)) return plain_literal(next(), false);
    if (is_punct(t, "(")) {
      next();
      Expr e = expr(1);
      expect(")");
      return e;
    }
    if (t.kind == Tok::string && is_punct(peek(1), "(")) {
      Token name = next();
      return tensor_read(name);
    }
    if (t.kind != Tok::name) error(t.pos, "expected an expression, found " + describe(t));
    Token name = next();
    if (!is_punct(peek(), "(")) {
      if (name.text == "true" || name.text == "false") return UIntImm::make(Bool(), name.text == "true");
      auto it = names_.find(name.text);
      if (it != names_.end()) return it->second;
      for (const std::string& n : input_names_)
        if (n == name.text)
          error(name.pos, "'" + n + "' is a tensor: read it with an index, e.g. " + n + "(i)");
      error(name.pos, "unknown variable '" + name.text + "' (not one of vars or rdoms)");
    }
    return call(name);
  }

  Expr call(const Token& name) {
    const std::string& n = name.text;
    Type type;
    if (type_from_text(n, &type)) {
      // T(literal) is a literal of type T; T(anything else) is a cast.
      size_t k = is_punct(peek(1), "-") ? 2 : 1;
      if (at_literal(k) && is_punct(peek(k + 1), ")")) {
        next();
        bool negative = k == 2;
        if (negative) next();
        Token lit = next();
        expect(")");
        return literal(type, lit, negative);
      }
      std::vector<Expr> a = call_args("the cast " + n + "(...)", name.pos, 1);
      return Cast::make(type, a[0]);
    }
    if (n == "select") {
      std::vector<Expr> a = call_args("select", name.pos, 3);
      if (!a[0].type().is_bool())
        error(name.pos, "the condition of select must be bool, not " + halide_type_text(a[0].type()));
      same_types("select", name.pos, {a[1], a[2]});
      return Select::make(a[0], a[1], a[2]);
    }
    if (n == "min" || n == "max") {
      std::vector<Expr> a = call_args(n, name.pos, 2);
      same_types(n, name.pos, a);
      return n == "min" ? Min::make(a[0], a[1]) : Max::make(a[0], a[1]);
    }
    if (is_reduction(n)) {
      std::vector<Expr> a = call_args(n, name.pos, 1);
      return Call::make(a[0].type(), kReducePrefix + n, a, Call::PureExtern);
    }
    if (const MathFn* f = find_math(n)) {
      std::vector<Expr> a = call_args(n, name.pos, f->arity);
      same_types(n, name.pos, a);
      const char* suffix = float_suffix(a[0].type());
      if (!suffix)
        error(name.pos, n + " needs an f16, f32 or f64 argument, not " + halide_type_text(a[0].type()) +
                            " (cast it, e.g. f32(...))");
      return Call::make(f->bool_result ? Bool() : a[0].type(), n + "_" + suffix, a, Call::PureExtern);
    }
    for (const IntrinsicFn& f : intrinsic_fns()) {
      if (n != f.name) continue;
      std::vector<Expr> a = call_args(n, name.pos, f.arity);
      same_types(n, name.pos, a);
      return Call::make(intrinsic_result(f, a[0].type()), f.op, a, Call::PureIntrinsic);
    }
    return tensor_read(name);
  }

  void same_types(const std::string& what, size_t pos, const std::vector<Expr>& a) {
    for (const Expr& e : a)
      if (e.type() != a[0].type())
        error(pos, "the arguments of " + what + " have different types " + halide_type_text(a[0].type()) + " and " +
                       halide_type_text(e.type()));
  }

  Expr tensor_read(const Token& name) {
    size_t k = 0;
    while (k < input_names_.size() && input_names_[k] != name.text) ++k;
    if (k == input_names_.size())
      error(name.pos, "unknown function or tensor '" + name.text + "' (tensors read must be inputs of the define)");
    std::vector<Expr> a = call_args("tensor '" + name.text + "'", name.pos, input_types_[k].rank());
    for (size_t d = 0; d < a.size(); ++d)
      if (a[d].type() != Int(32))
        error(name.pos, "index " + std::to_string(d) + " of tensor '" + name.text + "' has type " +
                            halide_type_text(a[d].type()) + "; indices are i32");
    return placeholder_read(placeholders_[k], halide_type(input_types_[k].dtype), a);
  }

  std::vector<Token> toks_;
  size_t i_ = 0;
  int depth_ = 0;
  std::map<std::string, Expr> names_;  // vars and RVars
  const std::vector<std::string>& input_names_;
  const std::vector<TensorType>& input_types_;
  const std::vector<std::string>& placeholders_;
};

}  // namespace

UserDefText print_user_def(const UserDef& def, const std::vector<std::string>& input_names,
                           const std::vector<TensorType>& input_types) {
  if (input_names.size() != input_types.size()) fail("print_user_def: ", input_names.size(), " names for ",
                                                     input_types.size(), " types");
  UserDefText out;
  try {
    BodyPrinter p(def, input_names, input_types, &out);
    out.body = p.print(def.body).s;
  } catch (const Halide::Error& e) {
    fail("the text form of a define body: Halide error: ", e.what());
  }
  return out;
}

std::shared_ptr<UserDef> parse_user_def(const UserDefText& text, const std::vector<std::string>& input_names,
                                        const std::vector<TensorType>& input_types) {
  if (input_names.size() != input_types.size()) fail("parse_user_def: ", input_names.size(), " names for ",
                                                     input_types.size(), " types");
  auto def = std::make_shared<UserDef>();
  std::map<std::string, Expr> names;
  for (const std::string& v : text.vars) {
    if (!is_index_name(v)) fail("'", v, "' cannot name an index Var");
    if (names.count(v)) fail("the Var '", v, "' is listed twice");
    def->vars.emplace_back(v);
    names[v] = def->vars.back();
  }
  const int64_t i32_min = std::numeric_limits<int32_t>::min(), i32_max = std::numeric_limits<int32_t>::max();
  try {
    for (const RDomText& r : text.rdoms) {
      Region region;
      for (const RVarText& rv : r) {
        if (!is_index_name(rv.name)) fail("'", rv.name, "' cannot name an RVar");
        if (names.count(rv.name)) fail("the name '", rv.name, "' is used twice in vars and rdoms");
        if (rv.min < i32_min || rv.min > i32_max || rv.end < i32_min || rv.end > i32_max || rv.end < rv.min ||
            rv.end - rv.min > i32_max)
          fail("the range ", rv.min, "..", rv.end, " of RVar '", rv.name,
               "' is not an i32 range with end >= min");
        region.emplace_back(Expr(static_cast<int32_t>(rv.min)), Expr(static_cast<int32_t>(rv.end - rv.min)));
        names[rv.name] = Expr();  // placeholder until the RDom exists
      }
      if (region.empty()) fail("an RDom needs at least one dimension");
      RDom rdom(region);
      for (size_t d = 0; d < r.size(); ++d) names[r[d].name] = Expr(rdom[static_cast<int>(d)]);
    }
    static std::atomic<uint64_t> counter{0};
    uint64_t id = counter++;
    for (size_t k = 0; k < input_types.size(); ++k)
      def->placeholders.push_back("tessera_text_ph" + std::to_string(id) + "_" + std::to_string(k));
    BodyParser p(text.body, names, input_names, input_types, def->placeholders);
    def->body = p.parse();
  } catch (const SyntaxError&) {
    throw;
  } catch (const Halide::Error& e) {
    fail("Halide rejected the define body: ", e.what());
  }
  return def;
}

}  // namespace text
}  // namespace tessera
