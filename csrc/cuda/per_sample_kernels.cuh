// CUDA kernels of relufrob::per_sample_grads, free of ATen/torch like the
// epilogue's: sums of squares of rows, and the per-sample norms and clip
// factors of a batch with one row per sample. Deterministic: one block per
// row, a fixed-order tree reduction, no atomics.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "../common/per_sample_math.h"
#include "epilogue_kernels.cuh"

namespace relufrob::cuda {

// out[r] = sum over the row r of a (rows x n, row stride n) of a², in acc_t.
template <typename T, typename acc_t>
__global__ void __launch_bounds__(kEpilogueThreads)
    row_sum_squares_kernel(const T* __restrict__ a, int64_t n, acc_t* __restrict__ out) {
  __shared__ acc_t shared[kEpilogueThreads];
  const T* row = a + static_cast<int64_t>(blockIdx.x) * n;
  acc_t sum = 0;
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
    const acc_t v = static_cast<acc_t>(row[j]);
    sum += v * v;
  }
  const acc_t total = block_sum(sum, shared);
  if (threadIdx.x == 0) out[blockIdx.x] = total;
}

// rows == 0 launches nothing (a grid of 0 blocks is an error).
template <typename T, typename acc_t>
void launch_row_sum_squares(const T* a, int64_t rows, int64_t n, acc_t* out, cudaStream_t stream) {
  if (rows == 0) return;
  row_sum_squares_kernel<T, acc_t>
      <<<static_cast<unsigned>(rows), kEpilogueThreads, 0, stream>>>(a, n, out);
}

// One row per sample: norm_b from ||x_b||² and ||g_b||², and with clip its
// factor c_b (per_sample_math.h).
template <typename acc_t, typename T>
__global__ void row_norms_kernel(const acc_t* __restrict__ xsq, const acc_t* __restrict__ gsq,
                                 int64_t B, bool bias, acc_t max_norm, T* __restrict__ norms,
                                 acc_t* __restrict__ factors) {
  const int64_t b = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (b >= B) return;
  const acc_t norm = sqrt(one_row_squared_norm(xsq[b], gsq[b], bias));
  norms[b] = static_cast<T>(norm);
  if (factors) factors[b] = clip_factor(norm, max_norm);
}

template <typename acc_t, typename T>
void launch_row_norms(const acc_t* xsq, const acc_t* gsq, int64_t B, bool bias, acc_t max_norm,
                      T* norms, acc_t* factors, cudaStream_t stream) {
  if (B == 0) return;
  const unsigned blocks = static_cast<unsigned>((B + kEpilogueThreads - 1) / kEpilogueThreads);
  row_norms_kernel<acc_t, T>
      <<<blocks, kEpilogueThreads, 0, stream>>>(xsq, gsq, B, bias, max_norm, norms, factors);
}

}  // namespace relufrob::cuda
