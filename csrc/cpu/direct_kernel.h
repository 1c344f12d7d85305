// Small problems (10x4x4 up to a few hundred K and N): one fused pass over
// panels of rows, no BLAS calls.
//
// For small matrices the three BLAS calls cost more in set-up than in
// arithmetic. Here each panel of Isa::kPanelRows rows does, with W resident
// in cache:
//     z    = x W          (register-blocked: rows x vectors of columns)
//     epilogue on z       (G in place, dY, loss partials)
//     dX   = G Wᵀ         (same register blocking, against a transposed W)
//     dW_c += xᵀ G        (into the chunk's own dW partial)
// The register blocking comes from the ISA's traits (cpu_isa.h): blocks
// sized for AVX-512's 32 registers spill badly in AVX2's 16. Rows are split
// into one chunk per thread (row_chunks.h). Every product is formed, zeros
// included, so NaN/Inf propagate exactly as through BLAS.
#pragma once

#include "../common/grads_plan.h"
#include "bias_and_target.h"
#include "cpu_isa.h"
#include "epilogue_rows.h"
#include "row_chunks.h"
#include "simd.h"
#include "transpose.h"

#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <c10/util/SmallVector.h>

#include <algorithm>
#include <type_traits>

namespace relufrob::cpu {

inline int64_t round_up(int64_t value, int64_t multiple) {
  return (value + multiple - 1) / multiple * multiple;
}

// One register tile: c[i][j0, j0 + V vectors) (+)= sum_d A(i, d) b[d][...]
// for i < R, where A(i, d) = a[i * a_row + d * a_depth]. R x V accumulators
// stay in registers, so each loaded vector of b and each broadcast element
// of A feeds several FMAs. The two strides let one kernel serve xW and GWᵀ
// (A row-major) as well as xᵀG (A read transposed).
template <typename Isa, int R, int V, bool kAccumulate, typename T>
RELUFROB_ALWAYS_INLINE void gemm_tile(const T* a, int64_t a_row, int64_t a_depth, int64_t depth,
                                      const T* b, int64_t ldb, int64_t j0, T* c, int64_t ldc) {
  constexpr int64_t kCols = kVecLanes<Isa, T>;
  Vec<Isa, T> acc[R][V];
  for (int i = 0; i < R; ++i)
    for (int v = 0; v < V; ++v) {
      if constexpr (kAccumulate) {
        load_vec(acc[i][v], c + i * ldc + j0 + v * kCols);
      } else {
        acc[i][v] = Vec<Isa, T>{};
      }
    }
  for (int64_t d = 0; d < depth; ++d) {
    Vec<Isa, T> b_d[V];
    for (int v = 0; v < V; ++v) load_vec(b_d[v], b + d * ldb + j0 + v * kCols);
    for (int i = 0; i < R; ++i) {
      const T a_id = a[i * a_row + d * a_depth];
      for (int v = 0; v < V; ++v) acc[i][v] += a_id * b_d[v];
    }
  }
  for (int i = 0; i < R; ++i)
    for (int v = 0; v < V; ++v) store_vec(c + i * ldc + j0 + v * kCols, acc[i][v]);
}

// All column tiles of R rows; cols is a multiple of the vector width and b
// is zero-padded to it.
template <typename Isa, int R, bool kAccumulate, typename T>
RELUFROB_ALWAYS_INLINE void gemm_rows(const T* a, int64_t a_row, int64_t a_depth, int64_t depth,
                                      const T* b, int64_t ldb, int64_t cols, T* c, int64_t ldc) {
  constexpr int64_t kCols = kVecLanes<Isa, T>;
  constexpr int kVecs = Isa::kMatmulVecs;
  int64_t j0 = 0;
  for (; j0 + kVecs * kCols <= cols; j0 += kVecs * kCols)
    gemm_tile<Isa, R, kVecs, kAccumulate>(a, a_row, a_depth, depth, b, ldb, j0, c, ldc);
  for (; j0 < cols; j0 += kCols)
    gemm_tile<Isa, R, 1, kAccumulate>(a, a_row, a_depth, depth, b, ldb, j0, c, ldc);
}

// The last rows % kPanelRows rows, with a tile of exactly that height.
template <typename Isa, bool kAccumulate, typename T, int R = Isa::kPanelRows - 1>
RELUFROB_ALWAYS_INLINE void gemm_tail_rows(int64_t rows, const T* a, int64_t a_row, int64_t a_depth,
                                           int64_t depth, const T* b, int64_t ldb, int64_t cols,
                                           T* c, int64_t ldc) {
  if constexpr (R > 0) {
    if (rows == R)
      return gemm_rows<Isa, R, kAccumulate>(a, a_row, a_depth, depth, b, ldb, cols, c, ldc);
    gemm_tail_rows<Isa, kAccumulate, T, R - 1>(rows, a, a_row, a_depth, depth, b, ldb, cols, c,
                                               ldc);
  }
}

// c (rows x cols) (+)= A b, with A(i, d) = a[i * a_row + d * a_depth], in
// tiles of kPanelRows rows.
template <typename Isa, bool kAccumulate, typename T>
RELUFROB_ALWAYS_INLINE void small_gemm(int64_t rows, const T* a, int64_t a_row, int64_t a_depth,
                                       int64_t depth, const T* b, int64_t ldb, int64_t cols, T* c,
                                       int64_t ldc) {
  constexpr int kRows = Isa::kPanelRows;
  int64_t i0 = 0;
  for (; i0 + kRows <= rows; i0 += kRows)
    gemm_rows<Isa, kRows, kAccumulate>(a + i0 * a_row, a_row, a_depth, depth, b, ldb, cols,
                                       c + i0 * ldc, ldc);
  if (i0 < rows)
    gemm_tail_rows<Isa, kAccumulate>(rows - i0, a + i0 * a_row, a_row, a_depth, depth, b, ldb, cols,
                                     c + i0 * ldc, ldc);
}

// W in the math type, zero-padded to whole vectors: w (K x Np) for z = xW and
// wt (N x Kp) for dX. When W already is that (float/double with N a multiple
// of the vector width) w points at W itself and nothing is copied.
template <typename opmath_t>
struct PaddedWeights {
  int64_t Kp, Np;
  const opmath_t* w = nullptr;  // W itself, or w_storage
  // Inline storage: a tiny problem (the 10x4x4 case) allocates nothing on the
  // heap, which at that size costs as much as the arithmetic.
  c10::SmallVector<opmath_t, 256> w_storage, wt;

