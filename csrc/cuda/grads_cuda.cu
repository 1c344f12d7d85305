// CUDA implementation of relufrob::grads: the only CUDA file that touches
// at::Tensor. GEMMs go to cuBLAS through ATen into preallocated buffers; the
// whole elementwise part is one custom kernel (epilogue_kernels.cuh), then a
// one-block reduction writes the loss, and an (N,) bias's db is a two-stage
// column sum (bias_grad_kernels.cuh). No host synchronisation anywhere, so
// the call can be captured in a CUDA graph.
#include "../common/dtype_dispatch.h"
#include "../common/grads_op.h"
#include "bias_grad_kernels.cuh"
#include "epilogue_kernels.cuh"

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

namespace relufrob::cuda {
namespace {

BiasMode bias_mode(BiasKind kind) {
  switch (kind) {
    case BiasKind::kRow:
      return BiasMode::kRow;
    case BiasKind::kFull:
      return BiasMode::kFull;
    default:
      return BiasMode::kNone;
  }
}

// scalar_t: X, W, Z and G; target_t: Y, bias, dY, db and the loss (scalar_t,
// or float under a half/bfloat16 scalar_t: autocast's mixed precision).
template <typename scalar_t, typename target_t>
void run_typed(const GradsPlan& p, at::Tensor buffer, cudaStream_t stream) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t numel = p.M * p.N;
  const bool need_g = p.want.need_g();
  const auto acc_dtype = c10::CppTypeToScalarType<acc_t>::value;

  // Z = XW lands in `buffer`; the epilogue then overwrites it with G (when a
  // gradient needs G) or with dY (when buffer *is* dY).
  at::mm_out(buffer, p.X, p.W);

  const int num_blocks = epilogue_num_blocks(numel);
  at::Tensor partials = at::empty({num_blocks}, p.X.options().dtype(acc_dtype));
  scalar_t* z = buffer.data_ptr<scalar_t>();
  if (numel > 0) {
    EpilogueIO<scalar_t, target_t> io;
    io.y = p.has_y() ? p.Y.const_data_ptr<target_t>() : nullptr;
    io.bias = p.has_bias() ? p.bias.const_data_ptr<target_t>() : nullptr;
    io.bias_mode = bias_mode(p.bias_kind);
    io.relu = p.relu;
    io.g = need_g ? z : nullptr;
    io.dy = p.want.dY ? p.dY2.data_ptr<target_t>() : nullptr;
    // A full float32 bias over a half/bfloat16 G: its db is G in float32,
    // written by the epilogue before G is rounded for the GEMMs.
    if (p.want.db && p.bias_kind == BiasKind::kFull && p.mixed())
      io.g_e = p.db2.data_ptr<target_t>();
    launch_epilogue<scalar_t, target_t, acc_t>(z, io, numel, p.N, static_cast<acc_t>(2.0 * p.scale),
                                               partials.data_ptr<acc_t>(), num_blocks, stream);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  launch_finalize_loss<target_t, acc_t>(partials.data_ptr<acc_t>(), numel > 0 ? num_blocks : 0,
                                        static_cast<acc_t>(p.scale), p.loss.data_ptr<target_t>(),
                                        stream);
  C10_CUDA_KERNEL_LAUNCH_CHECK();

  if (!need_g) return;
  const at::Tensor& G = buffer;
  // Z and G are held in the input dtype, as autograd holds them, so the GEMMs
  // run on cuBLAS's half/bfloat16 paths with their float32 accumulation
  // (subject to torch.backends.cuda.matmul.allow_*_reduced_precision_reduction,
  // exactly as for autograd); the epilogue itself computes in float32.
  if (p.want.dX) {
    at::Tensor dX2 = p.dX2;  // a handle on the output, for the out= overload
    at::mm_out(dX2, G, p.W.t());
  }
  if (p.want.dW) {
    at::Tensor dW = p.dW;
    at::mm_out(dW, p.X.t(), G);
  }
  // An (N,) bias's db sums G as the GEMMs take it: in mixed precision that
  // G is rounded to half/bfloat16 (the CPU kernels sum the float32 G; the
  // two differ by about one rounding of the low precision).
  if (p.want.db && p.bias_kind == BiasKind::kRow) {
    at::Tensor workspace =
        at::empty({bias_grad_workspace(p.M, p.N)}, p.X.options().dtype(acc_dtype));
    launch_bias_grad<scalar_t, acc_t>(G.const_data_ptr<scalar_t>(), p.M, p.N,
                                      workspace.data_ptr<acc_t>(), p.db.data_ptr<target_t>(),
                                      stream);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
}

void run_cuda(GradsPlan& p) {
  const c10::cuda::CUDAGuard guard(p.X.device());
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();

  // A full bias's db is G itself, so G is computed straight into it. Else G
  // needs its own M x N buffer; without G, Z can be turned into dY in place.
  // (Not in mixed precision: there db and dY are float32, Z and G are not.)
  at::Tensor buffer;
  if (p.want.db && p.bias_kind == BiasKind::kFull && !p.mixed()) {
    buffer = p.db2;
  } else if (p.want.dY && !p.want.need_g() && !p.mixed()) {
    buffer = p.dY2;
  } else {
    buffer = at::empty({p.M, p.N}, p.X.options());
  }
  dispatch_dtypes(p, [&](auto x_dtype, auto target_dtype) {
    run_typed<typename decltype(x_dtype)::type, typename decltype(target_dtype)::type>(p, buffer,
                                                                                       stream);
  });
}

}  // namespace
}  // namespace relufrob::cuda

// Validation and allocation (grads_kernel) come before the device guard: with
// mixed devices the dispatcher may route a CPU X here.
TORCH_LIBRARY_IMPL(relufrob, CUDA, m) {
  m.impl("grads", &relufrob::grads_kernel<&relufrob::cuda::run_cuda>);
}
