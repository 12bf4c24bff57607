// The graph parser: parse() (see tessera/text.h), the inverse of print().
//
// Line by line: a `graph NAME {` header, node lines `name = op(inputs,
// key=value...)  # dtype[shape]`, `output NAME = NODE` lines and a closing
// `}`; blank lines and lines holding only a `# comment` are skipped. Nodes get
// the structure GraphBuilder gives them (ids = positions, inputs by id). Leaf
// types come from the type comment; every other node's type is inferred and
// must equal its comment. Every problem is a tessera::Error starting with
// "line L, column C:"; the finished graph is verify()'d. The parser never
// trusts its input: no text makes it crash or abort. It does not print
// (printer.cpp) and parses define bodies through expr_text.h.
#include <limits>
#include <map>
#include <optional>
#include <string_view>

#include "expr_text.h"
#include "op_registry.h"
#include "tessera/passes.h"
#include "tessera/text.h"
#include "user_def.h"

namespace tessera {

namespace {

using text::Tok;
using text::Token;

struct ParsedArg {
  Token key;  // kind == end for an input
  Token name;  // the input's name
  AttrValue value;
  std::vector<double> numbers;  // constant value= / values=
  bool is_number_list = false;
  std::vector<std::string> vars;  // define vars=
  std::vector<text::RDomText> rdoms;  // define rdoms=
  Token body;  // define body=
};

class GraphParser {
 public:
  Graph run(const std::string& src) {
    std::vector<std::string_view> lines;
    std::string_view all(src);
    size_t start = 0;
    while (true) {
      size_t nl = all.find('\n', start);
      lines.push_back(all.substr(start, nl == std::string_view::npos ? std::string_view::npos : nl - start));
      if (nl == std::string_view::npos) break;
      start = nl + 1;
    }
    enum { header, body, done } state = header;
    for (size_t l = 0; l < lines.size(); ++l) {
      line_ = l + 1;
      std::string_view text = lines[l];
      size_t first = text.find_first_not_of(" \t\r");
      if (first == std::string_view::npos || text[first] == '#') continue;  // blank or comment
      try {
        toks_ = text::tokenize(text);
      } catch (const text::SyntaxError& e) {
        error(e.pos, e.what());
      }
      i_ = 0;
      if (state == header) {
        parse_header();
        state = body;
      } else if (state == body) {
        if (is_punct(peek(), "}")) {
          next();
          expect_end("after the closing '}'");
          state = done;
        } else if (peek().kind == Tok::name && peek().text == "output" && !is_punct(peek(1), "=")) {
          parse_output();
        } else {
          parse_node();
        }
      } else {
        error(first, "unexpected text after the closing '}' of the graph");
      }
    }
    if (state != done) {
      line_ = lines.size();
      size_t col = lines.back().size();
      if (state == header) error(col, "expected 'graph NAME {' (the text holds no graph)");
      error(col, "unexpected end of text: the graph is missing its closing '}'");
    }
    verify(g_, {true});
    return std::move(g_);
  }

 private:
  [[noreturn]] void error(size_t pos, const std::string& msg) const {
    fail("line ", line_, ", column ", pos + 1, ": ", msg);
  }

  const Token& peek(size_t ahead = 0) const { return toks_[std::min(i_ + ahead, toks_.size() - 1)]; }
  const Token& next() {
    const Token& t = toks_[i_];
    if (i_ + 1 < toks_.size()) ++i_;
    return t;
  }
  static bool is_punct(const Token& t, const char* p) { return t.kind == Tok::punct && t.text == p; }
  static std::string describe(const Token& t) {
    switch (t.kind) {
      case Tok::end: return "the end of the line";
      case Tok::string: return "string " + text::quote(t.text);
      default: return "'" + t.text + "'";
    }
  }
  void expect(const char* p, const char* context) {
    if (!is_punct(peek(), p))
      error(peek().pos, std::string("expected '") + p + "' " + context + ", found " + describe(peek()));
    next();
  }
  void expect_end(const char* context) {
    if (peek().kind != Tok::end) error(peek().pos, std::string("unexpected ") + describe(peek()) + " " + context);
  }
  // A bare or quoted name.
  Token expect_name(const char* what) {
    if (peek().kind != Tok::name && peek().kind != Tok::string)
      error(peek().pos, std::string("expected ") + what + ", found " + describe(peek()));
    return next();
  }

