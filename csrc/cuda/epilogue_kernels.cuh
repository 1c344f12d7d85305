// CUDA kernels for the relufrob epilogue, free of ATen/torch so that they can
// be compiled and exercised on their own (only CUDA headers are included).
//
// The epilogue is memory-bound, so the kernels use only the portable core of
// CUDA: grid-stride loops, shared memory and __syncthreads(). The loss is
// reduced in two deterministic stages (per-block partials, then one block
// summing them in a fixed order); there are no atomics, so the same inputs on
// the same device give bitwise-identical losses.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "../common/epilogue_math.h"

namespace relufrob::cuda {

constexpr int kEpilogueThreads = 256;
// Enough blocks to fill any current GPU several times over with a grid-stride
// loop; a fixed cap keeps the partials buffer small and the reduction order
// independent of the device.
constexpr int kMaxEpilogueBlocks = 1024;

inline int epilogue_num_blocks(int64_t numel) {
  const int64_t wanted = (numel + kEpilogueThreads - 1) / kEpilogueThreads;
  return static_cast<int>(wanted < 1 ? 1
                                     : (wanted > kMaxEpilogueBlocks ? kMaxEpilogueBlocks : wanted));
}

// Tree reduction of one value per thread in shared memory; the result is
// valid in thread 0. blockDim.x must be kEpilogueThreads.
template <typename acc_t>
__device__ acc_t block_sum(acc_t value, acc_t* shared) {
  shared[threadIdx.x] = value;
  __syncthreads();
  for (int stride = kEpilogueThreads / 2; stride > 0; stride >>= 1) {
    if (threadIdx.x < stride) shared[threadIdx.x] += shared[threadIdx.x + stride];
    __syncthreads();
  }
  return shared[0];
}

// How the bias enters Z = XW + b: not at all, one (N,) row added to every
// row, or elementwise (the output's shape).
enum class BiasMode { kNone, kRow, kFull };

// One pass over Z = XW (numel = M*N elements, row-major like Y, rows n long).
// T is the GEMMs' dtype (Z, G); E that of Y, bias and dY: T, or float under
// a half/bfloat16 T (autocast's mixed precision).
//   y     (nullable) the target; a missing one is a target of zeros.
//   bias  read as kBias says.
//   g     (nullable) receives G; may alias z, each element is read first.
//   dy    (nullable) receives dY; may alias z in the same way (when E is T).
//   g_e   (nullable) receives G in E as well: a full float32 bias's db in
//         mixed precision, unrounded, as autograd gives it.
//   partials[blockIdx.x] receives the block's sum of R² (unscaled).
template <typename T, typename E, typename acc_t, bool kRelu, BiasMode kBias>
__global__ void __launch_bounds__(kEpilogueThreads)
    epilogue_kernel(const T* z, const E* __restrict__ y, const E* __restrict__ bias, int64_t numel,
                    int64_t n, acc_t two_scale, T* g, E* dy, E* __restrict__ g_e,
                    acc_t* __restrict__ partials) {
  __shared__ acc_t shared[kEpilogueThreads];
  acc_t sum = 0;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < numel;
       i += stride) {
    acc_t zi = static_cast<acc_t>(z[i]);
    if constexpr (kBias == BiasMode::kRow) zi = add_bias(zi, static_cast<acc_t>(bias[i % n]));
    if constexpr (kBias == BiasMode::kFull) zi = add_bias(zi, static_cast<acc_t>(bias[i]));
    const acc_t yi = y ? static_cast<acc_t>(y[i]) : acc_t(0);
    const auto e = epilogue<kRelu>(zi, yi, two_scale);
    sum += e.sq;
    if (g) g[i] = static_cast<T>(e.g);
    if (dy) dy[i] = static_cast<E>(e.dy);
    if (g_e) g_e[i] = static_cast<E>(e.g);
  }
  const acc_t block_total = block_sum(sum, shared);
  if (threadIdx.x == 0) partials[blockIdx.x] = block_total;
}

// Second stage: one block adds the partials in a fixed order, applies the
// reduction scale and writes the loss in the output dtype.
template <typename T, typename acc_t>
__global__ void __launch_bounds__(kEpilogueThreads)
    finalize_loss_kernel(const acc_t* __restrict__ partials, int num_partials, acc_t scale,
                         T* __restrict__ loss) {
  __shared__ acc_t shared[kEpilogueThreads];
  acc_t sum = 0;
  for (int i = threadIdx.x; i < num_partials; i += blockDim.x) sum += partials[i];
  const acc_t total = block_sum(sum, shared);
  if (threadIdx.x == 0) *loss = static_cast<T>(total * scale);
}

// What one epilogue launch reads and writes besides Z (see epilogue_kernel).
template <typename T, typename E = T>
struct EpilogueIO {
  const E* y = nullptr;
  const E* bias = nullptr;
  BiasMode bias_mode = BiasMode::kNone;
  bool relu = true;
  T* g = nullptr;
  E* dy = nullptr;
  E* g_e = nullptr;
};

template <typename T, typename E, typename acc_t, bool kRelu>
void launch_epilogue_for(const T* z, const EpilogueIO<T, E>& io, int64_t numel, int64_t n,
                         acc_t two_scale, acc_t* partials, int num_blocks, cudaStream_t stream) {
  const auto launch = [&](auto kernel) {
    kernel<<<num_blocks, kEpilogueThreads, 0, stream>>>(z, io.y, io.bias, numel, n, two_scale, io.g,
                                                        io.dy, io.g_e, partials);
  };
  switch (io.bias_mode) {
    case BiasMode::kNone:
      return launch(epilogue_kernel<T, E, acc_t, kRelu, BiasMode::kNone>);
    case BiasMode::kRow:
      return launch(epilogue_kernel<T, E, acc_t, kRelu, BiasMode::kRow>);
    case BiasMode::kFull:
      return launch(epilogue_kernel<T, E, acc_t, kRelu, BiasMode::kFull>);
  }
}

// Z holds numel = M*n elements; the activation and bias mode pick one of the
// kernel's specialisations, so the plain relu path reads no bias at all.
template <typename T, typename E, typename acc_t>
void launch_epilogue(const T* z, const EpilogueIO<T, E>& io, int64_t numel, int64_t n,
                     acc_t two_scale, acc_t* partials, int num_blocks, cudaStream_t stream) {
  if (io.relu) {
    launch_epilogue_for<T, E, acc_t, true>(z, io, numel, n, two_scale, partials, num_blocks,
                                           stream);
  } else {
    launch_epilogue_for<T, E, acc_t, false>(z, io, numel, n, two_scale, partials, num_blocks,
                                            stream);
  }
}

// With num_partials == 0 (an empty M*N) this still writes 0 * scale, which is
// NaN for the mean over nothing, like torch's mean.
template <typename T, typename acc_t>
void launch_finalize_loss(const acc_t* partials, int num_partials, acc_t scale, T* loss,
                          cudaStream_t stream) {
  finalize_loss_kernel<T, acc_t>
      <<<1, kEpilogueThreads, 0, stream>>>(partials, num_partials, scale, loss);
}

}  // namespace relufrob::cuda
