// Large problems: stream over blocks of rows so that no M x N temporary exists.
//
// Per block b:   Z_b = X_b W            (into a block-sized workspace)
//                epilogue over Z_b      (+ bias; loss partials, dY_b, G_b in place
//                                        of Z_b, while Z_b is still in cache;
//                                        db from G_b)
//                dX_b = G_b Wᵀ          (straight into the output rows)
//                dW  += X_bᵀ G_b        (into the chunk's dW partial)
//
// Two schedules share that block step. Usually the rows are cut into one
// chunk per thread, all run in one parallel region, each chunk's GEMMs on
// its own thread (row_chunks.h says why one region). When the extra K x N
// dW partials would be large next to the problem (few rows, wide W), a
// single chunk runs instead and its GEMMs and epilogue use every thread.
// The GEMM backend is BLAS or brgemm tiles (block_gemm.h).
//
// The temporaries are, per chunk, the block workspace and its dW (and (N,)
// bias db) partial
// (chunk 0 writes dW itself for float/double); for brgemm a row-major Wᵀ and
// Xᵀ block; for half/bfloat16 float copies of W and of each X block, and a
// float block of dX.
#pragma once

#include "../common/grads_plan.h"
#include "bias_and_target.h"
#include "block_gemm.h"
#include "cpu_isa.h"
#include "epilogue_rows.h"
#include "row_chunks.h"

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <c10/core/CPUAllocator.h>

#include <algorithm>
#include <type_traits>
#include <vector>

namespace relufrob::cpu {

// A block of Z must stay in L2 between the GEMM that writes it and the
// epilogue that reads it, and have enough rows for the GEMMs to run near
// peak: half the L2 of the core, within 256 KiB-1 MiB (256 KiB where the L2
// is not known). Measured: 256 KiB blocks on Zen 3 (512 KiB L2) ran within
// 1% of three bare GEMMs; on a Xeon with 2 MiB L2, 1 MiB blocks ran 7-9%
// faster than 256 KiB ones at 4096-8192x512x512. The workspaces scale with
// it, one set per thread.
constexpr int64_t kMinBlockBytes = 256 * 1024;
constexpr int64_t kMaxBlockBytes = 1024 * 1024;
constexpr int64_t kMinBlockRows = 32;
// A chunk of fewer rows is not worth a thread (nor its dW partial).
constexpr int64_t kMinChunkRows = 64;

inline int64_t block_bytes() {
  static const int64_t bytes = std::clamp(l2_cache_bytes() / 2, kMinBlockBytes, kMaxBlockBytes);
  return bytes;
}

inline int64_t block_rows(int64_t max_rows, int64_t N, int64_t elem_size, int64_t bytes) {
  const int64_t rows = bytes / std::max<int64_t>(N * elem_size, 1);
  return std::max<int64_t>(std::min(std::max(rows, kMinBlockRows), max_rows), 1);
}

inline RowSplit blocked_split(const GradsPlan& p) {
  int64_t chunks = std::min<int64_t>(at::get_num_threads(), p.M / kMinChunkRows);
  // Each chunk past the first costs a K x N dW partial: worth it while the
  // partials stay small next to the rows' own data (X and Y).
  if (p.want.dW && (chunks - 1) * p.K * p.N * 4 > p.M * (p.K + p.N)) chunks = 1;
  return split_rows(p.M, 1, std::max<int64_t>(chunks, 1));
}

// Scratch from torch's CPU allocator: aligned as every ATen tensor is (BLAS
// results may depend on the alignment of its operands, and a heap-dependent
// alignment would make them vary from call to call).
template <typename T>
struct Scratch {
  c10::DataPtr data;
  explicit Scratch(int64_t size)
      : data(size > 0 ? c10::GetCPUAllocator()->allocate(size * sizeof(T)) : c10::DataPtr()) {}
  T* get() const { return static_cast<T*>(data.get()); }
};

// Rows [row_begin, row_end) in blocks; returns their sum of R².
template <typename Isa, typename scalar_t, typename target_t, typename opmath_t>
double blocked_chunk(const GradsPlan& p, const BlockGemm<opmath_t>& gemm,
                     const EpilogueArgs<target_t, opmath_t, scalar_t>& ep, int64_t row_begin,
                     int64_t row_end, int64_t rows_per_block, opmath_t* dw_partial,
                     opmath_t* db_partial) {
  constexpr bool kNative = std::is_same_v<scalar_t, opmath_t>;
  const int64_t K = p.K, N = p.N;
  const scalar_t* X = p.X.const_data_ptr<scalar_t>();
  scalar_t* dX = p.want.dX ? p.dX2.data_ptr<scalar_t>() : nullptr;
  target_t* db_full = full_bias_grad<target_t>(p);

  // Allocated by the thread that uses them.
  const Scratch<opmath_t> z(rows_per_block * N);
  const Scratch<opmath_t> x_op(kNative ? 0 : rows_per_block * K);
  const Scratch<opmath_t> dx_op(!kNative && dX ? rows_per_block * K : 0);
  const Scratch<opmath_t> xt(gemm.brgemm() && dw_partial ? rows_per_block * K : 0);
  std::vector<double> row_loss(rows_per_block);
  // Rows per epilogue task, when a lone chunk spreads it over the threads.
  const int64_t grain = std::max<int64_t>(1, 16384 / N);

  double loss = 0.0;
  for (int64_t r0 = row_begin; r0 < row_end; r0 += rows_per_block) {
    const int64_t rows = std::min(rows_per_block, row_end - r0);
    const opmath_t* x = nullptr;
    if constexpr (kNative) {
      x = X + r0 * K;
    } else {
      matrix_view(x_op.get(), rows, K, K).copy_(matrix_view(X + r0 * K, rows, K, K));
      x = x_op.get();
    }
    gemm.xw(rows, x, K, z.get());

    at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
      run_with_isa<Isa>([&]() RELUFROB_INLINE_LAMBDA {
        epilogue_rows(ep, r0, begin, end, z.get(), row_loss.data());
      });
    });
    for (int64_t i = 0; i < rows; ++i) loss += row_loss[i];
    if (!ep.write_g) continue;

