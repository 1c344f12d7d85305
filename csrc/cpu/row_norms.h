// Sums of squares and row scaling for the per-sample kernels, vectorised with
// fixed lanes (as epilogue_rows.h does for the loss): floating-point addition
// is not reassociated without -ffast-math, so one running sum would serialise
// the loop, while fixed lanes vectorise and add in a fixed order (the norms are
// bitwise repeatable whatever the thread count).
#pragma once

#include "cpu_isa.h"
#include "epilogue_rows.h"

#include <c10/util/SmallVector.h>

#include <cstdint>

namespace relufrob::cpu {

// sum of v[i]², in double.
template <typename T>
RELUFROB_ALWAYS_INLINE double sum_squares(const T* __restrict v, int64_t n) {
  Double4 acc0 = {}, acc1 = {}, acc2 = {}, acc3 = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    Double4 q[4];
    for (int l = 0; l < 4; ++l) {
      Quad<T> t;
      __builtin_memcpy(&t, v + i + 4 * l, sizeof(t));
      q[l] = __builtin_convertvector(t, Double4);
    }
    acc0 += q[0] * q[0];
    acc1 += q[1] * q[1];
    acc2 += q[2] * q[2];
    acc3 += q[3] * q[3];
  }
  const Double4 acc = (acc0 + acc1) + (acc2 + acc3);
  double sum = (acc[0] + acc[1]) + (acc[2] + acc[3]);
  for (; i < n; ++i) sum += static_cast<double>(v[i]) * static_cast<double>(v[i]);
  return sum;
}

// ||sum over the rows of g||²: an (N,) bias's per-sample gradient, squared.
template <typename T>
RELUFROB_ALWAYS_INLINE double sum_of_rows_squared(const T* g, int64_t rows, int64_t n) {
  c10::SmallVector<double, 256> col(n, 0.0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < n; ++j) col[j] += static_cast<double>(g[r * n + j]);
  return sum_squares(col.data(), n);
}

template <typename T>
RELUFROB_ALWAYS_INLINE void scale_values(T* __restrict v, int64_t n, T c) {
  for (int64_t i = 0; i < n; ++i) v[i] *= c;
}

}  // namespace relufrob::cpu
