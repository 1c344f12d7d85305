// Autograd behaviour of the relufrob ops.
//
// relufrob::grads returns gradients, not something to differentiate: its
// Autograd kernel steps below autograd for the whole call, so outputs never
// carry a graph and the kernels' own ATen calls (mm_out on inputs that
// require grad) are not recorded either.
//
// relufrob::loss follows the fused-gradient pattern: the forward asks
// relufrob::grads for exactly the gradients whose inputs require grad and
// saves them; the backward multiplies them by grad_output. When the backward
// itself must be differentiable (create_graph=True), the gradients are rebuilt
// from differentiable ATen ops instead, so higher-order derivatives are exact.
#include "../common/grads_op.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/library.h>

namespace relufrob {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The closed-form gradients as differentiable ATen expressions; only used for
// create_graph=True, where the graph must reach X, W and Y.
std::tuple<at::Tensor, at::Tensor, at::Tensor> differentiable_grads(const at::Tensor& X,
                                                                    const at::Tensor& W,
                                                                    const at::Tensor& Y,
                                                                    double scale) {
  const at::Tensor A = at::relu(at::matmul(X, W));
  const at::Tensor R = A - Y;
  // threshold_backward is autograd's own ReLU backward (NaN passes through).
  const at::Tensor G = at::threshold_backward((2.0 * scale) * R, A, 0);
  const int64_t K = W.size(0), N = W.size(1);
  // Not reshape({-1, K}): ambiguous when K or N is 0.
  const int64_t M = leading_rows(X);
  const at::Tensor dW = X.reshape({M, K}).t().mm(G.reshape({M, N}));
  const at::Tensor dX = at::matmul(G, W.t());
  const at::Tensor dY = (-2.0 * scale) * R;
  return {dW, dX, dY};
}

class FusedLoss : public torch::autograd::Function<FusedLoss> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& X, const at::Tensor& W,
                            const at::Tensor& Y, c10::string_view reduction, GradRequest want) {
    auto [loss, dW, dX, dY] = call_grads_op(X, W, Y, want, reduction);
    // X, W and Y are saved only for the create_graph path; saving an input
    // holds a reference, not a copy.
    ctx->save_for_backward({X, W, Y, dW, dX, dY});
    ctx->saved_data["reduction"] = std::string(reduction);
    return loss;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &X = saved[0], &W = saved[1], &Y = saved[2];
    at::Tensor dW = saved[3], dX = saved[4], dY = saved[5];
    if (at::GradMode::is_enabled()) {
      const auto scale = reduction_scale(ctx->saved_data["reduction"].toStringRef(), Y.numel());
      std::tie(dW, dX, dY) = differentiable_grads(X, W, Y, scale);
    }
    const at::Tensor& g = grad_outputs[0];
    return {ctx->needs_input_grad(0) ? g * dX : at::Tensor(),
            ctx->needs_input_grad(1) ? g * dW : at::Tensor(),
            ctx->needs_input_grad(2) ? g * dY : at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

GradsResult grads_autograd(c10::DispatchKeySet keys, const at::Tensor& X, const at::Tensor& W,
                           const at::Tensor& Y, bool need_dW, bool need_dX, bool need_dY,
                           c10::string_view reduction) {
  const at::AutoDispatchBelowADInplaceOrView guard;
  // Straight to the backend kernel, without a second dispatch from the top.
  return grads_op().redispatch(keys & c10::after_ADInplaceOrView_keyset, X, W, Y, need_dW, need_dX,
                               need_dY, reduction);
}

at::Tensor loss_autograd(const at::Tensor& X, const at::Tensor& W, const at::Tensor& Y,
                         c10::string_view reduction) {
  // Decided here, not in forward(): Function::apply runs forward() with grad
  // mode off, so only the caller's mode says whether a graph will be built.
  const bool grad_on = at::GradMode::is_enabled();
  const GradRequest want{grad_on && W.requires_grad(), grad_on && X.requires_grad(),
                         grad_on && Y.requires_grad()};
  return FusedLoss::apply(X, W, Y, reduction, want);
}

}  // namespace
}  // namespace relufrob

TORCH_LIBRARY_IMPL(relufrob, Autograd, m) {
  m.impl("grads", &relufrob::grads_autograd);
  m.impl("loss", &relufrob::loss_autograd);
}
