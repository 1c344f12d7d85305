// Row-major float GEMMs on oneDNN's brgemm micro-kernels, in 64x64 tiles.
//
// Why brgemm: on AVX-512 machines (AMD Zen 5 measured) torch's MKL takes its
// AVX2 code path and reaches about half the core's peak, while the brgemm
// micro-kernels torch exposes (at::native::cpublas::brgemm) run near it:
// 115 vs 50 GMAC/s per core at 512x256x256. Without AVX-512 it is the other
// way round (cpu_isa.h). Where torch is built without oneDNN, brgemm falls
// back to torch's own GEMM, so results stay correct everywhere.
#pragma once

#include <ATen/Parallel.h>
#include <ATen/native/CPUBlas.h>

#include <algorithm>
#include <cstdint>

namespace relufrob::cpu {

constexpr int64_t kTileRows = 64;
constexpr int64_t kTileCols = 64;

// c (m x n, row stride ldc) = a (m x k, lda) * b (k x n, ldb), plus the old c
// when `accumulate`. Each tile of c is computed whole by one thread, over the
// full depth k, so the result does not depend on the thread count. Tiles are
// spread over the threads, or run in order inside an enclosing parallel
// region (at::parallel_for then runs inline).
inline void tiled_gemm(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b,
                       int64_t ldb, float* c, int64_t ldc, bool accumulate) {
  if (m == 0 || n == 0) return;
  if (k == 0) {
    if (!accumulate)
      for (int64_t i = 0; i < m; ++i) std::fill(c + i * ldc, c + i * ldc + n, 0.0f);
    return;
  }
  const int64_t tile_rows = (m + kTileRows - 1) / kTileRows;
  const int64_t tile_cols = (n + kTileCols - 1) / kTileCols;
  at::parallel_for(0, tile_rows * tile_cols, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t i = (t / tile_cols) * kTileRows;
      const int64_t j = (t % tile_cols) * kTileCols;
      at::native::cpublas::brgemm(std::min(kTileRows, m - i), std::min(kTileCols, n - j), k, lda,
                                  ldb, ldc, accumulate, a + i * lda, b + j, c + i * ldc + j,
                                  /*is_vnni=*/false);
    }
    at::native::cpublas::brgemm_release(/*is_vnni=*/false);
  });
}

}  // namespace relufrob::cpu
