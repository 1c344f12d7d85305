// The CPU epilogue over rows of Z = XW: the shared scalar math of
// common/epilogue_math.h applied in loops the compiler vectorises.
#pragma once

#include "../common/epilogue_math.h"
#include "cpu_isa.h"

#include <algorithm>
#include <cstdint>
#include <type_traits>

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

// What the epilogue reads and writes besides Z, for the rows of one call.
// Row i's pointers are base + i * ld; an ld of 0 repeats one row, which is
// how a missing Y (a row of zeros) and an (N,) bias are read. scalar_t is
// the type of Y, bias and dY; gemm_t that of X and W: Z = XW is rounded to
// it first when it is float16/bfloat16, as the product of a low-precision
// GEMM is, so that the mask and the residual see what autograd and the CUDA
// kernels see.
template <typename scalar_t, typename opmath_t, typename gemm_t = opmath_t>
struct EpilogueArgs {
  int64_t n = 0;                // elements per row
  const scalar_t* y = nullptr;  // the target, or a row of zeros (y_ld 0)
  int64_t y_ld = 0;
  const scalar_t* bias = nullptr;  // null: no bias
  int64_t bias_ld = 0;
  scalar_t* dy = nullptr;  // dY (ld n), or null when not wanted
  opmath_t two_scale = 2;
  bool relu = true;
  bool write_g = true;  // replace Z by G (a gradient that needs G is wanted)

  const scalar_t* y_row(int64_t i) const { return y + i * y_ld; }
  const scalar_t* bias_row(int64_t i) const { return bias ? bias + i * bias_ld : nullptr; }
  scalar_t* dy_row(int64_t i) const { return dy ? dy + i * n : nullptr; }
};

// The sum of v[0, m), m <= kPiece, in double: fixed float lanes, four
// vectors of four, then one double per lane in a fixed order. (The squared
// gradients of a piece: a lane adds at most kPiece / 16 of them.)
template <typename T>
RELUFROB_ALWAYS_INLINE double sum_piece(const T* v, int64_t m) {
  Quad<T> acc0 = {}, acc1 = {}, acc2 = {}, acc3 = {}, q;
  int64_t i = 0;
  for (; i + kLanes <= m; i += kLanes) {
    __builtin_memcpy(&q, v + i, sizeof(q));
    acc0 += q;
    __builtin_memcpy(&q, v + i + 4, sizeof(q));
    acc1 += q;
    __builtin_memcpy(&q, v + i + 8, sizeof(q));
    acc2 += q;
    __builtin_memcpy(&q, v + i + 12, sizeof(q));
    acc3 += q;
  }
  const Quad<T> all = (acc0 + acc1) + (acc2 + acc3);
  double sum = (static_cast<double>(all[0]) + static_cast<double>(all[1])) +
               (static_cast<double>(all[2]) + static_cast<double>(all[3]));
  for (; i < m; ++i) sum += static_cast<double>(v[i]);
  return sum;
}

// One row of n elements. `zg` holds XW in opmath precision on entry; when
// kWriteG it holds G on exit. G is written in place on purpose: the compiler
// then knows the load and the store of an element are the same address and
// vectorises without a runtime overlap check (which a separate, aliasing
// output pointer would fail, dropping to a slow scalar loop). With
// kGradSquares the row's ||G||² goes to *g_sq as well: the per-sample norms
// of one-row samples then need neither G in memory nor a second pass over it.
//
// Each piece takes two loops: the elementwise math with no reduction in it,
// which vectorises reliably, then the squares summed into the double lanes.
// (One loop doing both vectorised or not depending on the variant.)
template <bool kWriteG, bool kWriteDY, bool kBias, bool kRelu, bool kGradSquares, typename gemm_t,
          typename scalar_t, typename opmath_t>