    const opmath_t* g = z.get();
    if (db_partial || db_full) {
      run_with_isa<Isa>(
          [&]() RELUFROB_INLINE_LAMBDA { bias_grad_rows(db_partial, db_full, g, N, r0, rows, N); });
    }
    if (dX) {
      if constexpr (kNative) {
        gemm.gwt(rows, g, dX + r0 * K, K);
      } else {
        gemm.gwt(rows, g, dx_op.get(), K);
        matrix_view(dX + r0 * K, rows, K, K).copy_(matrix_view(dx_op.get(), rows, K, K));
      }
    }
    if (dw_partial) gemm.xtg_accumulate(rows, x, K, g, dw_partial, xt.get());
  }
  return loss;
}

// Rows [row_begin, row_end) of a bfloat16 problem on native bfloat16 GEMMs
// (cpu_isa.h: native_bf16_gemm). The block step is blocked_chunk's, with
// the GEMMs on bfloat16 operands read in place:
//     Z_b  = X_b W          bfloat16 out, as autograd's Z, widened for the epilogue
//     G_b                   narrowed to bfloat16 for the GEMMs, as autograd's G
//     dX_b = G_b Wᵀ         bfloat16, straight into the output rows
//     dW  += X_bᵀ G_b       through a bfloat16 K x N block product added into
//                           the chunk's float32 partial (BLAS writes its
//                           output's dtype), so the blocks are large
template <typename Isa, typename scalar_t, typename target_t, typename opmath_t>
double blocked_chunk_native_lowp(const GradsPlan& p,
                                 const EpilogueArgs<target_t, opmath_t, scalar_t>& ep,
                                 int64_t row_begin, int64_t row_end, int64_t rows_per_block,
                                 opmath_t* dw_partial, opmath_t* db_partial) {
  const int64_t K = p.K, N = p.N;
  const scalar_t* X = p.X.const_data_ptr<scalar_t>();
  const at::Tensor Wv = matrix_view(p.W.const_data_ptr<scalar_t>(), K, N, N);
  scalar_t* dX = p.want.dX ? p.dX2.data_ptr<scalar_t>() : nullptr;
  target_t* db_full = full_bias_grad<target_t>(p);

  const Scratch<opmath_t> z(rows_per_block * N);
  const Scratch<scalar_t> z_low(rows_per_block * N);
  const Scratch<scalar_t> dw_block(dw_partial ? K * N : 0);
  std::vector<double> row_loss(rows_per_block);
  const int64_t grain = std::max<int64_t>(1, 16384 / N);

  double loss = 0.0;
  for (int64_t r0 = row_begin; r0 < row_end; r0 += rows_per_block) {
    const int64_t rows = std::min(rows_per_block, row_end - r0);
    const at::Tensor x = matrix_view(X + r0 * K, rows, K, K);
    at::Tensor zl = matrix_view(z_low.get(), rows, N, N);
    at::mm_out(zl, x, Wv);
    at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
      run_with_isa<Isa>([&]() RELUFROB_INLINE_LAMBDA {
        store_rows(z.get() + begin * N, N, z_low.get() + begin * N, N, end - begin, N);
        epilogue_rows(ep, r0, begin, end, z.get(), row_loss.data());
        if (ep.write_g)
          store_rows(z_low.get() + begin * N, N, z.get() + begin * N, N, end - begin, N);
      });
    });
    for (int64_t i = 0; i < rows; ++i) loss += row_loss[i];
    if (!ep.write_g) continue;

    if (db_partial || db_full) {
      run_with_isa<Isa>([&]() RELUFROB_INLINE_LAMBDA {
        bias_grad_rows(db_partial, db_full, z.get(), N, r0, rows, N);
      });
    }
    if (dX) {
      at::Tensor out = matrix_view(dX + r0 * K, rows, K, K);
      at::mm_out(out, zl, Wv.t());
    }
    if (dw_partial) {
      at::Tensor block = matrix_view(dw_block.get(), K, N, N);
      at::mm_out(block, x.t(), zl);
      run_with_isa<Isa>([&]() RELUFROB_INLINE_LAMBDA {
        for (int64_t i = 0; i < K * N; ++i)
          dw_partial[i] += static_cast<opmath_t>(dw_block.get()[i]);
      });
    }
  }
  return loss;
}

