#!/usr/bin/env bash
# Fetch ONNX Runtime's C/C++ API headers from Debian's package archive, pinned and checksummed.
#
# The onnxruntime wheel on PyPI ships the shared library but no headers, and Debian 12 packages no
# onnxruntime. Debian 13 (trixie) has libonnxruntime-dev, a headers-only package. Headers of an older API
# version work with a newer library (the C++ wrapper asks the library for ORT_API_VERSION, which every newer
# release still serves), so these 1.21 headers build against the 1.2x/1.3x library of the wheel.
#
# The .deb is downloaded with apt-get through a private apt state folder (the machine's apt sources and
# lists stay untouched), its sha256 is checked, and its headers are unpacked into DEST/include/onnxruntime.
# Needs: apt-get, dpkg-deb (any Debian/Ubuntu machine) and access to the Debian archive. No root needed.
#
# Usage: cpp/fetch_ort_headers.sh [DEST]   (default: cpp/.deps/onnxruntime-headers-1.21.0)
set -euo pipefail

PKG=libonnxruntime-dev
VERSION=1.21.0+dfsg-1
SHA256=14f7d959d5deacbcf1504830d4189f91fc67382b399ed9ae9d3aa9c4050ced08
SUITE=trixie
MIRROR=${RESNET_DEPLOY_DEBIAN_MIRROR:-http://deb.debian.org/debian}
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg

here=$(cd "$(dirname "$0")" && pwd)
dest=${1:-$here/.deps/onnxruntime-headers-1.21.0}

if [ -f "$dest/include/onnxruntime/onnxruntime_cxx_api.h" ]; then
  echo "ONNX Runtime headers already in $dest/include/onnxruntime"
  exit 0
fi
for tool in apt-get dpkg-deb sha256sum; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "error: $tool not found: fetch_ort_headers.sh needs a Debian/Ubuntu machine;" \
         "elsewhere pass -DONNXRUNTIME_ROOT=<an ONNX Runtime release folder with include/ and lib/>" >&2
    exit 2
  fi
done
if [ ! -f "$KEYRING" ]; then
  echo "error: $KEYRING not found: install debian-archive-keyring (apt-get install debian-archive-keyring)" >&2
  exit 2
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$work/deb"
echo "deb [signed-by=$KEYRING] $MIRROR $SUITE main" > "$work/sources.list"
apt_opts=(-o "Dir::Etc::SourceList=$work/sources.list" -o "Dir::Etc::SourceParts=$work/none"
          -o "Dir::State::Lists=$work/lists" -o "Dir::Cache=$work/cache" -o "APT::Sandbox::User=$(id -un)"
          -o "Debug::NoLocking=1" -o "APT::Architecture=amd64" -q)
echo "Fetching $PKG=$VERSION from Debian $SUITE"
apt-get "${apt_opts[@]}" update >/dev/null
(cd "$work/deb" && apt-get "${apt_opts[@]}" download "$PKG=$VERSION" >/dev/null)
deb=$(ls "$work"/deb/*.deb)
got=$(sha256sum "$deb" | cut -d' ' -f1)
if [ "$got" != "$SHA256" ]; then
  echo "error: $deb has sha256 $got, expected $SHA256: refusing to use it" >&2
  exit 1
fi
dpkg-deb -x "$deb" "$work/x"
mkdir -p "$dest/include"
rm -rf "$dest/include/onnxruntime"
cp -r "$work/x/usr/include/onnxruntime" "$dest/include/onnxruntime"
printf '%s %s sha256 %s\n' "$PKG" "$VERSION" "$SHA256" > "$dest/SOURCE"
echo "ONNX Runtime $VERSION headers in $dest/include/onnxruntime"
