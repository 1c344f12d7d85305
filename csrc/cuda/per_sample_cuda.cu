// CUDA implementation of relufrob::per_sample_grads (see
// common/per_sample_plan.h for the math). Z = XW on cuBLAS, the epilogue
// kernel turns it into G in place, then:
//   one row per sample: the framework-free row kernels of
//     per_sample_kernels.cuh give the norms and clip factors;
//   T rows per sample: the ghost or direct norm by batched cuBLAS products,
//     a bounded number of samples at a time (no B x K x N tensor);
// G's rows are scaled by the clip factors, and dW = Xᵀ G, db from G. No
// host synchronisation, so the call can be captured in a CUDA graph.
#include "../common/per_sample_op.h"
#include "bias_grad_kernels.cuh"
#include "epilogue_kernels.cuh"
#include "per_sample_kernels.cuh"

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>

namespace relufrob::cuda {
namespace {

// Elements of the per-chunk products (T x T Gram matrices, or K x N) that the
// multi-row norms hold at once: 64 Mi elements.
constexpr int64_t kProductElements = int64_t(1) << 26;

// ||df_b/dW||² + ||df_b/dbias||² for T > 1 rows per sample, in double.
at::Tensor squared_norms_by_products(const PerSamplePlan& ps, const at::Tensor& G) {
  const GradsPlan& p = ps.grads;
  const int64_t B = ps.B, R = ps.T, K = p.K, N = p.N;
  const at::Tensor xs = p.X.view({B, R, K});
  const at::Tensor gs = G.view({B, R, N});
  const bool ghost = ps.route == NormRoute::kGhost;
  const int64_t per_sample = ghost ? 2 * R * R : K * N;
  const int64_t chunk = std::max<int64_t>(1, kProductElements / std::max<int64_t>(per_sample, 1));
  at::Tensor sq = at::empty({B}, p.X.options().dtype(at::kDouble));
  for (int64_t b0 = 0; b0 < B; b0 += chunk) {
    const int64_t b1 = std::min(B, b0 + chunk);
    const at::Tensor x = xs.slice(0, b0, b1), g = gs.slice(0, b0, b1);
    at::Tensor part;
    if (ghost) {
      part = (at::bmm(x, x.transpose(1, 2)) * at::bmm(g, g.transpose(1, 2)))
                 .sum({1, 2}, false, at::kDouble);
    } else {
      part = at::bmm(x.transpose(1, 2), g).square().sum({1, 2}, false, at::kDouble);
    }
    sq.slice(0, b0, b1).copy_(part);
  }
  if (p.bias_kind == BiasKind::kFull) sq += gs.square().sum({1, 2}, false, at::kDouble);
  if (p.bias_kind == BiasKind::kRow) sq += gs.sum(1, false, at::kDouble).square().sum(1);
  return sq;
}

template <typename T>
void run_typed(PerSamplePlan& ps, cudaStream_t stream) {
  GradsPlan& p = ps.grads;
  const int64_t M = p.M, N = p.N;
  const bool update = p.want.dW || p.want.db;
  // A full bias's db is G itself (scaled), so G is computed straight into it.
  at::Tensor G =
      p.want.db && p.bias_kind == BiasKind::kFull ? p.db2 : at::empty({M, N}, p.X.options());
  at::mm_out(G, p.X, p.W);

  const int num_blocks = epilogue_num_blocks(M * N);
  at::Tensor partials = at::empty({num_blocks}, p.X.options());
  EpilogueIO<T, T> io;
  io.y = p.has_y() ? p.Y.const_data_ptr<T>() : nullptr;
  io.bias = p.has_bias() ? p.bias.const_data_ptr<T>() : nullptr;
  io.bias_mode = p.bias_kind == BiasKind::kRow    ? BiasMode::kRow
                 : p.bias_kind == BiasKind::kFull ? BiasMode::kFull
                                                  : BiasMode::kNone;
  io.relu = p.relu;
  io.g = G.data_ptr<T>();
  launch_epilogue<T, T, T>(G.data_ptr<T>(), io, M * N, N, T(2), partials.data_ptr<T>(), num_blocks,
                           stream);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  launch_finalize_loss<T, T>(partials.data_ptr<T>(), num_blocks, T(1), p.loss.data_ptr<T>(),
                             stream);
  C10_CUDA_KERNEL_LAUNCH_CHECK();

  at::Tensor factors;
  if (ps.route == NormRoute::kRows) {
    at::Tensor xsq = at::empty({M}, p.X.options()), gsq = at::empty({M}, p.X.options());
    launch_row_sum_squares<T, T>(p.X.const_data_ptr<T>(), M, p.K, xsq.data_ptr<T>(), stream);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    launch_row_sum_squares<T, T>(G.const_data_ptr<T>(), M, N, gsq.data_ptr<T>(), stream);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    if (ps.clip && update) factors = at::empty({ps.B}, p.X.options());
    launch_row_norms<T, T>(xsq.const_data_ptr<T>(), gsq.const_data_ptr<T>(), ps.B, p.has_bias(),
                           static_cast<T>(ps.max_norm), ps.norms.data_ptr<T>(),
                           factors.defined() ? factors.data_ptr<T>() : nullptr, stream);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  } else {
    const at::Tensor norms = squared_norms_by_products(ps, G).sqrt();
    ps.norms.copy_(norms);
    if (ps.clip && update)  // min(1, max_norm / (norm + eps)); clamp keeps NaN
      factors = (ps.max_norm / (norms + kClipEps)).clamp_max(1.0).to(p.X.scalar_type());
  }
  if (!update) return;
  if (factors.defined()) G.view({ps.B, ps.T, N}).mul_(factors.view({ps.B, 1, 1}));
  if (p.want.dW) {
    at::Tensor dW = p.dW;
    at::mm_out(dW, p.X.t(), G);
  }
  if (p.want.db && p.bias_kind == BiasKind::kRow) {
    at::Tensor workspace = at::empty({bias_grad_workspace(M, N)}, p.X.options());
    launch_bias_grad<T, T>(G.const_data_ptr<T>(), M, N, workspace.data_ptr<T>(), p.db.data_ptr<T>(),
                           stream);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
}

void run_per_sample_cuda(PerSamplePlan& ps) {
  const c10::cuda::CUDAGuard guard(ps.grads.X.device());
  if (answer_empty(ps)) return;
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(ps.grads.X.scalar_type(), "relufrob_per_sample_cuda",
                             [&] { run_typed<scalar_t>(ps, stream); });
}

}  // namespace
}  // namespace relufrob::cuda

TORCH_LIBRARY_IMPL(relufrob, CUDA, m) {
  m.impl("per_sample_grads", &relufrob::per_sample_kernel<&relufrob::cuda::run_per_sample_cuda>);
}
