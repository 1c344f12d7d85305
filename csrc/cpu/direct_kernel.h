// Small problems (10x4x4 up to a few hundred K and N): one fused pass over
// panels of rows, no BLAS calls.
//
// For small matrices the three BLAS calls cost more in set-up than in
// arithmetic, and a BLAS kernel tuned for AVX2 leaves AVX-512 units half idle.
// Here each panel of kRows rows does, with W resident in cache:
//     z    = x W          (register-blocked: kRows x one vector of columns)
//     epilogue on z       (G in place, dY, loss partials)
//     dX   = G Wᵀ         (same register blocking, against a transposed W)
//     dW_c += xᵀ G        (into the chunk's own dW partial)
// Rows are split into a fixed number of contiguous chunks, one per thread, and
// the chunk partials of dW and the loss are added in chunk order, so results
// are bitwise repeatable for a given thread count. Every product is formed,
// zeros included, so NaN/Inf propagate exactly as through BLAS.
#pragma once

#include "../common/grads_plan.h"
#include "epilogue_rows.h"

#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <type_traits>
#include <c10/util/SmallVector.h>

namespace relufrob::cpu {

constexpr int kRows = 8;  // rows per panel, the register-blocking height

// One 512-bit vector of the math type, as a GCC/Clang vector extension so the
// register blocking below is explicit rather than left to the auto-vectoriser
// (which here vectorised the wrong loops). Under the baseline-x86 clone the
// compiler splits it into narrower registers; the AVX-512 clone uses zmm.
template <typename T>
using Vec __attribute__((vector_size(64))) = T;

template <typename T>
constexpr int64_t kCols = sizeof(Vec<T>) / sizeof(T);

// Unaligned moves; by reference, since passing a 512-bit vector by value
// would depend on the (per-clone) vector ABI.
template <typename T, typename V>
RELUFROB_ALWAYS_INLINE void load_vec(V& v, const T* p) {
  __builtin_memcpy(&v, p, sizeof(v));
}

template <typename T, typename V>
RELUFROB_ALWAYS_INLINE void store_vec(T* p, const V& v) {
  __builtin_memcpy(p, &v, sizeof(v));
}

inline int64_t round_up(int64_t value, int64_t multiple) {
  return (value + multiple - 1) / multiple * multiple;
}

// c[r][j0, j0 + V vectors) = sum_k a[r][k] * b[k][...] for the kRows rows of
// a panel: kRows x V accumulators in registers, so each loaded element of b
// and each broadcast element of a feeds several FMAs.
template <int V, typename T>
RELUFROB_ALWAYS_INLINE void panel_matmul_block(const T* a, int64_t lda, int64_t depth,
                                               const T* b, int64_t ldb, int64_t j0,
                                               T* c, int64_t ldc) {
  Vec<T> acc[kRows][V] = {};
  for (int64_t k = 0; k < depth; ++k) {
    Vec<T> b_k[V];
    for (int v = 0; v < V; ++v) load_vec(b_k[v], b + k * ldb + j0 + v * kCols<T>);
    for (int r = 0; r < kRows; ++r) {
      const T a_rk = a[r * lda + k];
      for (int v = 0; v < V; ++v) acc[r][v] += a_rk * b_k[v];
    }
  }
  for (int r = 0; r < kRows; ++r)
    for (int v = 0; v < V; ++v) store_vec(c + r * ldc + j0 + v * kCols<T>, acc[r][v]);
}

// c[r][0, cols) = sum_k a[r][k] * b[k][0, cols) for the kRows rows of a panel;
// cols is a multiple of kCols<T> and b is zero-padded to it. Two vectors of
// columns at a time, one for an odd one out.
template <typename T>
RELUFROB_ALWAYS_INLINE void panel_matmul(const T* a, int64_t lda, int64_t depth,
                                         const T* b, int64_t ldb, int64_t cols,
                                         T* c, int64_t ldc) {
  int64_t j0 = 0;
  for (; j0 + 2 * kCols<T> <= cols; j0 += 2 * kCols<T>)
    panel_matmul_block<2>(a, lda, depth, b, ldb, j0, c, ldc);
  if (j0 < cols) panel_matmul_block<1>(a, lda, depth, b, ldb, j0, c, ldc);
}

// dw[k][j0, j0 + V vectors) += sum_r a[r][k] * g[r][...] over the panel's rows,
// with G held in registers across all k.
template <int V, typename T>
RELUFROB_ALWAYS_INLINE void panel_rank_update_block(const T* a, int64_t lda, int64_t depth,
                                                    const T* g, int64_t ldg, int64_t j0,
                                                    T* dw, int64_t ldw) {
  Vec<T> g_r[kRows][V];
  for (int r = 0; r < kRows; ++r)
    for (int v = 0; v < V; ++v) load_vec(g_r[r][v], g + r * ldg + j0 + v * kCols<T>);
  for (int64_t k = 0; k < depth; ++k) {
    // Two independent partial sums per vector: one chain of kRows dependent
    // FMAs per k would make this loop latency-bound.
    T* dw_k = dw + k * ldw + j0;
    Vec<T> even[V], odd[V];
    for (int v = 0; v < V; ++v) {
      load_vec(even[v], dw_k + v * kCols<T>);
      odd[v] = a[lda + k] * g_r[1][v];
    }
    for (int r = 0; r < kRows; r += 2) {
      const T a_even = a[r * lda + k];
      for (int v = 0; v < V; ++v) even[v] += a_even * g_r[r][v];
      if (r > 0) {
        const T a_odd = a[(r + 1) * lda + k];
        for (int v = 0; v < V; ++v) odd[v] += a_odd * g_r[r + 1][v];
      }
    }
    for (int v = 0; v < V; ++v) store_vec(dw_k + v * kCols<T>, even[v] + odd[v]);
  }
}

// dw[k][0, cols) += sum_r a[r][k] * g[r][0, cols) over the panel's rows.
template <typename T>
RELUFROB_ALWAYS_INLINE void panel_rank_update(const T* a, int64_t lda, int64_t depth,
                                              const T* g, int64_t ldg, int64_t cols,
                                              T* dw, int64_t ldw) {
  static_assert(kRows % 2 == 0);
  int64_t j0 = 0;
  for (; j0 + 2 * kCols<T> <= cols; j0 += 2 * kCols<T>)
    panel_rank_update_block<2>(a, lda, depth, g, ldg, j0, dw, ldw);
  if (j0 < cols) panel_rank_update_block<1>(a, lda, depth, g, ldg, j0, dw, ldw);
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
RELUFROB_CPU_CLONES void fill_padded_weights(const scalar_t* W, int64_t K, int64_t N,
                                             PaddedWeights<opmath_t>& pw) {
  if (!pw.w_storage.empty()) {
    for (int64_t k = 0; k < K; ++k)
      for (int64_t j = 0; j < N; ++j)
        pw.w_storage[k * pw.Np + j] = static_cast<opmath_t>(W[k * N + j]);
  }
  if (pw.wt.empty()) return;
  // Transposed in square tiles so both sides stay within a few cache lines.
  constexpr int64_t kTile = 16;
  for (int64_t k0 = 0; k0 < K; k0 += kTile)
    for (int64_t j0 = 0; j0 < N; j0 += kTile)
      for (int64_t j = j0; j < std::min(N, j0 + kTile); ++j)
        for (int64_t k = k0; k < std::min(K, k0 + kTile); ++k)
          pw.wt[j * pw.Kp + k] = pw.w[k * pw.Np + j];
}

template <typename scalar_t, typename opmath_t>
void pad_weights(const scalar_t* W, int64_t K, int64_t N, bool need_wt,
                 PaddedWeights<opmath_t>& pw) {
  pw.Kp = round_up(std::max<int64_t>(K, 1), kCols<opmath_t>);
  pw.Np = round_up(std::max<int64_t>(N, 1), kCols<opmath_t>);
  if constexpr (std::is_same_v<scalar_t, opmath_t>) {
    if (pw.Np == N) pw.w = W;
  }
  if (!pw.w) {
    pw.w_storage.assign(K * pw.Np, opmath_t(0));
    pw.w = pw.w_storage.data();
  }
  if (need_wt) pw.wt.assign(N * pw.Kp, opmath_t(0));
  fill_padded_weights(W, K, N, pw);
}

// acc += each of `count` partials of `size` elements, in order: contiguous
// loops that vectorise, and a fixed summation order.
template <typename opmath_t>
RELUFROB_CPU_CLONES void add_partials(opmath_t* acc, const opmath_t* parts,
                                      int64_t count, int64_t size) {
  for (int64_t c = 0; c < count; ++c) {
    const opmath_t* part = parts + c * size;
    for (int64_t i = 0; i < size; ++i) acc[i] += part[i];
  }
}

// dW from the padded K x Np accumulator, cast to the output dtype.
template <typename scalar_t, typename opmath_t>
RELUFROB_CPU_CLONES void unpad_dw(const opmath_t* acc, int64_t K, int64_t N, int64_t Np,
                                  scalar_t* dW) {
  for (int64_t k = 0; k < K; ++k)
    for (int64_t j = 0; j < N; ++j) dW[k * N + j] = static_cast<scalar_t>(acc[k * Np + j]);
}

// Everything one chunk of rows needs; the chunk writes only its own rows of
// dX/dY, its own dW partial and its own loss partial.
template <typename scalar_t, typename opmath_t>
struct DirectArgs {
  const GradsPlan* p;
  const PaddedWeights<opmath_t>* pw;
  opmath_t two_scale;
};

template <typename scalar_t, typename opmath_t>
RELUFROB_CPU_CLONES double direct_chunk(const DirectArgs<scalar_t, opmath_t>& args,
                                        int64_t row_begin, int64_t row_end,
                                        opmath_t* dw_partial) {
  const GradsPlan& p = *args.p;
  const auto& pw = *args.pw;
  const int64_t K = p.K, N = p.N, Kp = pw.Kp, Np = pw.Np;
  const scalar_t* X = p.X.const_data_ptr<scalar_t>();
  const scalar_t* Y = p.Y.const_data_ptr<scalar_t>();
  scalar_t* dX = p.want.dX ? p.dX2.data_ptr<scalar_t>() : nullptr;
  scalar_t* dY = p.want.dY ? p.dY2.data_ptr<scalar_t>() : nullptr;
  const bool need_g = p.want.any_gemm_grad();

  // A full panel of float/double rows with K a multiple of the vector width is
  // read from X and its dX written to the output in place; anything else goes
  // through the padded panel buffers.
  constexpr bool kNative = std::is_same_v<scalar_t, opmath_t>;
  const bool rows_in_place = kNative && Kp == K;

  c10::SmallVector<opmath_t, 512> x(kRows * Kp), z(kRows * Np), dx(p.want.dX ? kRows * Kp : 0);
  double loss = 0.0;
  for (int64_t r0 = row_begin; r0 < row_end; r0 += kRows) {
    const int rows = static_cast<int>(std::min<int64_t>(kRows, row_end - r0));
    const bool in_place = rows_in_place && rows == kRows;
    const opmath_t* xp = x.data();
    if constexpr (kNative) {
      if (in_place) xp = X + r0 * K;
    }
    if (!in_place) {
      // Missing rows of a short panel are zeros in x and in G, so they add
      // exact zeros to dW and nothing else is written for them.
      std::fill(x.begin(), x.end(), opmath_t(0));
      for (int r = 0; r < rows; ++r)
        for (int64_t k = 0; k < K; ++k)
          x[r * Kp + k] = static_cast<opmath_t>(X[(r0 + r) * K + k]);
    }

    panel_matmul(xp, Kp, K, pw.w, Np, Np, z.data(), Np);
    for (int r = 0; r < rows; ++r) {
      loss += epilogue_row(z.data() + r * Np, Y + (r0 + r) * N, N, args.two_scale,
                           need_g, dY ? dY + (r0 + r) * N : nullptr);
    }
    if (!need_g) continue;
    std::fill(z.begin() + rows * Np, z.end(), opmath_t(0));
    if (dX) {
      if constexpr (kNative) {
        if (in_place) panel_matmul(z.data(), Np, N, pw.wt.data(), Kp, Kp, dX + r0 * K, K);
      }
      if (!in_place) {
        panel_matmul(z.data(), Np, N, pw.wt.data(), Kp, Kp, dx.data(), Kp);
        for (int r = 0; r < rows; ++r)
          for (int64_t k = 0; k < K; ++k)
            dX[(r0 + r) * K + k] = static_cast<scalar_t>(dx[r * Kp + k]);
      }
    }
    if (dw_partial) panel_rank_update(xp, Kp, K, z.data(), Np, Np, dw_partial, Np);
  }
  return loss;
}

template <typename scalar_t>
double direct_grads(const GradsPlan& p) {
  using opmath_t = at::opmath_type<scalar_t>;
  const int64_t M = p.M, K = p.K, N = p.N;
  PaddedWeights<opmath_t> pw;
  pad_weights(p.W.const_data_ptr<scalar_t>(), K, N, p.want.dX, pw);
  const DirectArgs<scalar_t, opmath_t> args{&p, &pw, static_cast<opmath_t>(2.0 * p.scale)};

  // One chunk per thread, but only when each has enough work to pay for the
  // fork/join (about 64K multiply-adds per GEMM).
  const int64_t panels = (M + kRows - 1) / kRows;
  const int64_t panels_per_chunk_min = std::max<int64_t>(1, (1 << 16) / std::max<int64_t>(kRows * K * N, 1));
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), panels / panels_per_chunk_min));
  const int64_t rows_per_chunk = (panels + chunks - 1) / chunks * kRows;

  // Each chunk accumulates dW into its own K x Np partial. For float/double
  // with no column padding, chunk 0's partial is the dW output itself.
  const int64_t dw_size = K * pw.Np;
  opmath_t* dw_first = nullptr;
  if constexpr (std::is_same_v<scalar_t, opmath_t>) {
    if (p.want.dW && pw.Np == N) {
      dw_first = p.dW.data_ptr<scalar_t>();
      std::fill(dw_first, dw_first + dw_size, opmath_t(0));
    }
  }
  const int64_t own_partials = p.want.dW ? chunks - (dw_first ? 1 : 0) : 0;
  c10::SmallVector<opmath_t, 256> dw_partials(own_partials * dw_size, opmath_t(0));
  if (p.want.dW && !dw_first) dw_first = dw_partials.data();
  const auto dw_of_chunk = [&](int64_t c) -> opmath_t* {
    if (!p.want.dW) return nullptr;
    if (c == 0) return dw_first;
    // Later chunks take the owned partials, after chunk 0's if it has one.
    const int64_t slot = dw_first == dw_partials.data() ? c : c - 1;
    return dw_partials.data() + slot * dw_size;
  };

  c10::SmallVector<double, 8> chunk_loss(chunks, 0.0);
  const auto run_chunk = [&](int64_t c) {
    const int64_t begin = std::min(M, c * rows_per_chunk);
    const int64_t end = std::min(M, begin + rows_per_chunk);
    chunk_loss[c] = direct_chunk(args, begin, end, dw_of_chunk(c));
  };
  if (chunks == 1) {
    run_chunk(0);
  } else {
    at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
      for (int64_t c = begin; c < end; ++c) run_chunk(c);
    });
  }

  double loss = 0.0;
  for (int64_t c = 0; c < chunks; ++c) loss += chunk_loss[c];
  if (p.want.dW && chunks > 1) add_partials(dw_first, dw_of_chunk(1), chunks - 1, dw_size);
  if (p.want.dW && dw_first == dw_partials.data()) {
    unpad_dw(dw_first, K, N, pw.Np, p.dW.data_ptr<scalar_t>());
  }
  return loss;
}

}  // namespace relufrob::cpu
