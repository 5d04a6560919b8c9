// resnet_deploy_infer BUNDLE IMAGE... : classify images with a resnet-deploy bundle, print top-k and latency.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <numeric>
#include <string>
#include <vector>

#include "resnet_deploy/backend.hpp"
#include "resnet_deploy/bundle.hpp"
#include "resnet_deploy/preprocess.hpp"

using namespace resnet_deploy;

namespace {

const char* kUsage =
    "usage: resnet_deploy_infer BUNDLE IMAGE... [--topk K] [--precision fp32|fp16|int8]\n"
    "                           [--backend onnxruntime|tensorrt] [--threads N] [--warmup N] [--runs N]\n"
    "                           [--dump-input FILE] [--dump-logits FILE]\n"
    "Classifies the images with the bundle's model (one batch) and prints the top-k classes (with their names\n"
    "when the bundle records them) and the latency.\n"
    "  --topk K            classes to print per image (default 5)\n"
    "  --precision P       which artifact to run: fp32, fp16, int8 (default: the one `resnet-deploy bench`\n"
    "                      recorded as fastest for this runtime, else fp32)\n"
    "  --backend B         onnxruntime (CPU, default) or tensorrt (the bundle's plan for this GPU)\n"
    "  --threads N         ONNX Runtime intra-op threads (default: ONNX Runtime's choice)\n"
    "  --warmup N          untimed runs before timing (default 3)\n"
    "  --runs N            timed runs of the batch (default 20)\n"
    "  --dump-input FILE   write the preprocessed batch (float32, NCHW, little-endian) to FILE\n"
    "  --dump-logits FILE  write the logits (float32, batch x classes) to FILE\n";

struct Options {
  std::string bundle;
  std::vector<std::string> images;
  int topk = 5;
  std::string precision;  // empty: the bundle's recommendation for the backend, else fp32
  std::string backend = "onnxruntime";
  int threads = 0;
  int warmup = 3;
  int runs = 20;
  std::string dump_input, dump_logits;
};

int parse_int(const std::string& opt, const std::string& value, int min) {
  size_t used = 0;
  int v = 0;
  try {
    v = std::stoi(value, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != value.size() || value.empty() || v < min) {
    throw UserError(opt + " " + value + " must be an integer >= " + std::to_string(min));
  }
  return v;
}

std::string one_of(const std::string& opt, const std::string& value, const std::vector<std::string>& choices) {
  if (std::find(choices.begin(), choices.end(), value) != choices.end()) return value;
  std::string list;
  for (const auto& c : choices) list += (list.empty() ? "" : ", ") + c;
  throw UserError("unknown " + opt + " '" + value + "': choose one of " + list);
}

Options parse_args(int argc, char** argv) {
  Options o;
  std::vector<std::string> positional;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "-h" || a == "--help") {
      std::cout << kUsage;
      std::exit(0);
    }
    if (a.rfind("--", 0) == 0) {
      if (i + 1 >= argc) throw UserError(a + " needs a value (see --help)");
      const std::string v = argv[++i];
      if (a == "--topk") o.topk = parse_int(a, v, 1);
      else if (a == "--precision") o.precision = one_of(a, v, {"fp32", "fp16", "int8"});
      else if (a == "--backend") o.backend = one_of(a, v, {"onnxruntime", "tensorrt"});
      else if (a == "--threads") o.threads = parse_int(a, v, 0);
      else if (a == "--warmup") o.warmup = parse_int(a, v, 0);
      else if (a == "--runs") o.runs = parse_int(a, v, 1);
      else if (a == "--dump-input") o.dump_input = v;
      else if (a == "--dump-logits") o.dump_logits = v;
      else throw UserError("unknown option " + a + " (see --help)");
    } else {
      positional.push_back(a);
    }
  }
  if (positional.size() < 2) throw UserError("expected BUNDLE and at least one IMAGE (see --help)");
  o.bundle = positional[0];
  o.images.assign(positional.begin() + 1, positional.end());
  return o;
}

std::string digits(const std::string& cc) {  // "8.6", "sm_86" and "86" all name compute capability 8.6
  std::string d;
  for (char c : cc) if (std::isdigit(static_cast<unsigned char>(c))) d += c;
  return d;
}

std::string list_names(const std::vector<Artifact>& files) {
  std::string s;
  for (const auto& a : files) s += (s.empty() ? "" : ", ") + a.name + (a.precision.empty() ? "" : " (" + a.precision + ")");
  return s.empty() ? "none" : s;
}

