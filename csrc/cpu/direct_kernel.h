// Tiny problems (the 10x4x4 case): plain loops, one pass over the rows.
//
// At these sizes three BLAS calls and their temporaries cost far more than the
// arithmetic, so each row's z, G, dX contribution and dW update are computed
// from registers and two row-sized buffers. Every product is formed, zeros
// included, so NaN/Inf propagate exactly as they do through BLAS.
#pragma once

#include "../common/grads_plan.h"
#include "epilogue_rows.h"

#include <ATen/OpMathType.h>

#include <type_traits>
#include <vector>

namespace relufrob::cpu {

template <typename scalar_t>
double direct_grads(const GradsPlan& p) {
  using opmath_t = at::opmath_type<scalar_t>;
  const int64_t M = p.M, K = p.K, N = p.N;
  const scalar_t* X = p.X.const_data_ptr<scalar_t>();
  const scalar_t* W = p.W.const_data_ptr<scalar_t>();
  const scalar_t* Y = p.Y.const_data_ptr<scalar_t>();
  scalar_t* dX = p.want.dX ? p.dX2.data_ptr<scalar_t>() : nullptr;
  scalar_t* dY = p.want.dY ? p.dY2.data_ptr<scalar_t>() : nullptr;
  const opmath_t two_scale = static_cast<opmath_t>(2.0 * p.scale);
  const bool need_g = p.want.any_gemm_grad();

  // dW is accumulated over all rows in opmath precision; for float/double the
  // output itself is that accumulator.
  constexpr bool kAccumulateInOutput = std::is_same_v<scalar_t, opmath_t>;
  std::vector<opmath_t> dW_acc_storage;
  opmath_t* dW_acc = nullptr;
  if (p.want.dW) {
    if constexpr (kAccumulateInOutput) {
      dW_acc = p.dW.data_ptr<scalar_t>();
      std::fill(dW_acc, dW_acc + K * N, opmath_t(0));
    } else {
      dW_acc_storage.assign(K * N, opmath_t(0));
      dW_acc = dW_acc_storage.data();
    }
  }

  // One row of z, then G in place; on the stack for the usual tiny N.
  constexpr int64_t kStackRow = 256;
  opmath_t stack_row[kStackRow];
  std::vector<opmath_t> heap_row(N > kStackRow ? N : 0);
  opmath_t* z = N > kStackRow ? heap_row.data() : stack_row;
  double loss = 0.0;
  for (int64_t i = 0; i < M; ++i) {
    const scalar_t* x_i = X + i * K;
    std::fill(z, z + N, opmath_t(0));
    for (int64_t k = 0; k < K; ++k) {
      const opmath_t x_ik = static_cast<opmath_t>(x_i[k]);
      const scalar_t* w_k = W + k * N;
      for (int64_t j = 0; j < N; ++j) z[j] += x_ik * static_cast<opmath_t>(w_k[j]);
    }
    loss += epilogue_row(z, Y + i * N, N, two_scale, need_g,
                         dY ? dY + i * N : nullptr);
    if (dX) {
      for (int64_t k = 0; k < K; ++k) {
        const scalar_t* w_k = W + k * N;
        opmath_t acc = 0;
        for (int64_t j = 0; j < N; ++j) acc += z[j] * static_cast<opmath_t>(w_k[j]);
        dX[i * K + k] = static_cast<scalar_t>(acc);
      }
    }
    if (dW_acc) {
      for (int64_t k = 0; k < K; ++k) {
        const opmath_t x_ik = static_cast<opmath_t>(x_i[k]);
        opmath_t* dw_k = dW_acc + k * N;
        for (int64_t j = 0; j < N; ++j) dw_k[j] += x_ik * z[j];
      }
    }
  }
  if constexpr (!kAccumulateInOutput) {
    if (p.want.dW) {
      scalar_t* out = p.dW.data_ptr<scalar_t>();
      for (int64_t e = 0; e < K * N; ++e) out[e] = static_cast<scalar_t>(dW_acc[e]);
    }
  }
  return loss;
}

}  // namespace relufrob::cpu
