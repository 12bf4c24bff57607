// A small command-line flag parser for the apps: each flag is declared with
// its default and a help line; `--name value` and `--name=value` both work;
// booleans are `--name` / `--no-name`. Unknown flags, missing values and
// values of the wrong type are reported as FlagError with the flag's name.
// It parses; it does not decide what flags mean.
#pragma once

#include <map>
#include <stdexcept>
#include <string>
#include <vector>

namespace finetune {

struct FlagError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class Flags {
 public:
  explicit Flags(std::string program, std::string summary);
  // Declarations (call before parse). `choices`, when given, lists the legal values.
  void add_string(const std::string& name, const std::string& def, const std::string& help,
                  std::vector<std::string> choices = {});
  void add_int(const std::string& name, long long def, const std::string& help, long long min = 0);
  void add_double(const std::string& name, double def, const std::string& help);
  void add_bool(const std::string& name, bool def, const std::string& help);

  // Returns false when --help was given (the help is printed to stdout).
  bool parse(int argc, char** argv);

  std::string str(const std::string& name) const;
  long long integer(const std::string& name) const;
  double number(const std::string& name) const;
  bool boolean(const std::string& name) const;
  bool given(const std::string& name) const;  // set on the command line, not defaulted
  std::string str_of(const std::string& name) const;  // any flag's value as given (or its default), as text
  std::string help() const;

 private:
  enum class Kind { string, integer, number, boolean };
  struct Flag {
    Kind kind;
    std::string value, help;
    std::vector<std::string> choices;
    long long min = 0;
    bool given = false;
  };
  void set(const std::string& name, Flag& f, const std::string& value);
  const Flag& get(const std::string& name, Kind kind) const;
  std::string program_, summary_;
  std::vector<std::string> order_;
  std::map<std::string, Flag> flags_;
};

}  // namespace finetune
