# The C++ reference loader (cpp/) as a small service image: resnet_deploy_infer and its ONNX Runtime library.
# Build:  docker build -f docker/Dockerfile.cpp -t resnet-deploy:cpp .
# Run:    docker run --rm -v "$PWD:/work" resnet-deploy:cpp /work/resnet50-bundle /work/cat.png --topk 5
FROM python:3.11-slim-bookworm AS build

# Toolchain and header-only libraries from Debian 12 (versions pinned to bookworm's).
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        cmake=3.25.1-1 g++=4:12.2.0-3 make=4.3-4.1 libstb-dev=0.0~git20220908.8b5f1f3+ds-1 \
        libjpeg62-turbo-dev=1:2.1.5-2 nlohmann-json3-dev=3.11.2-2 debian-archive-keyring=2023.3+deb12u2 \
    && rm -rf /var/lib/apt/lists/*
# The ONNX Runtime library comes from its wheel; the C/C++ headers from Debian 13's pinned, checksummed
# libonnxruntime-dev (cpp/fetch_ort_headers.sh).
RUN pip install --no-cache-dir "onnxruntime==1.32.0"
WORKDIR /src
COPY cpp ./cpp
RUN rm -rf cpp/build cpp/.deps \
    && bash cpp/fetch_ort_headers.sh \
    && cmake -S cpp -B /tmp/build -DCMAKE_BUILD_TYPE=Release -DPython3_EXECUTABLE="$(command -v python3)" \
        -DRESNET_DEPLOY_TEST_HELPERS=OFF \
    && cmake --build /tmp/build -j "$(nproc)" \
    && cmake --install /tmp/build --prefix /opt/resnet-deploy

FROM debian:bookworm-slim
# libjpeg-turbo decodes JPEG exactly as PIL does (bit-identical preprocessing); the rest is in /opt/resnet-deploy.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libjpeg62-turbo=1:2.1.5-2 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 deploy
COPY --from=build /opt/resnet-deploy /opt/resnet-deploy
USER 10001
WORKDIR /work
ENTRYPOINT ["/opt/resnet-deploy/bin/resnet_deploy_infer"]
CMD ["--help"]