  PaddedWeights() = default;
  // `w` may point into this object's own inline storage: never copy or move.
  PaddedWeights(const PaddedWeights&) = delete;
  PaddedWeights& operator=(const PaddedWeights&) = delete;
};

template <typename scalar_t, typename opmath_t>
RELUFROB_ALWAYS_INLINE void fill_padded_weights(const scalar_t* W, int64_t K, int64_t N,
                                                PaddedWeights<opmath_t>& pw) {
  if (!pw.w_storage.empty()) {
    for (int64_t k = 0; k < K; ++k)
      for (int64_t j = 0; j < N; ++j)
        pw.w_storage[k * pw.Np + j] = static_cast<opmath_t>(W[k * N + j]);
  }
  if (!pw.wt.empty()) transpose_tiled(K, N, pw.w, pw.Np, pw.wt.data(), pw.Kp);
}

template <typename Isa, typename scalar_t, typename opmath_t>
void pad_weights(const scalar_t* W, int64_t K, int64_t N, bool need_wt,
                 PaddedWeights<opmath_t>& pw) {
  pw.Kp = round_up(std::max<int64_t>(K, 1), kVecLanes<Isa, opmath_t>);
  pw.Np = round_up(std::max<int64_t>(N, 1), kVecLanes<Isa, opmath_t>);
  if constexpr (std::is_same_v<scalar_t, opmath_t>) {
    if (pw.Np == N) pw.w = W;
  }
  if (!pw.w) {
    pw.w_storage.assign(K * pw.Np, opmath_t(0));
    pw.w = pw.w_storage.data();
  }
  if (need_wt) pw.wt.assign(N * pw.Kp, opmath_t(0));
  run_with_isa<Isa>([&]() RELUFROB_INLINE_LAMBDA { fill_padded_weights(W, K, N, pw); });
}

// dW from the padded K x Np accumulator, cast to the output dtype.
template <typename scalar_t, typename opmath_t>
void unpad_dw(const opmath_t* acc, int64_t K, int64_t N, int64_t Np, scalar_t* dW) {
  for (int64_t k = 0; k < K; ++k)
    for (int64_t j = 0; j < N; ++j) dW[k * N + j] = static_cast<scalar_t>(acc[k * Np + j]);
}

// Rows per group of the fused pass: a hook is handed at most this many.
template <typename Isa>
constexpr int64_t kDirectGroupRows = Isa::kPanelRows * Isa::kGroupPanels;

// What runs on each group's G between the epilogue and the gradients: here
// nothing; the per-sample kernel's norms and clipping (per_sample_kernel.h).
// A hook with kGradNorms is also handed each row's ||G||², summed by the
// epilogue (epilogue_rows.h), and runs even when G is not written.
struct NoRowHook {
  static constexpr bool kGradNorms = false;
  template <typename opmath_t>
  RELUFROB_ALWAYS_INLINE void operator()(int64_t, int64_t, const opmath_t*, int64_t, opmath_t*,
                                         int64_t, const double*) const {}
};

// Rows [row_begin, row_end) of the problem, in groups of kGroupRows: writes
// only those rows of dX, dY and a full bias's db, the chunk's own dW and
// (N,)-bias db partials (nullable) and returns its sum of R². dW is updated
// once per group, from the group's G still in cache, rather than once per
// tile of rows. hook(r0, rows, x, ldx, g, ldg, g_sq) sees each group's x and
// G before anything reads G (a kGradNorms hook also when G is not formed,
// and with the rows' ||G||² in g_sq).
template <typename Isa, typename scalar_t, typename target_t, typename opmath_t,
          typename RowHook = NoRowHook>
RELUFROB_ALWAYS_INLINE double direct_chunk(const GradsPlan& p, const PaddedWeights<opmath_t>& pw,
                                           const EpilogueArgs<target_t, opmath_t, scalar_t>& ep,
                                           int64_t row_begin, int64_t row_end, opmath_t* dw_partial,
                                           opmath_t* db_partial, const RowHook& hook = {}) {
  constexpr int64_t kGroupRows = kDirectGroupRows<Isa>;
  const int64_t K = p.K, N = p.N, Kp = pw.Kp, Np = pw.Np;
  const scalar_t* X = p.X.const_data_ptr<scalar_t>();
  scalar_t* dX = p.want.dX ? p.dX2.data_ptr<scalar_t>() : nullptr;
  target_t* db_full = full_bias_grad<target_t>(p);

  // A whole group of float/double rows with K a multiple of the vector width
  // is read from X and its dX written to the output in place; anything else
  // goes through the padded buffers, whose missing rows are zeros in x and G
  // (they add exact zeros to dW and nothing else is written for them).
  constexpr bool kNative = std::is_same_v<scalar_t, opmath_t>;
  const bool rows_in_place = kNative && Kp == K;

  c10::SmallVector<opmath_t, 512> x(kGroupRows * Kp), z(kGroupRows * Np),
      dx(p.want.dX ? kGroupRows * Kp : 0);
  double g_sq[RowHook::kGradNorms ? kGroupRows : 1];
  double loss = 0.0;
  for (int64_t r0 = row_begin; r0 < row_end; r0 += kGroupRows) {
    const int64_t rows = std::min(kGroupRows, row_end - r0);
    const bool in_place = rows_in_place && rows == kGroupRows;
    // Short groups are computed on whole tiles of rows.
    const int64_t tile_rows = round_up(rows, Isa::kPanelRows);
    const opmath_t* xp = x.data();
    int64_t ldx = Kp;
    if constexpr (kNative) {
      if (in_place) {
        xp = X + r0 * K;
        ldx = K;
      }
    }
    if (!in_place) {
      std::fill(x.begin(), x.end(), opmath_t(0));
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t k = 0; k < K; ++k) x[r * Kp + k] = static_cast<opmath_t>(X[(r0 + r) * K + k]);
    }

    small_gemm<Isa, false>(tile_rows, xp, ldx, 1, K, pw.w, Np, Np, z.data(), Np);
    for (int64_t r = 0; r < rows; ++r)
      loss += epilogue_row(ep, r0 + r, z.data() + r * Np, RowHook::kGradNorms ? g_sq + r : nullptr);
    if constexpr (RowHook::kGradNorms) hook(r0, rows, xp, ldx, z.data(), Np, g_sq);
    if (!ep.write_g) continue;
    std::fill(z.begin() + rows * Np, z.end(), opmath_t(0));
    if constexpr (!RowHook::kGradNorms) hook(r0, rows, xp, ldx, z.data(), Np, g_sq);
    bias_grad_rows(db_partial, db_full, z.data(), Np, r0, rows, N);
    if (dX) {
      opmath_t* out = dx.data();
      int64_t ld_out = Kp;
      if constexpr (kNative) {
        if (in_place) {
          out = dX + r0 * K;
          ld_out = K;
        }
      }
      small_gemm<Isa, false>(tile_rows, z.data(), Np, 1, N, pw.wt.data(), Kp, Kp, out, ld_out);
      if (!in_place) store_rows(dX + r0 * K, K, dx.data(), Kp, rows, K);
    }
    // dW (K x Np) += xᵀ G over the group's tile rows: A(k, r) = x[r][k].
    if (dw_partial)
      small_gemm<Isa, true>(K, xp, 1, ldx, tile_rows, z.data(), Np, Np, dw_partial, Np);
  }
  return loss;
}

