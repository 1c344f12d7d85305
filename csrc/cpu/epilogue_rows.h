// The CPU epilogue over rows of Z = XW: the shared scalar math of
// common/epilogue_math.h applied in loops the compiler vectorises.
#pragma once

#include "../common/epilogue_math.h"
#include "cpu_isa.h"

#include <algorithm>
#include <cstdint>

namespace relufrob::cpu {

// Elements per step. The loss terms of a step are summed into this many
// independent double accumulators: one running sum would serialise the loop
// (floating-point addition is not reassociated without -ffast-math), while
// fixed lanes vectorise and still add in a fixed, thread-independent order.
constexpr int kLanes = 16;

// The accumulators as four named vectors of four doubles: as plain values
// they stay in registers (an array of lanes, or one 16-wide vector, was
// spilled to the stack at every step).
using Double4 __attribute__((vector_size(4 * sizeof(double)))) = double;
template <typename T>
using Quad __attribute__((vector_size(4 * sizeof(T)))) = T;

// acc += the four values, widened to double. By reference: a vector passed
// or returned by value would depend on the per-ISA vector ABI.
template <typename T>
RELUFROB_ALWAYS_INLINE void add_widened4(Double4& acc, const T* values) {
  Quad<T> q;
  __builtin_memcpy(&q, values, sizeof(q));
  acc += __builtin_convertvector(q, Double4);
}

// Elements per piece of a row: their squares wait in a stack buffer between
// the two loops below.
constexpr int64_t kPiece = 256;
static_assert(kPiece % kLanes == 0);

// One row of n elements. `zg` holds XW in opmath precision on entry; when
// kWriteG it holds G on exit. G is written in place on purpose: the compiler
// then knows the load and the store of an element are the same address and
// vectorises without a runtime overlap check (which a separate, aliasing
// output pointer would fail, dropping to a slow scalar loop).
//
// Each piece takes two loops: the elementwise math with no reduction in it,
// which vectorises reliably, then the squares summed into the double lanes.
// (One loop doing both vectorised or not depending on the variant.)
template <bool kWriteG, bool kWriteDY, typename scalar_t, typename opmath_t>
RELUFROB_ALWAYS_INLINE double epilogue_row_fixed(opmath_t* __restrict zg,
                                                 const scalar_t* __restrict y, int64_t n,
                                                 opmath_t two_scale, scalar_t* __restrict dy) {
  Double4 acc0 = {}, acc1 = {}, acc2 = {}, acc3 = {};
  opmath_t sq[kPiece];
  int64_t m = 0;  // elements in the current piece
  for (int64_t j0 = 0; j0 < n; j0 += kPiece) {
    m = std::min(kPiece, n - j0);
    for (int64_t i = 0; i < m; ++i) {
      const int64_t j = j0 + i;
      const auto e = epilogue<opmath_t>(zg[j], static_cast<opmath_t>(y[j]), two_scale);
      sq[i] = e.sq;
      if constexpr (kWriteG) zg[j] = e.g;
      if constexpr (kWriteDY) dy[j] = static_cast<scalar_t>(e.dy);
    }
    for (int64_t i = 0; i + kLanes <= m; i += kLanes) {
      add_widened4(acc0, sq + i);
      add_widened4(acc1, sq + i + 4);
      add_widened4(acc2, sq + i + 8);
      add_widened4(acc3, sq + i + 12);
    }
  }
  double lanes[kLanes];
  for (int l = 0; l < 4; ++l) {
    lanes[l] = acc0[l];
    lanes[4 + l] = acc1[l];
    lanes[8 + l] = acc2[l];
    lanes[12 + l] = acc3[l];
  }
  // The last piece's elements past its last whole step of kLanes.
  for (int64_t i = m / kLanes * kLanes, l = 0; i < m; ++i, ++l)
    lanes[l] += static_cast<double>(sq[i]);
  double sum = 0.0;
  for (int l = 0; l < kLanes; ++l) sum += lanes[l];
  return sum;
}

// Chooses the specialisation once per row rather than branching per element.
// Returns the row's sum of R² (unscaled); dy may be null.
template <typename scalar_t, typename opmath_t>
RELUFROB_ALWAYS_INLINE double epilogue_row(opmath_t* zg, const scalar_t* y, int64_t n,
                                           opmath_t two_scale, bool write_g, scalar_t* dy) {
  if (write_g && dy) return epilogue_row_fixed<true, true>(zg, y, n, two_scale, dy);
  if (write_g) return epilogue_row_fixed<true, false>(zg, y, n, two_scale, dy);
  if (dy) return epilogue_row_fixed<false, true>(zg, y, n, two_scale, dy);
  return epilogue_row_fixed<false, false>(zg, y, n, two_scale, dy);
}

// Rows [begin, end) of a block whose rows are n apart. Row i's loss partial
// goes to row_loss[i], so the caller can sum them in a fixed order whatever
// the thread count. Compiled for the ISA of the run_with_isa that calls it.
template <typename scalar_t, typename opmath_t>
RELUFROB_ALWAYS_INLINE void epilogue_rows(int64_t begin, int64_t end, int64_t n, opmath_t* zg,
                                          const scalar_t* y, opmath_t two_scale, bool write_g,
                                          scalar_t* dy, double* row_loss) {
  for (int64_t i = begin; i < end; ++i) {
    row_loss[i] =
        epilogue_row(zg + i * n, y + i * n, n, two_scale, write_g, dy ? dy + i * n : nullptr);
  }
}

}  // namespace relufrob::cpu
