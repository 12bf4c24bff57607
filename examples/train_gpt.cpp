// Character-level GPT training on the shipped corpus (data/corpus: quotations
// from Debian's fortunes package), on the CPU: models.h's gpt() graph,
// differentiated (autodiff.h), updated with AdamW by the Trainer
// (trainer.h). Prints step, loss and tokens/s as it goes, the held-out loss
// at the end and a short greedy sample. Deterministic: the same --seed
// prints the same losses. It does not save checkpoints or use a GPU.
//
// The default model is one layer (n_embd 64, 4 heads, context 64, batch 8):
// the whole training step is one Halide pipeline, whose JIT compile takes
// about 1.5 minutes on a 2-core machine for one layer and many minutes for
// two (Halide's lowering is superlinear in the number of stages), while a
// step itself takes about 15 ms. --layers 2 works, given the time.
//
//   train_gpt [--steps N] [--seed S] [--lr LR] [--corpus DIR] [--sample N] [--layers L]
#include <tessera/autodiff.h>
#include <tessera/models.h>
#include <tessera/tessera.h>
#include <tessera/trainer.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#ifndef TESSERA_CORPUS_DIR
#define TESSERA_CORPUS_DIR "data/corpus"
#endif

using namespace tessera;

namespace {

struct Args {
  int steps = 1500;
  uint64_t seed = 1337;
  double lr = 3e-3;
  std::string corpus = TESSERA_CORPUS_DIR;
  int sample = 200;
  int layers = 1;
};

Args parse_args(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    auto value = [&](const char* flag) -> const char* {
      if (std::strcmp(argv[i], flag) != 0) return nullptr;
      if (i + 1 >= argc) fail(flag, " needs a value");
      return argv[++i];
    };
    if (const char* v = value("--steps")) a.steps = std::atoi(v);
    else if (const char* v = value("--seed")) a.seed = std::strtoull(v, nullptr, 10);
    else if (const char* v = value("--lr")) a.lr = std::atof(v);
    else if (const char* v = value("--corpus")) a.corpus = v;
    else if (const char* v = value("--sample")) a.sample = std::atoi(v);
    else if (const char* v = value("--layers")) a.layers = std::atoi(v);
    else fail("unknown argument '", argv[i], "' (use --steps, --seed, --lr, --corpus, --sample, --layers)");
  }
  return a;
}

// Every *.txt file of the folder, in name order, concatenated.
std::string read_corpus(const std::string& dir) {
  std::vector<std::filesystem::path> files;
  for (const auto& e : std::filesystem::directory_iterator(dir))
    if (e.path().extension() == ".txt") files.push_back(e.path());
  if (files.empty()) fail("no .txt files in '", dir, "' (see data/corpus/README.md)");
  std::sort(files.begin(), files.end());
  std::string text;
  for (const auto& f : files) {
    std::ifstream in(f, std::ios::binary);
    std::ostringstream s;
    s << in.rdbuf();
    text += s.str();
  }
  return text;
}

// The character vocabulary: the distinct bytes of the corpus, sorted.
struct Vocab {
  std::vector<char> chars;
  int index[256];
  explicit Vocab(const std::string& text) {
    bool seen[256] = {};
    for (unsigned char c : text) seen[c] = true;
    for (int c = 0; c < 256; ++c) {
      index[c] = seen[c] ? static_cast<int>(chars.size()) : -1;
      if (seen[c]) chars.push_back(static_cast<char>(c));
    }
  }
  int size() const { return static_cast<int>(chars.size()); }
};

