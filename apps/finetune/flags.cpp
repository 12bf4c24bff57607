// The apps' flag parser (flags.h).
#include "flags.h"

#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <sstream>

namespace finetune {

Flags::Flags(std::string program, std::string summary) : program_(std::move(program)), summary_(std::move(summary)) {}

void Flags::add_string(const std::string& name, const std::string& def, const std::string& help,
                       std::vector<std::string> choices) {
  order_.push_back(name);
  flags_[name] = Flag{Kind::string, def, help, std::move(choices)};
}
void Flags::add_int(const std::string& name, long long def, const std::string& help, long long min) {
  order_.push_back(name);
  Flag f{Kind::integer, std::to_string(def), help, {}};
  f.min = min;
  flags_[name] = f;
}
void Flags::add_double(const std::string& name, double def, const std::string& help) {
  order_.push_back(name);
  std::ostringstream s;
  s << def;
  flags_[name] = Flag{Kind::number, s.str(), help, {}};
}
void Flags::add_bool(const std::string& name, bool def, const std::string& help) {
  order_.push_back(name);
  flags_[name] = Flag{Kind::boolean, def ? "true" : "false", help, {}};
}

void Flags::set(const std::string& name, Flag& f, const std::string& value) {
  const std::string where = "--" + name + ": ";
  if (f.kind == Kind::integer) {
    char* end = nullptr;
    const long long v = std::strtoll(value.c_str(), &end, 10);
    if (value.empty() || *end) throw FlagError(where + "'" + value + "' is not a whole number");
    if (v < f.min) throw FlagError(where + "must be at least " + std::to_string(f.min) + ", got " + value);
  } else if (f.kind == Kind::number) {
    char* end = nullptr;
    std::strtod(value.c_str(), &end);
    if (value.empty() || *end) throw FlagError(where + "'" + value + "' is not a number");
  } else if (!f.choices.empty()) {
    bool ok = false;
    std::string list;
    for (const std::string& c : f.choices) ok |= c == value, list += (list.empty() ? "" : ", ") + c;
    if (!ok) throw FlagError(where + "'" + value + "' is not one of " + list);
  }
  f.value = value;
  f.given = true;
}

bool Flags::parse(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "-h" || a == "--help") {
      std::cout << help();
      return false;
    }
    if (a.rfind("--", 0) != 0) throw FlagError("unexpected argument '" + a + "' (flags start with --; see --help)");
    std::string name = a.substr(2), value;
    bool has_value = false;
    if (const size_t eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      has_value = true;
    }
    auto it = flags_.find(name);
    if (it == flags_.end() && name.rfind("no-", 0) == 0) {
      auto b = flags_.find(name.substr(3));
      if (b != flags_.end() && b->second.kind == Kind::boolean && !has_value) {
        b->second.value = "false";
        b->second.given = true;
        continue;
      }
    }
    if (it == flags_.end()) throw FlagError("unknown flag '--" + name + "' (see --help)");
    Flag& f = it->second;
    if (f.kind == Kind::boolean) {
      if (has_value && value != "true" && value != "false")
        throw FlagError("--" + name + ": expected true or false, got '" + value + "'");
      f.value = has_value ? value : "true";
      f.given = true;
      continue;
    }
    if (!has_value) {
      if (i + 1 >= argc) throw FlagError("--" + name + " needs a value");
      value = argv[++i];
    }
    set(name, f, value);
  }
  return true;
}

const Flags::Flag& Flags::get(const std::string& name, Kind kind) const {
  auto it = flags_.find(name);
  if (it == flags_.end() || it->second.kind != kind) throw std::logic_error("flag '" + name + "' not declared so");
  return it->second;
}
std::string Flags::str(const std::string& name) const { return get(name, Kind::string).value; }
long long Flags::integer(const std::string& name) const { return std::stoll(get(name, Kind::integer).value); }
double Flags::number(const std::string& name) const { return std::stod(get(name, Kind::number).value); }
bool Flags::boolean(const std::string& name) const { return get(name, Kind::boolean).value == "true"; }
bool Flags::given(const std::string& name) const { return flags_.at(name).given; }
std::string Flags::str_of(const std::string& name) const { return flags_.at(name).value; }

std::string Flags::help() const {
  std::ostringstream s;
  s << "usage: " << program_ << " [flags]\n\n" << summary_ << "\n\nflags:\n";
  for (const std::string& name : order_) {
    const Flag& f = flags_.at(name);
    std::string head = "  --" + name;
    if (f.kind == Kind::boolean) head = "  --[no-]" + name;
    else if (!f.choices.empty()) {
      std::string list;
      for (const std::string& c : f.choices) list += (list.empty() ? "" : "|") + c;
      head += " " + list;
    } else {
      head += f.kind == Kind::string ? " TEXT" : f.kind == Kind::integer ? " N" : " X";
    }
    s << head << "\n      " << f.help << " (default: " << (f.value.empty() ? "none" : f.value) << ")\n";
  }
  return s.str();
}

}  // namespace finetune
