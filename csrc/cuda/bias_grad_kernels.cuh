// db for an (N,) bias: the column sums of G (M x N, row-major), reduced in two
// deterministic stages with no atomics. Free of ATen/torch, like the epilogue.
//
// Stage 1 cuts the rows into chunks whose size depends on M alone (never on
// the device), and each thread sums one column of one chunk in row order:
// neighbouring threads read neighbouring columns, so the loads coalesce.
// Stage 2 adds each column's chunk partials in chunk order. The same G thus
// always gives the same db, bit for bit.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace relufrob::cuda {

constexpr int kBiasGradThreads = 256;
constexpr int64_t kMinRowsPerChunk = 256;
// At most this many partial rows of N, whatever M: bounds the workspace.
constexpr int64_t kMaxBiasGradChunks = 1024;

inline int64_t bias_grad_rows_per_chunk(int64_t M) {
  const int64_t even = (M + kMaxBiasGradChunks - 1) / kMaxBiasGradChunks;
  return even > kMinRowsPerChunk ? even : kMinRowsPerChunk;
}

inline int64_t bias_grad_chunks(int64_t M) {
  const int64_t rows = bias_grad_rows_per_chunk(M);
  const int64_t chunks = (M + rows - 1) / rows;
  return chunks < 1 ? 1 : chunks;
}

// acc_t elements of workspace that launch_bias_grad needs.
inline int64_t bias_grad_workspace(int64_t M, int64_t N) { return bias_grad_chunks(M) * N; }

template <typename T, typename acc_t>
__global__ void __launch_bounds__(kBiasGradThreads)
    bias_grad_partials_kernel(const T* __restrict__ g, int64_t M, int64_t N, int64_t rows_per_chunk,
                              acc_t* __restrict__ partials) {
  const int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j >= N) return;
  const int64_t chunk = blockIdx.y;
  const int64_t begin = chunk * rows_per_chunk;
  const int64_t end = begin + rows_per_chunk < M ? begin + rows_per_chunk : M;
  acc_t sum = 0;
  for (int64_t r = begin; r < end; ++r) sum += static_cast<acc_t>(g[r * N + j]);
  partials[chunk * N + j] = sum;
}

template <typename Out, typename acc_t>
__global__ void __launch_bounds__(kBiasGradThreads)
    bias_grad_finish_kernel(const acc_t* __restrict__ partials, int64_t chunks, int64_t N,
                            Out* __restrict__ db) {
  const int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j >= N) return;
  acc_t sum = 0;
  for (int64_t c = 0; c < chunks; ++c) sum += partials[c * N + j];
  db[j] = static_cast<Out>(sum);
}

// db[j] = sum_r g[r * N + j]; `workspace` holds bias_grad_workspace(M, N)
// acc_t elements; db may have another type than g (a float32 bias over a
// half/bfloat16 G). M == 0 gives zeros; N == 0 launches nothing.
template <typename T, typename acc_t, typename Out = T>
void launch_bias_grad(const T* g, int64_t M, int64_t N, acc_t* workspace, Out* db,
                      cudaStream_t stream) {
  if (N == 0) return;
  const int64_t chunks = bias_grad_chunks(M);
  const unsigned col_blocks = static_cast<unsigned>((N + kBiasGradThreads - 1) / kBiasGradThreads);
  bias_grad_partials_kernel<T, acc_t>
      <<<dim3(col_blocks, static_cast<unsigned>(chunks)), kBiasGradThreads, 0, stream>>>(
          g, M, N, bias_grad_rows_per_chunk(M), workspace);
  bias_grad_finish_kernel<Out, acc_t>
      <<<col_blocks, kBiasGradThreads, 0, stream>>>(workspace, chunks, N, db);
}

}  // namespace relufrob::cuda