RELUFROB_ALWAYS_INLINE double epilogue_row_fixed(opmath_t* __restrict zg,
                                                 const scalar_t* __restrict y,
                                                 const scalar_t* __restrict b, int64_t n,
                                                 opmath_t two_scale, scalar_t* __restrict dy,
                                                 double* g_sq) {
  Double4 acc0 = {}, acc1 = {}, acc2 = {}, acc3 = {};
  opmath_t sq[kPiece], gq[kGradSquares ? kPiece : 1];
  double g_total = 0.0;
  int64_t m = 0;  // elements in the current piece
  for (int64_t j0 = 0; j0 < n; j0 += kPiece) {
    m = std::min(kPiece, n - j0);
    for (int64_t i = 0; i < m; ++i) {
      const int64_t j = j0 + i;
      opmath_t z = zg[j];
      if constexpr (!std::is_same_v<gemm_t, opmath_t>) z = static_cast<opmath_t>(gemm_t(z));
      if constexpr (kBias) z = add_bias(z, static_cast<opmath_t>(b[j]));
      const auto e = epilogue<kRelu>(z, static_cast<opmath_t>(y[j]), two_scale);
      sq[i] = e.sq;
      if constexpr (kGradSquares) gq[i] = e.g * e.g;
      if constexpr (kWriteG) zg[j] = e.g;
      if constexpr (kWriteDY) dy[j] = static_cast<scalar_t>(e.dy);
    }
    for (int64_t i = 0; i + kLanes <= m; i += kLanes) {
      add_widened4(acc0, sq + i);
      add_widened4(acc1, sq + i + 4);
      add_widened4(acc2, sq + i + 8);
      add_widened4(acc3, sq + i + 12);
    }
    if constexpr (kGradSquares) g_total += sum_piece(gq, m);
  }
  if constexpr (kGradSquares) *g_sq = g_total;
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

// The outputs' specialisation, chosen once per row rather than per element.
// ||G||² is asked for by the per-sample kernel alone, which never wants dY.
template <bool kBias, bool kRelu, typename gemm_t, typename scalar_t, typename opmath_t>
RELUFROB_ALWAYS_INLINE double epilogue_row_outputs(opmath_t* zg, const scalar_t* y,
                                                   const scalar_t* b, int64_t n, opmath_t two_scale,
                                                   bool write_g, scalar_t* dy, double* g_sq) {
  const auto row = [&](auto g, auto dy_out, auto g_squares) RELUFROB_INLINE_LAMBDA {
    return epilogue_row_fixed<decltype(g)::value, decltype(dy_out)::value, kBias, kRelu,
                              decltype(g_squares)::value, gemm_t>(zg, y, b, n, two_scale, dy, g_sq);
  };
  using Yes = std::true_type;
  using No = std::false_type;
  if (g_sq) return write_g ? row(Yes{}, No{}, Yes{}) : row(No{}, No{}, Yes{});
  if (write_g) return dy ? row(Yes{}, Yes{}, No{}) : row(Yes{}, No{}, No{});
  return dy ? row(No{}, Yes{}, No{}) : row(No{}, No{}, No{});
}

// Row i of the problem, whose Z (then G) is at zg. Returns the row's sum of
// R² (unscaled). With g_sq (and no dY) the row's ||G||² goes there too.
template <typename scalar_t, typename opmath_t, typename gemm_t>
RELUFROB_ALWAYS_INLINE double epilogue_row(const EpilogueArgs<scalar_t, opmath_t, gemm_t>& a,
                                           int64_t i, opmath_t* zg, double* g_sq = nullptr) {
  const scalar_t* y = a.y_row(i);
  const scalar_t* b = a.bias_row(i);
  scalar_t* dy = a.dy_row(i);
  const auto row = [&](auto bias, auto relu) RELUFROB_INLINE_LAMBDA {
    return epilogue_row_outputs<decltype(bias)::value, decltype(relu)::value, gemm_t>(
        zg, y, b, a.n, a.two_scale, a.write_g, dy, g_sq);
  };
  if (b)
    return a.relu ? row(std::true_type{}, std::true_type{})
                  : row(std::true_type{}, std::false_type{});
  return a.relu ? row(std::false_type{}, std::true_type{})
                : row(std::false_type{}, std::false_type{});
}

// Rows [begin, end) of a block that starts at problem row `first` and whose
// Z rows are n apart. Row i's loss partial goes to row_loss[i], so the
// caller can sum them in a fixed order whatever the thread count. Compiled
// for the ISA of the run_with_isa that calls it.
template <typename scalar_t, typename opmath_t, typename gemm_t>
RELUFROB_ALWAYS_INLINE void epilogue_rows(const EpilogueArgs<scalar_t, opmath_t, gemm_t>& a,
                                          int64_t first, int64_t begin, int64_t end, opmath_t* zg,
                                          double* row_loss) {
  for (int64_t i = begin; i < end; ++i) row_loss[i] = epilogue_row(a, first + i, zg + i * a.n);
}

// acc[j] += sum over rows of g[r * ld + j], rows in order: the (N,) bias's
// gradient, one chunk's partial of it.
template <typename T>
RELUFROB_ALWAYS_INLINE void add_rows(T* __restrict acc, const T* __restrict g, int64_t rows,
                                     int64_t n, int64_t ld) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < n; ++j) acc[j] += g[r * ld + j];
}

// out (ld_out) = g (ld_g), rows x n, converted to the output type: G handed
// out as a full bias's gradient, or a padded/float block copied to dX.
template <typename scalar_t, typename opmath_t>
RELUFROB_ALWAYS_INLINE void store_rows(scalar_t* __restrict out, int64_t ld_out,
                                       const opmath_t* __restrict g, int64_t ld_g, int64_t rows,
                                       int64_t n) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < n; ++j) out[r * ld_out + j] = static_cast<scalar_t>(g[r * ld_g + j]);
}

}  // namespace relufrob::cpu
