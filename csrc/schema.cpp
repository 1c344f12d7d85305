// The relufrob operator library: every schema lives here, plus the
// device-agnostic kernels. Backend kernels register themselves in
// cpu/grads_cpu.cpp and cuda/grads_cuda.cu; autograd in autograd/.
#include "common/grads_op.h"

#include <torch/library.h>

namespace relufrob {
namespace {

// Below autograd, relufrob::loss is the loss-only path of relufrob::grads:
// no gradient is requested, so no G, dY or GEMM beyond Z = XW is produced.
at::Tensor loss_forward_only(const at::Tensor& X, const at::Tensor& W, const at::Tensor& Y,
                             c10::string_view reduction) {
  return std::get<0>(call_grads_op(X, W, Y, {false, false, false}, reduction));
}

}  // namespace
}  // namespace relufrob

TORCH_LIBRARY(relufrob, m) {
  // Loss and the requested gradients in one fused pass. Gradients that were
  // not requested come back as empty (0,) placeholders.
  m.def(
      "grads(Tensor X, Tensor W, Tensor Y, bool need_dW=True, "
      "bool need_dX=True, bool need_dY=True, str reduction=\"sum\") "
      "-> (Tensor loss, Tensor dW, Tensor dX, Tensor dY)");
  // The loss as a differentiable scalar; its forward computes the gradients
  // of the inputs that require grad, and its backward only scales them.
  m.def("loss(Tensor X, Tensor W, Tensor Y, str reduction=\"sum\") -> Tensor");
}

TORCH_LIBRARY_IMPL(relufrob, CompositeExplicitAutograd, m) {
  m.impl("loss", &relufrob::loss_forward_only);
}
