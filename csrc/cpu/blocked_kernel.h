// Large problems: stream over blocks of rows so that no M x N temporary exists.
//
// Per block b:   Z_b = X_b W            (into a block-sized workspace)
//                epilogue over Z_b      (loss partials, dY_b, G_b in place of Z_b,
//                                        while Z_b is still in cache)
//                dX_b = G_b Wᵀ          (straight into the output rows)
//                dW  += X_bᵀ G_b        (accumulated in block order)
// The GEMMs run on brgemm tiles for float math (tiled_gemm.h) and on BLAS for
// double. The only temporaries are the block workspace, for float math a
// row-major Wᵀ and X_bᵀ, and for half/bfloat16 float copies of W and X_b plus a
// float dW accumulator. dW is summed in a fixed block order and each output
// tile by one thread, so results are deterministic for a given thread count.
#pragma once

#include "../common/grads_plan.h"
#include "epilogue_rows.h"
#include "tiled_gemm.h"

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <type_traits>
#include <vector>

namespace relufrob::cpu {

// Sized so that a block of Z stays in the 1-2 MiB L2 of current cores between
// the GEMM that writes it and the epilogue that reads it, with enough rows for
// the GEMMs to run near peak (256 KiB to 2 MiB measured within noise of each
// other at 1024x256x256 and 4096x512x512). The workspaces scale with it (Z and
// the float path's Xᵀ block), so the smaller end keeps extra memory low.
constexpr int64_t kBlockBytes = 512 * 1024;
constexpr int64_t kMinBlockRows = 64;

inline int64_t block_rows(int64_t M, int64_t N, int64_t elem_size) {
  const int64_t rows = kBlockBytes / std::max<int64_t>(N * elem_size, 1);
  return std::max<int64_t>(std::min(std::max(rows, kMinBlockRows), M), 1);
}

// out = a b (+ out when accumulate) for 2-D opmath tensors. Float runs on the
// tiled brgemm kernels (a and b must then be row-major); double on BLAS.
template <typename opmath_t>
void block_gemm(at::Tensor& out, const at::Tensor& a, const at::Tensor& b, bool accumulate) {
  if constexpr (std::is_same_v<opmath_t, float>) {
    tiled_gemm(a.size(0), b.size(1), a.size(1), a.const_data_ptr<float>(), a.stride(0),
               b.const_data_ptr<float>(), b.stride(0), out.data_ptr<float>(),
               out.stride(0), accumulate);
  } else if (accumulate) {
    out.addmm_(a, b);
  } else {
    at::mm_out(out, a, b);
  }
}

template <typename scalar_t>
double blocked_grads(const GradsPlan& p) {
  using opmath_t = at::opmath_type<scalar_t>;
  // float/double run their GEMMs natively; half/bfloat16 run them in float.
  constexpr bool kNative = std::is_same_v<scalar_t, opmath_t>;
  constexpr bool kFloatMath = std::is_same_v<opmath_t, float>;
  const auto op_dtype = c10::CppTypeToScalarType<opmath_t>::value;
  const auto op_opts = p.X.options().dtype(op_dtype);
  const int64_t M = p.M, K = p.K, N = p.N;
  const int64_t rows_per_block = block_rows(M, N, sizeof(opmath_t));
  const bool need_g = p.want.any_gemm_grad();
  const opmath_t two_scale = static_cast<opmath_t>(2.0 * p.scale);

  const at::Tensor W_op = kNative ? p.W : p.W.to(op_dtype);
  // brgemm takes row-major operands only, so the float path keeps Wᵀ as a
  // contiguous copy (K x N, once per call); BLAS reads the transposed view.
  const at::Tensor Wt = kFloatMath ? W_op.t().contiguous() : W_op.t();
  at::Tensor z_ws = at::empty({rows_per_block, N}, op_opts);
  at::Tensor dW_acc;
  if (p.want.dW) dW_acc = kNative ? p.dW : at::empty({K, N}, op_opts);
  at::Tensor dX_ws;
  if (p.want.dX && !kNative) dX_ws = at::empty({rows_per_block, K}, op_opts);

  const scalar_t* Y = p.Y.const_data_ptr<scalar_t>();
  scalar_t* dY = p.want.dY ? p.dY2.data_ptr<scalar_t>() : nullptr;
  std::vector<double> row_loss(rows_per_block);
  // Rows per epilogue task: enough work per thread to beat the fork/join cost.
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(N, 1));

  double loss = 0.0;
  for (int64_t r0 = 0; r0 < M; r0 += rows_per_block) {
    const int64_t rows = std::min(rows_per_block, M - r0);
    at::Tensor X_b = p.X.narrow(0, r0, rows);
    if constexpr (!kNative) X_b = X_b.to(op_dtype);
    at::Tensor Z_b = z_ws.narrow(0, 0, rows);
    block_gemm<opmath_t>(Z_b, X_b, W_op, false);

    opmath_t* z = Z_b.data_ptr<opmath_t>();
    const scalar_t* y = Y + r0 * N;
    scalar_t* dy = dY ? dY + r0 * N : nullptr;
    at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
      epilogue_rows(begin, end, N, z, y, two_scale, need_g, dy, row_loss.data());
    });
    for (int64_t i = 0; i < rows; ++i) loss += row_loss[i];

    const at::Tensor& G_b = Z_b;
    if (p.want.dX) {
      at::Tensor dX_b = p.dX2.narrow(0, r0, rows);
      if constexpr (kNative) {
        block_gemm<opmath_t>(dX_b, G_b, Wt, false);
      } else {
        at::Tensor tmp = dX_ws.narrow(0, 0, rows);
        block_gemm<opmath_t>(tmp, G_b, Wt, false);
        dX_b.copy_(tmp);
      }
    }
    if (p.want.dW) {
      // Xᵀ as its own row-major block for brgemm; BLAS takes the view.
      const at::Tensor Xt_b = kFloatMath ? X_b.t().contiguous() : X_b.t();
      block_gemm<opmath_t>(dW_acc, Xt_b, G_b, /*accumulate=*/r0 > 0);
    }
  }
  if (p.want.dW) {
    if (M == 0) {
      p.dW.zero_();
    } else if constexpr (!kNative) {
      p.dW.copy_(dW_acc);
    }
  }
  return loss;
}

}  // namespace relufrob::cpu
