// CUDA implementation of relufrob::grads: the only CUDA file that touches
// at::Tensor. GEMMs go to cuBLAS through ATen into preallocated buffers; the
// whole elementwise part is one custom kernel (epilogue_kernels.cuh), then a
// one-block reduction writes the loss. No host synchronisation anywhere, so
// the call can be captured in a CUDA graph.
#include "../common/grads_plan.h"
#include "epilogue_kernels.cuh"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

namespace relufrob::cuda {
namespace {

template <typename scalar_t>
void run_grads(const GradsPlan& p, at::Tensor buffer, cudaStream_t stream) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t numel = p.M * p.N;
  const bool need_g = p.want.any_gemm_grad();

  // Z = XW lands in `buffer`; the epilogue then overwrites it with G (when a
  // GEMM gradient is wanted) or with dY (when buffer *is* dY).
  at::mm_out(buffer, p.X, p.W);

  const int num_blocks = epilogue_num_blocks(numel);
  const auto acc_dtype = c10::CppTypeToScalarType<acc_t>::value;
  at::Tensor partials = at::empty({num_blocks}, p.X.options().dtype(acc_dtype));
  scalar_t* z = buffer.data_ptr<scalar_t>();
  scalar_t* dy = p.want.dY ? p.dY2.data_ptr<scalar_t>() : nullptr;
  if (numel > 0) {
    launch_epilogue<scalar_t, acc_t>(z, p.Y.const_data_ptr<scalar_t>(), numel,
                                     static_cast<acc_t>(2.0 * p.scale), need_g ? z : nullptr, dy,
                                     partials.data_ptr<acc_t>(), num_blocks, stream);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  launch_finalize_loss<scalar_t, acc_t>(partials.data_ptr<acc_t>(), numel > 0 ? num_blocks : 0,
                                        static_cast<acc_t>(p.scale), p.loss.data_ptr<scalar_t>(),
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
}

GradsResult grads_cuda(const at::Tensor& X, const at::Tensor& W, const at::Tensor& Y, bool need_dW,
                       bool need_dX, bool need_dY, c10::string_view reduction) {
  // Validate first: with mixed devices the dispatcher may route a CPU X here.
  GradsPlan p = make_grads_plan(X, W, Y, {need_dW, need_dX, need_dY}, reduction);
  const c10::cuda::CUDAGuard guard(p.X.device());
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();

  // G needs its own M x N buffer; without G, Z can be turned into dY in place.
  const at::Tensor buffer =
      (p.want.dY && !p.want.any_gemm_grad()) ? p.dY2 : at::empty({p.M, p.N}, p.X.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, p.X.scalar_type(),
                                  "relufrob_grads_cuda",
                                  [&] { run_grads<scalar_t>(p, buffer, stream); });
  return p.result();
}

}  // namespace
}  // namespace relufrob::cuda

TORCH_LIBRARY_IMPL(relufrob, CUDA, m) { m.impl("grads", &relufrob::cuda::grads_cuda); }
