#!/usr/bin/env bash
# Build tolk with whisper.cpp on CUDA (`--features cuda`) on a machine with no CUDA toolkit
# installed: the compiler (nvcc 13.0), the runtime and cuBLAS come from PyPI's NVIDIA wheels
# into $CUDA_PREFIX. The binaries go to target-cuda/release.
#
#   scripts/build-cuda.sh [CUDA_ARCHITECTURES]      # default 90 (H100/H200); 89 = L4/RTX 40xx
#
# Running the build needs an NVIDIA driver for CUDA 13 (580 or newer) and libcudart.so.13,
# libcublas.so.13 and libcublasLt.so.13 on the library path (the same wheels, or a CUDA 13
# toolkit). Compiling ggml's CUDA kernels for one architecture took ~30 min on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
arch=${1:-90}
prefix=${CUDA_PREFIX:-$HOME/.cache/tolk-cuda}
cuda=$prefix/nvidia/cu13
if [ ! -x "$cuda/bin/nvcc" ]; then
  # pip's --target does not merge into an existing directory: one directory per wheel.
  for wheel in nvidia-cuda-nvcc==13.0.88 nvidia-cuda-runtime==13.0.96 nvidia-cuda-crt==13.0.88 \
      nvidia-nvvm==13.0.88 nvidia-cuda-cccl==13.0.85 nvidia-cublas==13.1.0.3; do
    python3 -m pip install -q --no-deps --target "$prefix/wheels/${wheel%%=*}" "$wheel"
    cp -a "$prefix/wheels/${wheel%%=*}/nvidia" "$prefix/"
  done
  # nvcc.profile looks for lib64; the linker wants unversioned names.
  ln -sfn lib "$cuda/lib64"
  for l in cublas cublasLt cudart; do ln -sf "lib$l.so.13" "$cuda/lib/lib$l.so"; done
  # whisper-rs-sys links -lcuda and -lculibos. With GGML_CUDA_NO_VMM nothing calls the
  # driver API directly, so libcuda is an empty link stub (the driver's libcuda.so.1 is
  # what loads at run time, through libcudart) and culibos an empty archive (it serves
  # CUDA's static libraries, which this build does not use).
  mkdir -p "$cuda/lib/stubs"
  echo 'void tolk_link_stub(void) {}' >"$prefix/stub.c"
  gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$cuda/lib/stubs/libcuda.so" "$prefix/stub.c"
  ar rcs "$cuda/lib/stubs/libculibos.a"
fi
export PATH=$cuda/bin:$PATH CUDACXX=$cuda/bin/nvcc CUDAToolkit_ROOT=$cuda CUDA_PATH=$cuda
export CMAKE_CUDA_ARCHITECTURES=$arch GGML_CUDA_NO_VMM=ON
export RUSTFLAGS="-L native=$cuda/lib -L native=$cuda/lib/stubs"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target-cuda}
cargo build --release --features cuda --bins
echo "built target-cuda/release/tolk; run it with LD_LIBRARY_PATH=$cuda/lib"