  void parse_header() {
    if (peek().kind != Tok::name || peek().text != "graph")
      error(peek().pos, "expected 'graph NAME {' to open the text, found " + describe(peek()));
    next();
    g_.name = expect_name("the graph's name after 'graph'").text;
    expect("{", "after the graph's name");
    expect_end("after 'graph NAME {'");
  }

  void parse_output() {
    next();  // output
    Token name = expect_name("the output's name after 'output'");
    expect("=", "after the output's name");
    Token node = expect_name("the name of the node to output");
    expect_end("after the output");
    auto it = ids_.find(node.text);
    if (it == ids_.end()) error(node.pos, "unknown name '" + node.text + "': no node of that name is defined above");
    for (const GraphOutput& o : g_.outputs)
      if (o.name == name.text) error(name.pos, "duplicate output name '" + name.text + "'");
    g_.outputs.push_back({name.text, it->second});
  }

  template <typename F>
  auto parse_or_error(F f) -> decltype(f()) {
    try {
      return f();
    } catch (const text::SyntaxError& e) {
      error(e.pos, e.what());
    }
  }

  // An integer, optionally negative.
  int64_t parse_int(const char* what) {
    bool negative = false;
    if (is_punct(peek(), "-")) {
      next();
      negative = true;
    }
    const Token& t = peek();
    if (t.kind != Tok::number || t.is_float) error(t.pos, std::string("expected ") + what + ", found " + describe(t));
    uint64_t m = parse_or_error([&] { return text::token_uint(t); });
    next();
    uint64_t limit = uint64_t(1) << 63;
    if (negative ? m > limit : m >= limit) error(t.pos, "integer " + std::string(negative ? "-" : "") + t.text +
                                                            " does not fit in 64 bits");
    return negative ? static_cast<int64_t>(0 - m) : static_cast<int64_t>(m);
  }

  // A number (integer or not), inf or nan, optionally negative, as a double.
  std::optional<double> try_parse_double() {
    size_t k = is_punct(peek(), "-") ? 1 : 0;
    const Token& t = peek(k);
    bool word = t.kind == Tok::name && (t.text == "inf" || t.text == "nan");
    if (t.kind != Tok::number && !word) return std::nullopt;
    double v = word ? (t.text == "inf" ? std::numeric_limits<double>::infinity()
                                       : std::numeric_limits<double>::quiet_NaN())
                    : parse_or_error([&] { return text::token_double(t); });
    if (k) next();
    next();
    return k ? -v : v;
  }
  double parse_double(const char* what) {
    if (auto v = try_parse_double()) return *v;
    error(peek(is_punct(peek(), "-") ? 1 : 0).pos, std::string("expected ") + what + ", found " +
                                                       describe(peek(is_punct(peek(), "-") ? 1 : 0)));
  }

  AttrValue parse_value() {
    const Token& t = peek();
    if (t.kind == Tok::string) return next().text;
    if (t.kind == Tok::name && (t.text == "true" || t.text == "false")) return next().text == "true";
    if (is_punct(t, "[")) {
      next();
      std::vector<int64_t> list;
      if (!is_punct(peek(), "]")) {
        while (true) {
          list.push_back(parse_int("an integer in the list"));
          if (!is_punct(peek(), ",")) break;
          next();
        }
      }
      expect("]", "to close the list");
      return list;
    }
    size_t k = is_punct(t, "-") ? 1 : 0;
    const Token& num = peek(k);
    if (num.kind == Tok::number && !num.is_float) return parse_int("an integer");
    if (auto d = try_parse_double()) return *d;
    error(num.pos, "expected a value (number, true, false, \"string\" or [integers]), found " + describe(num));
  }

  std::vector<std::string> parse_vars() {
    expect("[", "to open the list of vars");
    std::vector<std::string> vars;
    if (!is_punct(peek(), "]")) {
      while (true) {
        if (peek().kind != Tok::name) error(peek().pos, "expected a Var name, found " + describe(peek()));
        vars.push_back(next().text);
        if (!is_punct(peek(), ",")) break;
        next();
      }
    }
    expect("]", "to close the list of vars");
    return vars;
  }

  text::RVarText parse_rvar() {
    if (peek().kind != Tok::name) error(peek().pos, "expected an RVar 'name: min..end', found " + describe(peek()));
    text::RVarText r;
    r.name = next().text;
    expect(":", "after the RVar's name");
    r.min = parse_int("the RVar's min");
    expect("..", "between the RVar's min and end");
    r.end = parse_int("the RVar's end");
    return r;
  }

