// The CPU epilogue over rows of Z = XW: the shared scalar math of
// common/epilogue_math.h applied in loops the compiler vectorises.
#pragma once

#include "../common/epilogue_math.h"

#include <cstdint>

#if defined(__GNUC__)
#define RELUFROB_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define RELUFROB_ALWAYS_INLINE inline
#endif

// The build targets baseline x86-64 (SSE2) so the extension runs anywhere;
// these clones let the loader pick AVX2 or AVX-512 code for the epilogue on
// machines that have it.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define RELUFROB_CPU_CLONES \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define RELUFROB_CPU_CLONES
#endif

namespace relufrob::cpu {

// Elements per step. The loss terms of a step are summed into this many
// independent double accumulators: one running sum would serialise the loop
// (floating-point addition is not reassociated without -ffast-math), while
// fixed lanes vectorise and still add in a fixed, thread-independent order.
constexpr int kLanes = 16;

// One row of n elements. `zg` holds XW in opmath precision on entry; when
// kWriteG it holds G on exit. G is written in place on purpose: the compiler
// then knows the load and the store of an element are the same address and
// vectorises without a runtime overlap check (which a separate, aliasing
// output pointer would fail, dropping to a slow scalar loop).
template <bool kWriteG, bool kWriteDY, typename scalar_t, typename opmath_t>
RELUFROB_ALWAYS_INLINE double epilogue_row_fixed(
    opmath_t* __restrict zg, const scalar_t* __restrict y, int64_t n,
    opmath_t two_scale, scalar_t* __restrict dy) {
  double lanes[kLanes] = {};
  opmath_t sq[kLanes];
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) {
    for (int l = 0; l < kLanes; ++l) {
      const auto e = epilogue<opmath_t>(zg[j + l], static_cast<opmath_t>(y[j + l]), two_scale);
      sq[l] = e.sq;
      if constexpr (kWriteG) zg[j + l] = e.g;
      if constexpr (kWriteDY) dy[j + l] = static_cast<scalar_t>(e.dy);
    }
    for (int l = 0; l < kLanes; ++l) lanes[l] += static_cast<double>(sq[l]);
  }
  for (int l = 0; j < n; ++j, ++l) {
    const auto e = epilogue<opmath_t>(zg[j], static_cast<opmath_t>(y[j]), two_scale);
    lanes[l] += static_cast<double>(e.sq);
    if constexpr (kWriteG) zg[j] = e.g;
    if constexpr (kWriteDY) dy[j] = static_cast<scalar_t>(e.dy);
  }
  double sum = 0.0;
  for (int l = 0; l < kLanes; ++l) sum += lanes[l];
  return sum;
}

// Chooses the specialisation once per row rather than branching per element.
// Returns the row's sum of R² (unscaled); dy may be null.
template <typename scalar_t, typename opmath_t>
RELUFROB_ALWAYS_INLINE double epilogue_row(opmath_t* zg, const scalar_t* y,
                                           int64_t n, opmath_t two_scale,
                                           bool write_g, scalar_t* dy) {
  if (write_g && dy) return epilogue_row_fixed<true, true>(zg, y, n, two_scale, dy);
  if (write_g) return epilogue_row_fixed<true, false>(zg, y, n, two_scale, dy);
  if (dy) return epilogue_row_fixed<false, true>(zg, y, n, two_scale, dy);
  return epilogue_row_fixed<false, false>(zg, y, n, two_scale, dy);
}

// Rows [begin, end) of a block whose rows are n apart. Row i's loss partial
// goes to row_loss[i], so the caller can sum them in a fixed order whatever
// the thread count.
template <typename scalar_t, typename opmath_t>
RELUFROB_CPU_CLONES void epilogue_rows(int64_t begin, int64_t end, int64_t n,
                                       opmath_t* zg, const scalar_t* y,
                                       opmath_t two_scale, bool write_g,
                                       scalar_t* dy, double* row_loss) {
  for (int64_t i = begin; i < end; ++i) {
    row_loss[i] = epilogue_row(zg + i * n, y + i * n, n, two_scale, write_g,
                               dy ? dy + i * n : nullptr);
  }
}

}  // namespace relufrob::cpu
