#!/usr/bin/env bash
# Install what the C++ loader (cpp/) needs on Debian/Ubuntu, then fetch ONNX Runtime's pinned headers.
# Idempotent: apt-get runs only when a package is missing. Needs root (or sudo) for apt-get install.
set -euo pipefail
cd "$(dirname "$0")/.."
pkgs=(cmake g++ make libstb-dev libjpeg-dev nlohmann-json3-dev debian-archive-keyring)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
bash cpp/fetch_ort_headers.sh
