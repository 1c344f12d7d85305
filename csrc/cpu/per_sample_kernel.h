// Per-sample gradient norms and clipped sums on CPU, in the row-blocked pass
// of blocked_kernel.h. Blocks hold whole samples; per block b:
//
//     Z_b = X_b W                 (BLAS or brgemm, block_gemm.h)
//     epilogue over Z_b           (loss partials; G_b in place of Z_b)
//     norm_s for each sample s    (common/per_sample_plan.h: rows, ghost or
//                                  direct), while G_b is still in cache
//     G_s *= c_s                  (clipping)
//     db += G_b's rows            (an (N,) bias; a full bias's db is G_b)
//     dW += X_bᵀ G_b              (the chunk's dW partial)
//
// So the clipped sum costs two GEMMs, one fewer than relufrob::grads, and no
// B x K x N (nor M x N) tensor exists: the extra memory is one block per
// thread, a K x N product for the direct route, and the dW partials.
//
// One row per sample on a problem small enough for direct_kernel.h: its
// fused pass instead (no BLAS call, no block buffers). Its epilogue sums
// each row's ||g||² as it forms G, so the norms alone never write G; the
// norms and the clipping are done on each group of rows before its dW.
#pragma once

#include "../common/per_sample_plan.h"
#include "bias_and_target.h"
#include "block_gemm.h"
#include "blocked_kernel.h"
#include "cpu_isa.h"
#include "direct_kernel.h"
#include "epilogue_rows.h"
#include "row_chunks.h"
#include "row_norms.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace relufrob::cpu {

// sq[s] = ||df_s/dW||² + ||df_s/dbias||² for the `samples` samples of one
// block, whose X rows are x (ld K) and G rows g (ld N).
template <typename Isa, typename T>
void block_squared_norms(const PerSamplePlan& ps, const T* x, const T* g, int64_t samples,
                         T* product, double* sq) {
  const GradsPlan& p = ps.grads;
  const int64_t K = p.K, N = p.N, rows = ps.T;
  const bool bias = p.has_bias();
  if (ps.route == NormRoute::kRows) {
    run_with_isa<Isa>([&]() RELUFROB_INLINE_LAMBDA {
      rows_squared_norms<Isa>(x, K, g, N, samples, K, N, bias, sq);
    });
    return;
  }
  const at::Tensor xs =
      at::from_blob(const_cast<T*>(x), {samples, rows, K},
                    at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value));
  const at::Tensor gs =
      at::from_blob(const_cast<T*>(g), {samples, rows, N},
                    at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value));
  if (ps.route == NormRoute::kGhost) {
    // <X_s X_sᵀ, G_s G_sᵀ>: two T x T Gram matrices per sample.
    const at::Tensor dots = (at::bmm(xs, xs.transpose(1, 2)) * at::bmm(gs, gs.transpose(1, 2)))
                                .sum({1, 2}, false, at::kDouble);
    const double* d = dots.const_data_ptr<double>();
    for (int64_t s = 0; s < samples; ++s) sq[s] = d[s];
  } else {
    at::Tensor out = matrix_view(product, K, N, N);
    for (int64_t s = 0; s < samples; ++s) {
      at::mm_out(out, xs[s].t(), gs[s]);
      run_with_isa<Isa>([&]() RELUFROB_INLINE_LAMBDA { sq[s] = sum_squares<Isa>(product, K * N); });
    }
  }
  if (!bias) return;
  run_with_isa<Isa>([&]() RELUFROB_INLINE_LAMBDA {
    for (int64_t s = 0; s < samples; ++s) {
      const T* gb = g + s * rows * N;
      if (p.bias_kind == BiasKind::kFull) {
        sq[s] += sum_squares<Isa>(gb, rows * N);
      } else {
        sq[s] += sum_of_rows_squared<Isa>(gb, rows, N);
      }
    }
  });
}

// Samples [s_begin, s_end) in blocks of whole samples; returns their sum of R².
template <typename Isa, typename T>
double per_sample_chunk(const PerSamplePlan& ps, const BlockGemm<T>& gemm,
                        const EpilogueArgs<T, T, T>& ep, int64_t s_begin, int64_t s_end,
                        int64_t samples_per_block, T* dw_partial, T* db_partial) {
  const GradsPlan& p = ps.grads;
  const int64_t K = p.K, N = p.N, R = ps.T;
  const T* X = p.X.const_data_ptr<T>();
  T* norms = ps.norms.data_ptr<T>();
  T* db_full = full_bias_grad<T>(p);
  const bool update = dw_partial || db_partial || db_full;

  const Scratch<T> z(samples_per_block * R * N);
  const Scratch<T> xt(gemm.brgemm() && dw_partial ? samples_per_block * R * K : 0);
  const Scratch<T> product(ps.route == NormRoute::kDirect ? K * N : 0);
  std::vector<double> row_loss(samples_per_block * R), sq(samples_per_block);
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(N, 1));

  double loss = 0.0;
  for (int64_t s0 = s_begin; s0 < s_end; s0 += samples_per_block) {
    const int64_t samples = std::min(samples_per_block, s_end - s0);
    const int64_t r0 = s0 * R, rows = samples * R;
    const T* x = X + r0 * K;
    T* g = z.get();
    gemm.xw(rows, x, K, g);
    at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
      run_with_isa<Isa>(
          [&]() RELUFROB_INLINE_LAMBDA { epilogue_rows(ep, r0, begin, end, g, row_loss.data()); });
    });
    for (int64_t i = 0; i < rows; ++i) loss += row_loss[i];

    block_squared_norms<Isa, T>(ps, x, g, samples, product.get(), sq.data());
    for (int64_t s = 0; s < samples; ++s) {
      const T norm = static_cast<T>(std::sqrt(sq[s]));
      norms[s0 + s] = norm;
      if (ps.clip && update) {
        const T c = clip_factor(norm, static_cast<T>(ps.max_norm));
        run_with_isa<Isa>([&]() RELUFROB_INLINE_LAMBDA { scale_values(g + s * R * N, R * N, c); });
      }
    }
    if (db_partial || db_full) {
      run_with_isa<Isa>(
          [&]() RELUFROB_INLINE_LAMBDA { bias_grad_rows(db_partial, db_full, g, N, r0, rows, N); });
    }
    if (dw_partial) gemm.xtg_accumulate(rows, x, K, g, dw_partial, xt.get());
  }
  return loss;
}

