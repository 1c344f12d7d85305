// Sums of squares and row scaling for the per-sample kernels. Squares are
// summed in whole SIMD registers of T (simd.h) and the registers' lanes then
// added in a fixed tree, each piece's sum in double: floating-point addition
// is not reassociated without -ffast-math, so a plain running sum would
// serialise the loop, while fixed lanes vectorise and add in a fixed order
// (the norms are bitwise repeatable whatever the thread count). Summing in T
// and reducing a batch of rows' registers together is what makes a row's
// norm cost little more than reading it: at 128x64x64 the earlier loop,
// which widened every element to double (and which GCC split into 128-bit
// halves through the stack), cost as much as the rest of the norms' pass
// beyond the loss.
#pragma once

#include "../common/per_sample_math.h"
#include "cpu_isa.h"
#include "simd.h"

#include <c10/util/SmallVector.h>

#include <algorithm>
#include <cstdint>
#include <utility>

namespace relufrob::cpu {

// out = [a0+a1, a2+a3, ..., b0+b1, b2+b3, ...]: adjacent lanes of a, then
// of b, added in pairs (x86's hadd, generalised to any width). Vectors go by
// reference: by value they would depend on the per-ISA vector ABI.
template <typename V, size_t... I>
RELUFROB_ALWAYS_INLINE void pair_sums(const V& a, const V& b, V& out, std::index_sequence<I...>) {
  out = __builtin_shufflevector(a, b, (2 * I)...) + __builtin_shufflevector(a, b, (2 * I + 1)...);
}

// v[0][r] = the sum of v[r]'s lanes, for as many registers v as a register
// has lanes: a tree of pair_sums, log2(lanes) levels, fully unrolled. Each
// sum is a fixed pairwise tree over its own register's lanes, whatever the
// others hold, so a row's sum does not depend on the rows reduced with it.
template <int kLanesV, int kLive = kLanesV, typename V>
RELUFROB_ALWAYS_INLINE void sum_lanes_of_rows(V* v) {
  if constexpr (kLive > 1) {
    for (int i = 0; i < kLive / 2; ++i)
      pair_sums(v[2 * i], v[2 * i + 1], v[i], std::make_index_sequence<kLanesV>{});
    sum_lanes_of_rows<kLanesV, kLive / 2>(v);
  }
}

// The sum of one register's lanes, by the same tree.
template <int kLanesV, int kLevel = kLanesV, typename V>
RELUFROB_ALWAYS_INLINE auto sum_lanes(const V& v) {
  if constexpr (kLevel > 1) {
    V pairs;
    pair_sums(v, v, pairs, std::make_index_sequence<kLanesV>{});
    return sum_lanes<kLanesV, kLevel / 2>(pairs);
  } else {
    return v[0];
  }
}

// Elements per piece: a float lane adds at most kNormPiece / lanes of a
// piece's squares (16 on AVX-512) before the piece's sum goes into double,
// so the rounding stays a few ulp however long the row is.
constexpr int64_t kNormPiece = 256;

// sum of v[i]², in double; compiled for the Isa of the run_with_isa around it.
template <typename Isa, typename T>
RELUFROB_ALWAYS_INLINE double sum_squares(const T* __restrict v, int64_t n) {
  using V = Vec<Isa, T>;
  constexpr int64_t kLanesT = kVecLanes<Isa, T>;
  static_assert(kNormPiece % (2 * kLanesT) == 0);
  const int64_t whole = n / (2 * kLanesT) * (2 * kLanesT);
  double sum = 0.0;
  for (int64_t p0 = 0; p0 < whole; p0 += kNormPiece) {
    const int64_t p1 = std::min(whole, p0 + kNormPiece);
    V acc0 = {}, acc1 = {};
    for (int64_t i = p0; i < p1; i += 2 * kLanesT) {
      V a, b;
      load_vec(a, v + i);
      load_vec(b, v + i + kLanesT);
      acc0 += a * a;
      acc1 += b * b;
    }
    const V acc = acc0 + acc1;
    sum += static_cast<double>(sum_lanes<kLanesT>(acc));
  }
  for (int64_t i = whole; i < n; ++i) sum += static_cast<double>(v[i]) * static_cast<double>(v[i]);
  return sum;
}

// out[r] = sum over j < n of v[r * ld + j]², in double, for r < rows. Rows
// go in batches of one per lane: per piece of a row, its squares are summed
// into one register, then the batch's registers are reduced together
// (sum_lanes_of_rows), about three vector operations per row where one
// row's own reduction takes a dozen. A row's result does not depend on its
// batch, so the norms stay the same bits whatever the thread count.
template <typename Isa, typename T>
RELUFROB_ALWAYS_INLINE void row_sums_of_squares(const T* __restrict v, int64_t ld, int64_t rows,
                                                int64_t n, double* __restrict out) {
  using V = Vec<Isa, T>;
  constexpr int kRows = static_cast<int>(kVecLanes<Isa, T>);
  static_assert(kNormPiece % kRows == 0);
  const int64_t whole = n / kRows * kRows;
  for (int64_t r0 = 0; r0 < rows; r0 += kRows) {
    const int64_t batch = std::min<int64_t>(kRows, rows - r0);
    const T* base = v + r0 * ld;
    double sums[kRows] = {};
    for (int64_t p0 = 0; p0 < whole; p0 += kNormPiece) {
      const int64_t p1 = std::min(whole, p0 + kNormPiece);
      // Columns outer, rows inner and unrolled, so that the batch's
      // accumulators stay in registers. A short batch reads its first row in
      // place of the missing ones and drops their sums.
      V acc[kRows];
      const T* row[kRows];
      for (int r = 0; r < kRows; ++r) {
        acc[r] = V{};
        row[r] = base + (r < batch ? r : 0) * ld;
      }
      for (int64_t j = p0; j < p1; j += kRows) {
#pragma GCC unroll 16
        for (int r = 0; r < kRows; ++r) {
          V a;
          load_vec(a, row[r] + j);
          acc[r] += a * a;
        }
      }
      for (int r = static_cast<int>(batch); r < kRows; ++r) acc[r] = V{};
      sum_lanes_of_rows<kRows>(acc);
      for (int r = 0; r < kRows; ++r) sums[r] += static_cast<double>(acc[0][r]);
    }
    for (int64_t r = 0; r < batch; ++r) {
      double sum = sums[r];
      for (int64_t j = whole; j < n; ++j) {
        const double e = static_cast<double>(base[r * ld + j]);
        sum += e * e;
      }
      out[r0 + r] = sum;
    }
  }
}

// sq[r] = ||x_rᵀ g_r||² + ||g_r||² (the second term with a bias) for
// r < rows: the squared gradient norm of a sample that is one row, which is
// ||x_r||² ||g_r||². x's rows are ldx apart, g's ldg.
template <typename Isa, typename T>
RELUFROB_ALWAYS_INLINE void rows_squared_norms(const T* x, int64_t ldx, const T* g, int64_t ldg,
                                               int64_t rows, int64_t K, int64_t N, bool bias,
                                               double* sq) {
  constexpr int64_t kChunk = 64;
  double xx[kChunk];
  for (int64_t r0 = 0; r0 < rows; r0 += kChunk) {
    const int64_t n = std::min(kChunk, rows - r0);
    row_sums_of_squares<Isa>(x + r0 * ldx, ldx, n, K, xx);
    row_sums_of_squares<Isa>(g + r0 * ldg, ldg, n, N, sq + r0);
    for (int64_t r = 0; r < n; ++r) sq[r0 + r] = one_row_squared_norm(xx[r], sq[r0 + r], bias);
  }
}

// ||sum over the rows of g||²: an (N,) bias's per-sample gradient, squared.
template <typename Isa, typename T>
RELUFROB_ALWAYS_INLINE double sum_of_rows_squared(const T* g, int64_t rows, int64_t n) {
  c10::SmallVector<double, 256> col(n, 0.0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < n; ++j) col[j] += static_cast<double>(g[r * n + j]);
  return sum_squares<Isa>(col.data(), n);
}

template <typename T>
RELUFROB_ALWAYS_INLINE void scale_values(T* __restrict v, int64_t n, T c) {
  for (int64_t i = 0; i < n; ++i) v[i] *= c;
}

}  // namespace relufrob::cpu
