#include "resnet_deploy/bundle.hpp"

#include <fstream>
#include <nlohmann/json.hpp>

namespace resnet_deploy {
namespace {

using json = nlohmann::ordered_json;  // keeps the manifest's file order

const json& require(const json& obj, const char* key, const std::string& where) {
  if (!obj.is_object() || !obj.contains(key)) {
    throw UserError(where + " has no '" + key + "': re-export the bundle with resnet-deploy export");
  }
  return obj.at(key);
}

std::string tag(const json& entry, const char* key) {
  if (!entry.contains(key) || entry.at(key).is_null()) return "";
  const json& v = entry.at(key);
  return v.is_string() ? v.get<std::string>() : v.dump();
}

std::array<float, 3> triple(const json& v, const std::string& what) {
  if (!v.is_array() || v.size() != 3) throw UserError(what + " must be a list of three numbers");
  // The Python side stores doubles and casts them to float32 before use: do the same.
  return {static_cast<float>(v[0].get<double>()), static_cast<float>(v[1].get<double>()),
          static_cast<float>(v[2].get<double>())};
}

// manifest["engines"]["plans"]: absent before plans are built (or when export skipped them), which is no error.
void read_plan_records(const json& m, const std::string& manifest_path, Bundle& b) {
  if (!m.contains("engines") || !m.at("engines").is_object()) return;
  const json& engines = m.at("engines");
  if (!engines.contains("plans") || engines.at("plans").is_null()) return;
  const json& plans = engines.at("plans");
  if (!plans.is_object()) throw UserError(manifest_path + " engines.plans must be an object (plan name -> record)");
  for (const auto& [name, entry] : plans.items()) {
    const std::string where = manifest_path + " engines.plans['" + name + "']";
    if (!entry.is_object()) throw UserError(where + " must be an object");
    PlanRecord r;
    if (entry.contains("version_compat") && !entry.at("version_compat").is_null()) {
      const json& v = entry.at("version_compat");
      if (!v.is_boolean()) {
        throw UserError(where + " version_compat is " + v.dump() + ": must be true or false");
      }
      r.version_compat = v.get<bool>();
    }
    r.tensorrt = tag(entry, "tensorrt");
    b.plans[name] = r;
  }
}

// manifest["classes"]: {"names": [...], "source": "..."}, absent when the bundle has no names (which is no error).
void read_class_names(const json& m, const std::string& manifest_path, Bundle& b) {
  if (!m.contains("classes") || m.at("classes").is_null()) return;
  const std::string where = manifest_path + " classes";
  const json& names = require(m.at("classes"), "names", where);
  if (!names.is_array()) throw UserError(where + ".names must be a list of strings");
  for (const auto& n : names) {
    if (!n.is_string()) throw UserError(where + ".names holds " + n.dump() + ": must be a list of strings");
    b.class_names.push_back(n.get<std::string>());
  }
  if (b.num_classes > 0 && b.class_names.size() != static_cast<size_t>(b.num_classes)) {
    throw UserError(where + ".names has " + std::to_string(b.class_names.size()) + " names but num_classes is " +
                    std::to_string(b.num_classes));
  }
}

void read_recommended(const json& m, Bundle& b) {
  // Written by `resnet-deploy bench`; optional, and a loader that cannot read it falls back to fp32.
  if (!m.contains("recommended") || !m.at("recommended").is_object()) return;
  for (const auto& [device, entry] : m.at("recommended").items()) {
    if (!entry.is_object() || !entry.contains("latency") || !entry.at("latency").is_object()) continue;
    const json& latency = entry.at("latency");
    // "cpp": the best pick per runtime of this loader (resnet-deploy's backend table says which backends' artifacts
    // each runtime runs); bundles benchmarked before it existed have only "by_backend".
    const char* key = latency.contains("cpp") && latency.at("cpp").is_object() ? "cpp" : "by_backend";
    if (!latency.contains(key) || !latency.at(key).is_object()) continue;
    for (const auto& [backend, pick] : latency.at(key).items()) {
      if (pick.is_object() && pick.contains("artifact") && pick.at("artifact").is_string()) {
        b.recommended[device + "/" + backend] = pick.at("artifact").get<std::string>();
      }
    }
  }
}

}  // namespace

std::vector<Artifact> Bundle::find(const std::string& kind, const std::string& precision,
                                   const std::string& target) const {
  std::vector<Artifact> out;
  for (const auto& a : files) {
    if ((kind.empty() || a.kind == kind) && (precision.empty() || a.precision == precision) &&
        (target.empty() || a.target == target)) {
      out.push_back(a);
    }
  }
  return out;
}

Bundle load_bundle(const std::string& dir) {
  const std::string manifest_path = dir + "/manifest.json";
  std::ifstream f(manifest_path);
  if (!f) {
    throw UserError("'" + dir + "' is not a resnet-deploy bundle: it has no readable manifest.json");
  }
  json m;
  try {
    f >> m;
  } catch (const json::exception& e) {
    throw UserError("'" + manifest_path + "' is not valid JSON: " + e.what());
  }
  try {
    if (m.value("schema_version", 0) != 1) {
      throw UserError("'" + manifest_path + "' has schema_version " + m.value("schema_version", json()).dump() +
                      "; this loader reads 1");
    }
    Bundle b;
    b.dir = dir;
    b.arch = m.value("arch", "");
    b.num_classes = m.value("num_classes", 0);
    const json& input = require(m, "input", manifest_path);
    b.input_name = require(input, "name", manifest_path + " input").get<std::string>();
    b.input_shape = require(input, "shape", manifest_path + " input").get<std::vector<int64_t>>();
    const json& outputs = require(m, "outputs", manifest_path);
    if (!outputs.is_array() || outputs.empty()) throw UserError(manifest_path + " lists no outputs");
    b.output_name = require(outputs[0], "name", manifest_path + " outputs[0]").get<std::string>();

    const json& pre = require(m, "preprocessing", manifest_path);
    const std::string where = manifest_path + " preprocessing";
    auto size = require(pre, "input_size", where).get<std::vector<int>>();
    if (size.size() != 2) throw UserError(where + " input_size must be [height, width]");
    b.preprocessing.crop_height = size[0];
    b.preprocessing.crop_width = size[1];
    b.preprocessing.resize = require(pre, "resize", where).get<int>();
    b.preprocessing.mean = triple(require(pre, "mean", where), where + " mean");
    b.preprocessing.std = triple(require(pre, "std", where), where + " std");
    b.preprocessing.scale = pre.value("scale", 1.0 / 255.0);
    b.preprocessing.interpolation = pre.value("interpolation", "bilinear");
    if (b.preprocessing.interpolation != "bilinear" && b.preprocessing.interpolation != "bicubic") {
      throw UserError(where + " interpolation '" + b.preprocessing.interpolation +
                      "' is not supported: choose bilinear or bicubic");
    }
    if (pre.value("color", "RGB") != "RGB" || pre.value("layout", "NCHW") != "NCHW") {
      throw UserError(where + " must be RGB / NCHW");
    }

    for (const auto& [name, entry] : require(m, "files", manifest_path).items()) {
      b.files.push_back({name, tag(entry, "kind"), tag(entry, "precision"), tag(entry, "target"),
                         tag(entry, "compute_capability")});
    }
    read_class_names(m, manifest_path, b);
    read_plan_records(m, manifest_path, b);
    read_recommended(m, b);
    return b;
  } catch (const json::exception& e) {
    throw UserError("'" + manifest_path + "' has an unexpected layout: " + e.what());
  }
}

}  // namespace resnet_deploy
