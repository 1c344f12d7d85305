// The three matrix products of one block of rows, on the backend that
// cpu_isa.h chose: BLAS through ATen, or brgemm tiles (float only).
//
//     Z_b  = X_b W        xw
//     dX_b = G_b Wᵀ       gwt
//     dW  += X_bᵀ G_b     xtg_accumulate
//
// Called on one thread inside the row-chunk region, BLAS and the tiles run
// sequentially; called from outside any region, they use every thread.
#pragma once

#include "cpu_isa.h"
#include "tiled_gemm.h"
#include "transpose.h"

#include <ATen/ATen.h>

#include <cstdint>
#include <type_traits>

namespace relufrob::cpu {

// A row-major (rows x cols) matrix with row stride ld, as a tensor for
// ATen's BLAS-backed mm. from_blob tensors carry no autograd metadata, so
// the out= calls are legal on any thread, whatever the inputs require.
template <typename T>
at::Tensor matrix_view(const T* data, int64_t rows, int64_t cols, int64_t ld) {
  return at::from_blob(const_cast<T*>(data), {rows, cols}, {ld, 1},
                       at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value));
}

template <typename T>
struct BlockGemm {
  GemmBackend backend;  // kBrgemm only for float
  const T* W;           // K x N, row-major
  const T* Wt;          // N x K, row-major: brgemm's operand for Wᵀ
  int64_t K, N;

  bool brgemm() const {
    if constexpr (std::is_same_v<T, float>) return backend == GemmBackend::kBrgemm;
    return false;
  }

  // z (rows x N, contiguous) = x (rows x K, row stride ldx) W
  void xw(int64_t rows, const T* x, int64_t ldx, T* z) const {
    if constexpr (std::is_same_v<T, float>) {
      if (brgemm()) return tiled_gemm(rows, N, K, x, ldx, W, N, z, N, false);
    }
    at::Tensor out = matrix_view(z, rows, N, N);
    at::mm_out(out, matrix_view(x, rows, K, ldx), matrix_view(W, K, N, N));
  }

  // dx (rows x K, row stride lddx) = g (rows x N, contiguous) Wᵀ
  void gwt(int64_t rows, const T* g, T* dx, int64_t lddx) const {
    if constexpr (std::is_same_v<T, float>) {
      if (brgemm()) return tiled_gemm(rows, K, N, g, N, Wt, K, dx, lddx, false);
    }
    at::Tensor out = matrix_view(dx, rows, K, lddx);
    at::mm_out(out, matrix_view(g, rows, N, N), matrix_view(W, K, N, N).t());
  }

  // dw (K x N) += x (rows x K, ldx)ᵀ g (rows x N). brgemm reads xᵀ row-major,
  // so x is first transposed into `xt_scratch` (K x rows).
  void xtg_accumulate(int64_t rows, const T* x, int64_t ldx, const T* g, T* dw,
                      T* xt_scratch) const {
    if constexpr (std::is_same_v<T, float>) {
      if (brgemm()) {
        transpose_tiled(rows, K, x, ldx, xt_scratch, rows);
        return tiled_gemm(K, N, rows, xt_scratch, rows, g, N, dw, N, true);
      }
    }
    at::Tensor out = matrix_view(dw, K, N, N);
    at::addmm_out(out, out, matrix_view(x, rows, K, ldx).t(), matrix_view(g, rows, N, N));
  }
};

}  // namespace relufrob::cpu