// The artifact to run: with no --precision, what bench recorded as fastest for this runtime (CPU for ONNX Runtime,
// GPU for TensorRT); else an ONNX graph for ONNX Runtime (ORT-shaped first), or the plan built for this GPU.
Artifact choose_artifact(const Bundle& b, Options o) {
  if (o.precision.empty()) {
    const Artifact* rec = b.recommended_artifact(o.backend == "tensorrt" ? "gpu" : "cpu", o.backend);
    if (rec != nullptr && (o.backend != "tensorrt" || rec->compute_capability.empty() ||
                           digits(rec->compute_capability) == digits(device_compute_capability()))) {
      std::cerr << "precision " << rec->precision << ": " << rec->name << ", recommended by resnet-deploy bench\n";
      return *rec;
    }
    o.precision = "fp32";
  }
  if (o.backend == "onnxruntime") {
    for (const char* target : {"onnxruntime", "portable", "tensorrt", ""}) {
      auto found = b.find("onnx", o.precision, target);
      if (!found.empty()) return found.front();
    }
    throw UserError("bundle '" + o.bundle + "' has no " + o.precision + " ONNX model (it has: " +
                    list_names(b.find("onnx")) + ")");
  }
  auto plans = b.find("tensorrt-plan", o.precision);
  if (plans.empty()) {
    throw UserError("bundle '" + o.bundle + "' has no " + o.precision + " TensorRT plan (it has: " +
                    list_names(b.find("tensorrt-plan")) + "): build one with resnet-deploy build");
  }
  const std::string cc = digits(device_compute_capability());
  for (const auto& p : plans) {
    if (p.compute_capability.empty() || digits(p.compute_capability) == cc) return p;
  }
  throw UserError("bundle '" + o.bundle + "' has no " + o.precision + " plan for compute capability " + cc +
                  " (it has: " + list_names(plans) + "): build one on this GPU");
}

void write_floats(const std::string& path, const std::vector<float>& v) {
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(v.data()), static_cast<std::streamsize>(v.size() * sizeof(float)));
  if (!f) throw UserError("cannot write '" + path + "'");
}

double percentile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  const double pos = q * (v.size() - 1);
  const size_t lo = static_cast<size_t>(pos);
  const size_t hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (v[hi] - v[lo]) * (pos - lo);
}

int run(const Options& o) {
  using clock = std::chrono::steady_clock;
  if (o.backend == "tensorrt" && !tensorrt_available()) make_tensorrt_backend("", false);  // the rebuild advice
  const Bundle bundle = load_bundle(o.bundle);
  const Artifact artifact = choose_artifact(bundle, o);
  std::unique_ptr<Backend> backend;
  if (o.backend == "tensorrt") {
    // Host code (the lean runtime inside a version-compatible plan) is allowed only where the build record asks.
    backend = make_tensorrt_backend(bundle.path(artifact.name), bundle.plan_allows_host_code(artifact.name));
  } else {
    backend = make_onnxruntime_backend(bundle.path(artifact.name), o.threads);
  }

  const Preprocessing& pre = bundle.preprocessing;
  const size_t per_image = static_cast<size_t>(3) * pre.crop_height * pre.crop_width;
  std::vector<float> batch;
  batch.reserve(per_image * o.images.size());
  const auto t0 = clock::now();
  for (const auto& path : o.images) {
    const std::vector<float> x = preprocess(decode_image(path), pre);
    batch.insert(batch.end(), x.begin(), x.end());
  }
  const double pre_ms = std::chrono::duration<double, std::milli>(clock::now() - t0).count() / o.images.size();
  if (!o.dump_input.empty()) write_floats(o.dump_input, batch);

  const int64_t n = static_cast<int64_t>(o.images.size());
  if (!bundle.input_shape.empty() && bundle.input_shape[0] > 0 && bundle.input_shape[0] != n) {
    throw UserError("the model takes a fixed batch of " + std::to_string(bundle.input_shape[0]) + " images, got " +
                    std::to_string(n));
  }
  const std::vector<int64_t> shape{n, 3, pre.crop_height, pre.crop_width};
  std::vector<float> logits;
  for (int i = 0; i < o.warmup; ++i) logits = backend->infer(batch, shape);
  std::vector<double> times;
  for (int i = 0; i < o.runs; ++i) {
    const auto start = clock::now();
    logits = backend->infer(batch, shape);
    backend->synchronize();
    times.push_back(std::chrono::duration<double, std::milli>(clock::now() - start).count());
  }
  if (!o.dump_logits.empty()) write_floats(o.dump_logits, logits);

  const size_t classes = logits.size() / static_cast<size_t>(n);
  std::cout << "model    " << artifact.name << " (" << backend->describe() << ")\n";
  for (int64_t i = 0; i < n; ++i) {
    const float* row = &logits[i * classes];
    const float top = *std::max_element(row, row + classes);
    double denom = 0.0;
    for (size_t c = 0; c < classes; ++c) denom += std::exp(static_cast<double>(row[c]) - top);
    std::vector<size_t> order(classes);
    std::iota(order.begin(), order.end(), 0);
    const size_t k = std::min<size_t>(o.topk, classes);
    std::partial_sort(order.begin(), order.begin() + k, order.end(),
                      [row](size_t a, size_t b) { return row[a] > row[b]; });
    std::cout << "image    " << o.images[i] << "\n";
    for (size_t j = 0; j < k; ++j) {
      const size_t c = order[j];
      // The label, when the bundle has names, goes last so that the columns before it stay where they were.
      const std::string& label = bundle.class_name(c);
      std::printf("  %zu. class %-5zu prob %.4f  logit %.4f%s%s\n", j + 1, c, std::exp(row[c] - top) / denom, row[c],
                  label.empty() ? "" : "  ", label.c_str());
    }
    std::fflush(stdout);
  }
  std::printf("latency  batch %lld: median %.3f ms, p90 %.3f ms, min %.3f ms over %d runs (%d warm-up); "
              "preprocessing %.3f ms/image\n",
              static_cast<long long>(n), percentile(times, 0.5), percentile(times, 0.9),
              *std::min_element(times.begin(), times.end()), o.runs, o.warmup, pre_ms);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(parse_args(argc, argv));
  } catch (const UserError& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "internal error: " << e.what() << "\n";
    return 1;
  }
}