// The direct kernel's hook for one-row samples (the rows route): each row's
// norm from ||x_r||² and the epilogue's ||g_r||², then, when clipping, G's
// row scaled by its factor before the kernel sums dW and db from it.
template <typename Isa, typename T>
struct OneRowNorms {
  static constexpr bool kGradNorms = true;
  int64_t K, N;
  bool bias, scale;
  T max_norm;
  T* norms;

  RELUFROB_ALWAYS_INLINE void operator()(int64_t r0, int64_t rows, const T* x, int64_t ldx, T* g,
                                         int64_t ldg, const double* g_sq) const {
    double sq[kDirectGroupRows<Isa>];
    row_sums_of_squares<Isa>(x, ldx, rows, K, sq);
    for (int64_t r = 0; r < rows; ++r) {
      norms[r0 + r] = static_cast<T>(std::sqrt(one_row_squared_norm(sq[r], g_sq[r], bias)));
    }
    if (!scale) return;
    for (int64_t r = 0; r < rows; ++r)
      scale_values(g + r * ldg, N, clip_factor(norms[r0 + r], max_norm));
  }
};

template <typename Isa, typename T>
double direct_per_sample(const PerSamplePlan& ps) {
  const GradsPlan& p = ps.grads;
  const OneRowNorms<Isa, T> hook{p.K,
                                 p.N,
                                 p.has_bias(),
                                 ps.clip && (p.want.dW || p.want.db),
                                 static_cast<T>(ps.max_norm),
                                 ps.norms.data_ptr<T>()};
  return direct_grads<Isa, T, T>(p, hook);
}

// The whole problem: chunks of whole samples, one per thread, as
// blocked_grads splits rows.
template <typename Isa, typename T>
double per_sample_grads(PerSamplePlan& ps) {
  if (ps.route == NormRoute::kRows && use_direct<Isa>(ps.grads)) {
    return direct_per_sample<Isa, T>(ps);
  }
  GradsPlan& p = ps.grads;
  const int64_t K = p.K, N = p.N, R = ps.T;
  BlockGemm<T> gemm{gemm_backend(), p.W.const_data_ptr<T>(), nullptr, K, N};

  int64_t chunks = std::min<int64_t>(at::get_num_threads(), p.M / kMinChunkRows);
  if (p.want.dW && (chunks - 1) * K * N * 4 > p.M * (K + N)) chunks = 1;
  const RowSplit split = split_rows(ps.B, 1, std::max<int64_t>(chunks, 1));
  // Half the grads kernel's block: the pass has no dX or dY to stream, so a
  // smaller block costs nothing measurable (clipped_grads at 1024x256x256 to
  // 8192x512x512 timed the same either way), and the scratch, one block per
  // thread and the dW partials, stays below relufrob.grads' (docs/performance.md).
  const int64_t rows_per_block =
      block_rows(split.rows_per_chunk * R, N, sizeof(T), block_bytes() / 2);
  const int64_t samples_per_block = std::max<int64_t>(1, rows_per_block / R);

  ChunkPartials<T> dw(split.chunks, p.want.dW ? K * N : 0,
                      p.want.dW ? p.dW.data_ptr<T>() : nullptr);
  RowBiasGrad<T, T> db(p, split.chunks);
  c10::SmallVector<T, 64> zero_row;
  auto ep = epilogue_args<T, T>(p, static_cast<T>(2.0), zero_row);
  ep.write_g = true;  // the norms need G even when no gradient is summed

  const double loss = sum_over_chunks(split, [&](int64_t c) {
    return per_sample_chunk<Isa, T>(ps, gemm, ep, split.begin(c, ps.B), split.end(c, ps.B),
                                    samples_per_block, p.want.dW ? dw.of(c) : nullptr, db.of(c));
  });
  db.store(p);
  if (p.want.dW) dw.sum_in_order();
  return loss;
}

}  // namespace relufrob::cpu
