// bundle_probe BUNDLE [PLAN...]: prints what load_bundle() read from BUNDLE/manifest.json, for the Python tests
// (tests/test_deploy_cpp.py). Not installed. Without TensorRT this is how the plan records, which decide whether
// the TensorRT backend allows a plan's host code, are tested.
#include <iostream>

#include "resnet_deploy/bundle.hpp"

int main(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << "usage: bundle_probe BUNDLE [PLAN...]\n";
    return 2;
  }
  try {
    const resnet_deploy::Bundle b = resnet_deploy::load_bundle(argv[1]);
    for (const auto& a : b.files) {
      std::cout << "file " << a.name << " kind=" << a.kind << " precision=" << a.precision << " target=" << a.target
                << " compute_capability=" << a.compute_capability << "\n";
    }
    for (const auto& [name, r] : b.plans) {
      std::cout << "record " << name << " version_compat=" << (r.version_compat ? "true" : "false")
                << " tensorrt=" << r.tensorrt << "\n";
    }
    for (int i = 2; i < argc; ++i) {
      std::cout << "host_code " << argv[i] << " " << (b.plan_allows_host_code(argv[i]) ? "allowed" : "refused")
                << "\n";
    }
    return 0;
  } catch (const resnet_deploy::UserError& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 2;
  }
}
