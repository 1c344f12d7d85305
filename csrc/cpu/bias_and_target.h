// What the general form adds to both CPU kernels: the epilogue's view of Y
// and the bias, and the bias gradient's per-chunk partials.
#pragma once

#include "../common/grads_plan.h"
#include "epilogue_rows.h"
#include "row_chunks.h"

#include <c10/util/SmallVector.h>

namespace relufrob::cpu {

// The epilogue's inputs and dY output for plan p. A missing Y is read as a
// row of zeros (kept in `zero_row`, which must outlive the result) repeated
// for every row: a - 0 is bitwise a, so the zero target needs no kernel of
// its own.
// scalar_t is the target's type, gemm_t X's (EpilogueArgs).
template <typename scalar_t, typename gemm_t, typename opmath_t>
EpilogueArgs<scalar_t, opmath_t, gemm_t> epilogue_args(const GradsPlan& p, opmath_t two_scale,
                                                       c10::SmallVectorImpl<scalar_t>& zero_row) {
  EpilogueArgs<scalar_t, opmath_t, gemm_t> a;
  a.n = p.N;
  if (p.has_y()) {
    a.y = p.Y.const_data_ptr<scalar_t>();
    a.y_ld = p.N;
  } else {
    zero_row.assign(p.N, scalar_t(0));
    a.y = zero_row.data();
  }
  if (p.has_bias()) {
    a.bias = p.bias.const_data_ptr<scalar_t>();
    a.bias_ld = p.bias_kind == BiasKind::kFull ? p.N : 0;
  }
  a.dy = p.want.dY ? p.dY2.data_ptr<scalar_t>() : nullptr;
  a.two_scale = two_scale;
  a.relu = p.relu;
  a.write_g = p.want.need_g();
  return a;
}

// db for an (N,) bias: each chunk sums its rows of G in row order into its
// own partial, and the partials are added in chunk order, so db is as
// deterministic as dW. (A full bias's db is G itself, stored per block.)
template <typename scalar_t, typename opmath_t>
class RowBiasGrad {
 public:
  RowBiasGrad(const GradsPlan& p, int64_t chunks)
      : on_(p.want.db && p.bias_kind == BiasKind::kRow),
        n_(p.N),
        partials_(chunks, on_ ? p.N : 0, nullptr) {}

  // The chunk's partial, or null when no (N,) bias gradient is wanted.
  opmath_t* of(int64_t c) { return on_ ? partials_.of(c) : nullptr; }

  void store(const GradsPlan& p) {
    if (!on_) return;
    const opmath_t* sum = partials_.sum_in_order();
    scalar_t* db = p.db.data_ptr<scalar_t>();
    for (int64_t j = 0; j < n_; ++j) db[j] = static_cast<scalar_t>(sum[j]);
  }

 private:
  bool on_;
  int64_t n_;
  ChunkPartials<opmath_t> partials_;
};

// The bias gradient from rows [r0, r0 + rows) of the problem, whose G is at
// g (row stride ld_g): summed into the chunk's (N,)-bias partial, or stored
// as a full bias's db rows. Either pointer may be null.
template <typename target_t, typename opmath_t>
RELUFROB_ALWAYS_INLINE void bias_grad_rows(opmath_t* db_partial, target_t* db_full,
                                           const opmath_t* g, int64_t ld_g, int64_t r0,
                                           int64_t rows, int64_t n) {
  if (db_partial) add_rows(db_partial, g, rows, n, ld_g);
  if (db_full) store_rows(db_full + r0 * n, n, g, ld_g, rows, n);
}

// Where a full bias's db rows go (ld N), or null.
template <typename scalar_t>
scalar_t* full_bias_grad(const GradsPlan& p) {
  return p.want.db && p.bias_kind == BiasKind::kFull ? p.db2.data_ptr<scalar_t>() : nullptr;
}

}  // namespace relufrob::cpu