// Blocks of the native bfloat16 path (bytes of its float32 Z): each block
// adds one K x N product into the dW partial, so blocks are large whatever
// the L2 (measured: 4x faster bfloat16 GEMMs than 256 KiB blocks allowed).
constexpr int64_t kNativeLowpBlockBytes = 1024 * 1024;

// scalar_t: X, W, dX and dW; target_t: Y, bias, dY and db (scalar_t, or
// float under a float16/bfloat16 scalar_t).
template <typename Isa, typename scalar_t, typename target_t>
double blocked_grads(const GradsPlan& p) {
  using opmath_t = at::opmath_type<scalar_t>;
  constexpr bool kNative = std::is_same_v<scalar_t, opmath_t>;
  const auto op_dtype = c10::CppTypeToScalarType<opmath_t>::value;
  const int64_t M = p.M, K = p.K, N = p.N;

  const bool native_lowp = std::is_same_v<scalar_t, at::BFloat16> && native_bf16_gemm();
  const at::Tensor W_op = kNative || native_lowp ? p.W : p.W.to(op_dtype);
  BlockGemm<opmath_t> gemm{gemm_backend(), static_cast<const opmath_t*>(W_op.const_data_ptr()),
                           nullptr, K, N};
  at::Tensor Wt;
  if (gemm.brgemm() && p.want.dX && !native_lowp) {
    Wt = W_op.t().contiguous();
    gemm.Wt = Wt.const_data_ptr<opmath_t>();
  }

  const RowSplit split = blocked_split(p);
  const int64_t rows_per_block = block_rows(split.rows_per_chunk, N, sizeof(opmath_t),
                                            native_lowp ? kNativeLowpBlockBytes : block_bytes());
  opmath_t* dw_out = nullptr;
  if constexpr (kNative) {
    if (p.want.dW) dw_out = p.dW.data_ptr<scalar_t>();
  }
  ChunkPartials<opmath_t> dw(split.chunks, p.want.dW ? K * N : 0, dw_out);
  RowBiasGrad<target_t, opmath_t> db(p, split.chunks);
  c10::SmallVector<target_t, 64> zero_row;
  const auto ep =
      epilogue_args<target_t, scalar_t>(p, static_cast<opmath_t>(2.0 * p.scale), zero_row);

  const double loss = sum_over_chunks(split, [&](int64_t c) {
    const int64_t begin = split.begin(c, M), end = split.end(c, M);
    opmath_t* dw_c = p.want.dW ? dw.of(c) : nullptr;
    if constexpr (!kNative) {
      if (native_lowp)
        return blocked_chunk_native_lowp<Isa, scalar_t, target_t>(p, ep, begin, end, rows_per_block,
                                                                  dw_c, db.of(c));
    }
    return blocked_chunk<Isa, scalar_t, target_t>(p, gemm, ep, begin, end, rows_per_block, dw_c,
                                                  db.of(c));
  });
  db.store(p);
  if (p.want.dW) {
    const opmath_t* acc = dw.sum_in_order();
    if (acc != dw_out) p.dW.copy_(matrix_view(acc, K, N, N));
  }
  return loss;
}

}  // namespace relufrob::cpu