// One chunk per thread, but only when each has enough work to pay for the
// fork/join (about 64K multiply-adds per GEMM).
template <typename Isa>
RowSplit direct_split(const GradsPlan& p) {
  constexpr int64_t kRows = Isa::kPanelRows;
  const int64_t panel_macs = std::max<int64_t>(kRows * p.K * p.N, 1);
  const int64_t min_panels = std::max<int64_t>(1, (int64_t(1) << 16) / panel_macs);
  const int64_t panels = (p.M + kRows - 1) / kRows;
  const int64_t chunks = std::min<int64_t>(at::get_num_threads(), panels / min_panels);
  return split_rows(p.M, kRows, std::max<int64_t>(chunks, 1));
}

// The fused small kernel beats three BLAS calls while W (and its transpose)
// stay in L2 and the problem is small enough that BLAS set-up dominates; how
// small depends on the ISA (cpu_isa.h).
constexpr int64_t kDirectMaxDim = 256;

template <typename Isa>
bool use_direct(const GradsPlan& p) {
  return p.M * p.K * p.N <= Isa::kDirectMaxMacs && p.K <= kDirectMaxDim && p.N <= kDirectMaxDim;
}

// scalar_t: X, W, dX and dW; target_t: Y, bias, dY and db (scalar_t, or
// float under a float16/bfloat16 scalar_t).
template <typename Isa, typename scalar_t, typename target_t, typename RowHook = NoRowHook>
double direct_grads(const GradsPlan& p, const RowHook& hook = {}) {
  using opmath_t = at::opmath_type<scalar_t>;
  const int64_t K = p.K, N = p.N;
  PaddedWeights<opmath_t> pw;
  pad_weights<Isa>(p.W.const_data_ptr<scalar_t>(), K, N, p.want.dX, pw);
  c10::SmallVector<target_t, 64> zero_row;
  auto ep = epilogue_args<target_t, scalar_t>(p, static_cast<opmath_t>(2.0 * p.scale), zero_row);
  const RowSplit split = direct_split<Isa>(p);

  // For float/double with no column padding, chunk 0's partial is the dW
  // output itself.
  opmath_t* dw_out = nullptr;
  if constexpr (std::is_same_v<scalar_t, opmath_t>) {
    if (p.want.dW && pw.Np == N) dw_out = p.dW.data_ptr<scalar_t>();
  }
  ChunkPartials<opmath_t> dw(split.chunks, p.want.dW ? K * pw.Np : 0, dw_out);
  RowBiasGrad<target_t, opmath_t> db(p, split.chunks);

  const double loss = sum_over_chunks(split, [&](int64_t c) {
    opmath_t* dw_c = p.want.dW ? dw.of(c) : nullptr;
    opmath_t* db_c = db.of(c);
    return run_with_isa<Isa>([&]() RELUFROB_INLINE_LAMBDA {
      return direct_chunk<Isa, scalar_t, target_t>(p, pw, ep, split.begin(c, p.M),
                                                   split.end(c, p.M), dw_c, db_c, hook);
    });
  });
  db.store(p);
  if (p.want.dW) {
    const opmath_t* acc = dw.sum_in_order();
    if (acc != dw_out) unpad_dw(acc, K, N, pw.Np, p.dW.data_ptr<scalar_t>());
  }
  return loss;
}

}  // namespace relufrob::cpu