// SplitMix64: a tiny portable generator, so that batches are the same everywhere.
struct Rng {
  uint64_t s;
  uint64_t next() {
    uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  int64_t below(int64_t n) { return static_cast<int64_t>(next() % static_cast<uint64_t>(n)); }
};

// B random windows of T+1 tokens: idx = window[0..T), targets = window[1..T].
std::map<std::string, Buffer> random_batch(const std::vector<int>& data, int64_t B, int64_t T, Rng& rng) {
  Buffer idx(DType::i32, {B, T}), targets(DType::i32, {B, T});
  int32_t* x = idx.data_as<int32_t>();
  int32_t* y = targets.data_as<int32_t>();
  for (int64_t b = 0; b < B; ++b) {
    const int64_t o = rng.below(static_cast<int64_t>(data.size()) - T - 1);
    for (int64_t t = 0; t < T; ++t) {
      x[b * T + t] = data[o + t];
      y[b * T + t] = data[o + t + 1];
    }
  }
  return {{"idx", idx}, {"targets", targets}};
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const Args args = parse_args(argc, argv);
    const std::string text = read_corpus(args.corpus);
    const Vocab vocab(text);
    std::vector<int> data(text.size());
    for (size_t i = 0; i < text.size(); ++i) data[i] = vocab.index[static_cast<unsigned char>(text[i])];
    // The last 10% is held out.
    const size_t split = data.size() * 9 / 10;
    const std::vector<int> train(data.begin(), data.begin() + split), val(data.begin() + split, data.end());

    GptConfig cfg;
    cfg.vocab_size = vocab.size();
    cfg.block_size = 64;
    cfg.n_layer = args.layers;
    cfg.n_head = 4;
    cfg.n_embd = 64;
    cfg.batch = 8;
    const int64_t B = cfg.batch, T = cfg.block_size;
    std::printf("corpus: %zu characters (%zu train, %zu held out), vocabulary %d; ln(%d) = %.4f\n", data.size(),
                train.size(), val.size(), vocab.size(), vocab.size(), std::log(static_cast<double>(vocab.size())));
    std::printf("model: gpt n_layer=%lld n_head=%lld n_embd=%lld block_size=%lld batch=%lld\n",
                static_cast<long long>(cfg.n_layer), static_cast<long long>(cfg.n_head),
                static_cast<long long>(cfg.n_embd), static_cast<long long>(T), static_cast<long long>(B));

    auto t0 = std::chrono::steady_clock::now();
    auto seconds_since = [](std::chrono::steady_clock::time_point t) {
      return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
    };
    Graph model = gpt(cfg);
    Graph joint = differentiate(model);
    TrainerOptions topt;
    AdamWOptions adam;
    adam.lr = args.lr;
    adam.weight_decay = 0.1;
    adam.beta2 = 0.99;
    adam.max_grad_norm = 1.0;
    topt.optimizer = adam;
    topt.seed = args.seed;
    topt.init = trainer_init(gpt_init(cfg));
    Trainer trainer(joint, topt);
    int64_t n_params = 0;
    for (const auto& [name, p] : trainer.params()) n_params += p.numel();
    std::printf("%lld params; differentiated and compiled in %.1f s\n", static_cast<long long>(n_params),
                seconds_since(t0));

    Rng rng{args.seed};
    double window_loss = 0, window_seconds = 0;
    int window = 0;
    const int every = 100;
    for (int step = 1; step <= args.steps; ++step) {
      auto batch = random_batch(train, B, T, rng);
      auto ts = std::chrono::steady_clock::now();
      const double loss = trainer.step(batch);
      window_seconds += seconds_since(ts);
      window_loss += loss;
      ++window;
      if (step == 1 || step % every == 0 || step == args.steps) {
        std::printf("step %4d  loss %.4f  (mean of last %d: %.4f)  %.0f tokens/s\n", step, loss, window,
                    window_loss / window, static_cast<double>(window * B * T) / window_seconds);
        std::fflush(stdout);
        window_loss = window_seconds = 0;
        window = 0;
      }
    }

    // Held-out loss on a fixed set of batches.
    Rng val_rng{args.seed + 1};
    double val_loss = 0;
    const int val_batches = 8;
    for (int i = 0; i < val_batches; ++i) val_loss += trainer.evaluate(random_batch(val, B, T, val_rng)).at("loss").get(0);
    std::printf("held-out loss %.4f after %d steps (%.1f s in all)\n", val_loss / val_batches, args.steps,
                seconds_since(t0));

    // Greedy sample with a batch-1 forward graph and the trained params. The
    // graph's length is fixed at T: the context sits at the start of the
    // window (causal attention: later slots do not affect earlier ones) and
    // slides once it is longer than T.
    GptConfig one = cfg;
    one.batch = 1;
    Executable fwd = compile(gpt(one));
    std::map<std::string, Buffer> fargs = trainer.params();
    Buffer idx(DType::i32, {1, T});
    fargs["idx"] = idx;
    fargs["targets"] = Buffer(DType::i32, {1, T});
    std::string out = "The ";
    std::vector<int> ctx;
    for (char c : out) ctx.push_back(vocab.index[static_cast<unsigned char>(c)]);
    std::map<std::string, Buffer> res;
    for (int n = 0; n < args.sample; ++n) {
      const int64_t len = std::min<int64_t>(static_cast<int64_t>(ctx.size()), T);
      int32_t* x = idx.data_as<int32_t>();
      for (int64_t t = 0; t < T; ++t) x[t] = t < len ? ctx[ctx.size() - len + t] : 0;
      fwd.run(fargs, res);
      const Buffer& logits = res.at("logits");
      const float* row = logits.data_as<float>() + (len - 1) * vocab.size();
      const int next = static_cast<int>(std::max_element(row, row + vocab.size()) - row);
      ctx.push_back(next);
      out += vocab.chars[next];
    }
    std::printf("greedy sample:\n%s\n", out.c_str());
  } catch (const Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