  std::vector<text::RDomText> parse_rdoms() {
    expect("[", "to open the list of rdoms");
    std::vector<text::RDomText> rdoms;
    if (!is_punct(peek(), "]")) {
      while (true) {
        text::RDomText rdom;
        if (is_punct(peek(), "(")) {
          next();
          while (true) {
            rdom.push_back(parse_rvar());
            if (!is_punct(peek(), ",")) break;
            next();
          }
          expect(")", "to close the RDom");
        } else {
          rdom.push_back(parse_rvar());
        }
        rdoms.push_back(rdom);
        if (!is_punct(peek(), ",")) break;
        next();
      }
    }
    expect("]", "to close the list of rdoms");
    return rdoms;
  }

  TensorType parse_type(size_t hash_pos) {
    if (peek().kind != Tok::name) error(peek().pos, "expected a type such as f32[64, 256] after '#', found " + describe(peek()));
    Token dt = next();
    TensorType t;
    try {
      t.dtype = parse_dtype(dt.text);
    } catch (const Error& e) {
      error(dt.pos, std::string("bad dtype: ") + e.what());
    }
    expect("[", "after the dtype (a scalar is written f32[])");
    int64_t total = 1;
    if (!is_punct(peek(), "]")) {
      while (true) {
        const Token& d = peek();
        int64_t v = parse_int("a dimension");
        if (v < 1) error(d.pos, "dimension " + std::to_string(v) + " is below 1");
        if (total > std::numeric_limits<int64_t>::max() / v) error(hash_pos, "the type has too many elements");
        total *= v;
        t.shape.push_back(v);
        if (!is_punct(peek(), ",")) break;
        next();
      }
    }
    expect("]", "to close the shape");
    return t;
  }

  void parse_node() {
    Token name = expect_name("a node name, 'output' or '}'");
    expect("=", "after the node's name");
    Token op = expect_name("an op name");
    expect("(", "after the op name");
    const bool is_constant = op.text == "constant";
    // define and define_grad carry a UserDef (vars=, rdoms=, body=).
    const bool is_define = op.text == "define" || op.text == "define_grad";
    std::vector<ParsedArg> args;
    bool seen_attr = false;
    if (!is_punct(peek(), ")")) {
      while (true) {
        ParsedArg a;
        if ((peek().kind == Tok::name || peek().kind == Tok::string) && is_punct(peek(1), "=")) {
          a.key = next();
          next();  // =
          for (const ParsedArg& b : args)
            if (b.key.kind != Tok::end && b.key.text == a.key.text)
              error(a.key.pos, "attribute '" + a.key.text + "' is given twice");
          const std::string& k = a.key.text;
          if (is_define && k == "vars") a.vars = parse_vars();
          else if (is_define && k == "rdoms") a.rdoms = parse_rdoms();
          else if (is_define && k == "body") {
            if (peek().kind != Tok::string) error(peek().pos, "expected the body as a \"string\", found " + describe(peek()));
            a.body = next();
          } else if (is_constant && k == "value") {
            a.numbers.push_back(parse_double("a number"));
          } else if (is_constant && k == "values") {
            a.is_number_list = true;
            expect("[", "to open the list of values");
            if (!is_punct(peek(), "]")) {
              while (true) {
                a.numbers.push_back(parse_double("a number"));
                if (!is_punct(peek(), ",")) break;
                next();
              }
            }
            expect("]", "to close the list of values");
          } else {
            a.value = parse_value();
          }
          seen_attr = true;
        } else if (peek().kind == Tok::name || peek().kind == Tok::string) {
          if (seen_attr) error(peek().pos, "input '" + peek().text + "' comes after an attribute; inputs come first");
          a.name = next();
        } else {
          error(peek().pos, "expected an input name or key=value, found " + describe(peek()));
        }
        args.push_back(std::move(a));
        if (!is_punct(peek(), ",")) break;
        next();
      }
    }
    expect(")", "to close the argument list");
    if (!is_punct(peek(), "#"))
      error(peek().pos, "missing type comment: expected '# dtype[shape]' after the node, found " + describe(peek()));
    size_t hash_pos = next().pos;
    TensorType type = parse_type(hash_pos);
    expect_end("after the type comment");

    // Build the node.
    if (ids_.count(name.text))
      error(name.pos, "duplicate name '" + name.text + "' (already defined on line " +
                          std::to_string(lines_of_.at(name.text)) + ")");
    const bool leaf_op = op.text == "input" || op.text == "param" || is_constant;
    if (!leaf_op && !is_define && !find_op(op.text)) error(op.pos, "unknown op '" + op.text + "'");
    Node n;
    n.id = static_cast<int>(g_.nodes.size());
    n.name = name.text;
    n.op = op.text;
    const ParsedArg* vars = nullptr;
    const ParsedArg* rdoms = nullptr;
    const ParsedArg* body = nullptr;
    const ParsedArg* values = nullptr;
    for (const ParsedArg& a : args) {
      if (a.key.kind == Tok::end) {
        auto it = ids_.find(a.name.text);
        if (it == ids_.end())
          error(a.name.pos, "unknown name '" + a.name.text + "': no node of that name is defined above");
        n.inputs.push_back(it->second);
        continue;
      }
      const std::string& k = a.key.text;
      if (leaf_op && !is_constant) error(a.key.pos, op.text + " takes no attributes (its type comment gives its type)");
      if (is_define && k == "vars") vars = &a;
      else if (is_define && k == "rdoms") rdoms = &a;
      else if (is_define && k == "body") body = &a;
      else if (is_constant && (k == "value" || k == "values")) {
        if (values) error(a.key.pos, "a constant takes one of value= or values=, not both");
        values = &a;
      } else n.attrs[k] = a.value;
    }
    n.type = type;
    if (leaf_op) {
      if (!n.inputs.empty()) error(op.pos, op.text + " takes no inputs");
      if (is_constant) {
        if (!values) error(op.pos, "a constant needs value=NUMBER or values=[NUMBERS]");
        n.values = values->numbers;
        if (n.values.size() != 1 && static_cast<int64_t>(n.values.size()) != type.numel())
          error(values->key.pos, "the constant has " + std::to_string(n.values.size()) + " values for type " +
                                     to_string(type) + " (" + std::to_string(type.numel()) + " elements)");
      }
    } else {
      if (is_define) build_define(n, op, vars, rdoms, body);
      TensorType inferred;
      try {
        inferred = infer_node_type(g_, n);
      } catch (const Error& e) {
        error(op.pos, e.what());
      }
      if (inferred != type)
        error(hash_pos, "type mismatch: the type comment says " + to_string(type) + " but " + n.op + " '" +
                            n.name + "' gives " + to_string(inferred));
    }
    ids_[n.name] = n.id;
    lines_of_[n.name] = line_;
    g_.nodes.push_back(std::move(n));
  }

