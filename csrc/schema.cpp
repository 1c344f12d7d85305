// The relufrob operator library: every schema lives here, plus the
// device-agnostic kernels. Backend kernels register themselves in
// cpu/grads_cpu.cpp and cuda/grads_cuda.cu; autograd in autograd/.
//
// Both ops compute the general form
//     f = scale * reduce(||act(X W + b) - Y||²),  act = relu or identity,
// where reduce is a sum, or a mean over the output's elements. Y and bias are
// optional (a zero target, no bias). The explicit scale is what lets a caller
// that holds one shard of a problem ask for the global mean.
#include "common/grads_op.h"

#include <torch/library.h>

namespace relufrob {
namespace {

// Below autograd, relufrob::loss is the loss-only path of relufrob::grads:
// no gradient is requested, so no G, dY or GEMM beyond Z = XW is produced.
at::Tensor loss_forward_only(const at::Tensor& X, const at::Tensor& W, const OptionalTensor& Y,
                             const OptionalTensor& bias, OptionalString activation,
                             c10::string_view reduction, double scale) {
  return std::get<0>(
      grads_op().call(X, W, Y, bias, activation, reduction, scale, false, false, false, false));
}

}  // namespace
}  // namespace relufrob

TORCH_LIBRARY(relufrob, m) {
  // Loss and the requested gradients in one fused pass. Gradients that were
  // not requested (and dY without Y, db without bias) come back as empty
  // (0,) placeholders.
  m.def(
      "grads(Tensor X, Tensor W, Tensor? Y, Tensor? bias=None, *, str? activation=\"relu\", "
      "str reduction=\"sum\", float scale=1., bool need_dW=True, bool need_dX=True, "
      "bool need_dY=True, bool need_db=True) "
      "-> (Tensor loss, Tensor dW, Tensor dX, Tensor dY, Tensor db)",
      {at::Tag::pt2_compliant_tag});
  // The loss as a differentiable scalar; its forward computes the gradients
  // of the inputs that require grad, and its backward only scales them.
  // Both ops are pt2-compliant: fake kernels (relufrob/fake_kernels.py),
  // opcheck-tested, and exported/AOT-compiled in tests/test_pt2.py.
  m.def(
      "loss(Tensor X, Tensor W, Tensor? Y, Tensor? bias=None, *, str? activation=\"relu\", "
      "str reduction=\"sum\", float scale=1.) -> Tensor",
      {at::Tag::pt2_compliant_tag});
  // Per-sample gradients without a B x K x N tensor (common/per_sample_plan.h):
  // the loss, each sample's gradient norm and, when asked, the sums of the
  // per-sample gradients of W and the bias, each clipped to max_norm (None:
  // not clipped). Sample b is X[b]. route picks how a multi-row sample's norm
  // is formed: "auto", "ghost" or "direct".
  m.def(
      "per_sample_grads(Tensor X, Tensor W, Tensor? Y, Tensor? bias=None, *, "
      "str? activation=\"relu\", float? max_norm=None, str route=\"auto\", "
      "bool need_dW=True, bool need_db=True) "
      "-> (Tensor loss, Tensor norms, Tensor dW, Tensor db)",
      {at::Tag::pt2_compliant_tag});
}

TORCH_LIBRARY_IMPL(relufrob, CompositeExplicitAutograd, m) {
  m.impl("loss", &relufrob::loss_forward_only);
}