  // A define's body reads all its inputs and its vars index its type; a
  // define_grad's body reads all but the last input (the cotangent), whose
  // type the vars index.
  void build_define(Node& n, const Token& op, const ParsedArg* vars, const ParsedArg* rdoms, const ParsedArg* body) {
    const bool is_grad = n.op == "define_grad";
    const std::string what = n.op + " '" + n.name + "'";
    if (!vars || !rdoms || !body) error(op.pos, what + " needs vars=[...], rdoms=[...] and body=\"...\"");
    std::vector<int> read = n.inputs;
    if (is_grad) {
      if (read.empty()) error(op.pos, what + " needs its cotangent as its last input");
      read.pop_back();
    } else if (!n.attrs.count("shape")) {
      n.attrs["shape"] = n.type.shape;
    }
    const TensorType& indexed = is_grad ? g_.nodes[n.inputs.back()].type : n.type;
    if (vars->vars.size() != indexed.shape.size())
      error(vars->key.pos, what + " has " + std::to_string(vars->vars.size()) + " vars but " +
                               (is_grad ? "its cotangent's type " : "its type ") + to_string(indexed) +
                               " has rank " + std::to_string(indexed.rank()));
    text::UserDefText t{vars->vars, rdoms->rdoms, body->body.text};
    std::vector<std::string> names;
    std::vector<TensorType> types;
    for (int in : read) {
      names.push_back(g_.nodes[in].name);
      types.push_back(g_.nodes[in].type);
    }
    try {
      n.user = text::parse_user_def(t, names, types);
    } catch (const text::SyntaxError& e) {
      const Token& b = body->body;
      size_t off = std::min(e.pos, b.source_pos.size() - 1);
      error(b.source_pos[off], "in the body of " + what + ": " + e.what());
    } catch (const Error& e) {
      error(vars->key.pos, what + ": " + e.what());
    }
  }

  Graph g_;
  size_t line_ = 0;
  std::vector<Token> toks_;
  size_t i_ = 0;
  std::map<std::string, int> ids_;
  std::map<std::string, size_t> lines_of_;
};

}  // namespace

Graph parse(const std::string& text) {
  GraphParser p;
  return p.run(text);
}

}  // namespace tessera
