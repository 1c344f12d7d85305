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

// The closed-form gradients (dW, dX, dY, db) as differentiable ATen
// expressions; only used for create_graph=True, where the graph must reach
// every input. `scale` is the whole loss scale (the op's times the mean's).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> differentiable_grads(
    const at::Tensor& X, const at::Tensor& W, const at::Tensor& Y, const at::Tensor& bias,
    bool relu, double scale) {
  at::Tensor Z = at::matmul(X, W);
  if (bias.defined()) Z = Z + bias;
  const at::Tensor A = relu ? at::relu(Z) : Z;
  const at::Tensor R = Y.defined() ? A - Y : A;
  // threshold_backward is autograd's own ReLU backward (NaN passes through).
  const at::Tensor G = relu ? at::threshold_backward((2.0 * scale) * R, A, 0) : (2.0 * scale) * R;
  const int64_t K = W.size(0), N = W.size(1);
  // Not reshape({-1, K}): ambiguous when K or N is 0.
  const int64_t M = leading_rows(X);
  // G in X's dtype for the GEMMs: in mixed precision G is float32 (from a
  // float32 Y) while X and W are float16/bfloat16, as autograd's matmul
  // backward receives it.
  const at::Tensor Gx = G.to(X.scalar_type());
  const at::Tensor dW = X.reshape({M, K}).t().mm(Gx.reshape({M, N}));
  const at::Tensor dX = at::matmul(Gx, W.t());
  const at::Tensor dY = Y.defined() ? (-2.0 * scale) * R : at::Tensor();
  at::Tensor db;
  if (bias.defined()) db = bias.dim() == 1 ? G.reshape({M, N}).sum(0) : G;
  return {dW, dX, dY, db};
}

class FusedLoss : public torch::autograd::Function<FusedLoss> {
 public:
  // Y and bias are optional: an absent one is no Variable input at all.
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& X, const at::Tensor& W,
                            const OptionalTensor& Y_opt, const OptionalTensor& bias_opt,
                            OptionalString activation, c10::string_view reduction, double scale,
                            GradRequest want) {
    const at::Tensor Y = Y_opt.value_or(at::Tensor()), bias = bias_opt.value_or(at::Tensor());
    GradsOptions options;
    options.activation = activation ? std::optional<std::string_view>(*activation) : std::nullopt;
    options.reduction = reduction;
    options.scale = scale;
    auto [loss, dW, dX, dY, db] = call_grads_op(X, W, Y_opt, bias_opt, options, want);
    // X, W, Y and bias are saved only for the create_graph path; saving an
    // input holds a reference, not a copy.
    ctx->save_for_backward({X, W, Y, bias, dW, dX, dY, db});
    ctx->saved_data["relu"] = activation.has_value();
    ctx->saved_data["has_y"] = Y.defined();
    // The mean's element count is taken in backward, and only for
    // create_graph: reading sizes here would specialise symbolic shapes
    // under torch.export.
    ctx->saved_data["reduction"] = std::string(reduction);
    ctx->saved_data["scale"] = scale;
    return loss;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &X = saved[0], &W = saved[1], &Y = saved[2], &bias = saved[3];
    at::Tensor dW = saved[4], dX = saved[5], dY = saved[6], db = saved[7];
    if (at::GradMode::is_enabled()) {
      const double scale =
          ctx->saved_data["scale"].toDouble() *
          reduction_scale(ctx->saved_data["reduction"].toStringRef(), leading_rows(X) * W.size(1));
      std::tie(dW, dX, dY, db) =
          differentiable_grads(X, W, Y, bias, ctx->saved_data["relu"].toBool(), scale);
    }
    const at::Tensor& g = grad_outputs[0];
    // needs_input_grad counts Variable inputs only, and an absent Y is none.
    const int bias_edge = ctx->saved_data["has_y"].toBool() ? 3 : 2;
    const auto scaled = [&](bool present, int edge, const at::Tensor& grad) {
      return present && ctx->needs_input_grad(edge) ? g * grad : at::Tensor();
    };
    return {scaled(true, 0, dX),
            scaled(true, 1, dW),
            scaled(Y.defined(), 2, dY),
            scaled(bias.defined(), bias_edge, db),
            at::Tensor(),
            at::Tensor(),
            at::Tensor(),
            at::Tensor()};
  }
};

// An input that a torch.func grad, vjp or jacrev differentiates reaches this
// kernel as a TensorWrapper (FuncTorchGradWrapper) that requires grad; one
// that forward-mode AD differentiates (jvp, jacfwd, a dual tensor) carries a
// tangent. grads' outputs have neither a graph nor tangents, so the
// transform would see constants and return zeros: the op refuses instead. A
// plain tensor that requires grad is served: grads returns gradients.
bool differentiated_by_a_transform(const at::Tensor& t) {
  if (!t.defined()) return false;
  if (t._fw_grad(/*level=*/0).defined()) return true;
  return t.key_set().has(c10::DispatchKey::FuncTorchGradWrapper) && t.requires_grad();
}

GradsResult grads_autograd(c10::DispatchKeySet keys, const at::Tensor& X, const at::Tensor& W,
                           const OptionalTensor& Y, const OptionalTensor& bias,
                           OptionalString activation, c10::string_view reduction, double scale,
                           bool need_dW, bool need_dX, bool need_dY, bool need_db) {
  const std::pair<const char*, at::Tensor> inputs[] = {
      {"X", X}, {"W", W}, {"Y", Y.value_or(at::Tensor())}, {"bias", bias.value_or(at::Tensor())}};
  for (const auto& [name, t] : inputs) {
    TORCH_CHECK(!differentiated_by_a_transform(t), "relufrob: ", name,
                " is differentiated by a torch.func transform or forward-mode AD, but grads "
                "returns gradients, not a graph (the transform would get zeros); "
                "differentiate relufrob.loss instead");
  }
  const at::AutoDispatchBelowADInplaceOrView guard;
  // Straight to the backend kernel, without a second dispatch from the top.
  return grads_op().redispatch(keys & c10::after_ADInplaceOrView_keyset, X, W, Y, bias, activation,
                               reduction, scale, need_dW, need_dX, need_dY, need_db);
}

at::Tensor loss_autograd(const at::Tensor& X, const at::Tensor& W, const OptionalTensor& Y,
                         const OptionalTensor& bias, OptionalString activation,
                         c10::string_view reduction, double scale) {
  // Decided here, not in forward(): Function::apply runs forward() with grad
  // mode off, so only the caller's mode says whether a graph will be built.
  const bool grad_on = at::GradMode::is_enabled();
  const auto wants_grad = [&](const at::Tensor& t) {
    return grad_on && t.defined() && t.requires_grad();
  };
  const GradRequest want{wants_grad(W), wants_grad(X), wants_grad(Y.value_or(at::Tensor())),
                         wants_grad(bias.value_or(at::Tensor()))};
  return FusedLoss::apply(X, W, Y, bias, activation, reduction, scale, want);
}

}  // namespace
}  // namespace relufrob

TORCH_LIBRARY_IMPL(relufrob, Autograd, m) {
  m.impl("grads", &relufrob::grads_autograd);
  m.impl("loss", &relufrob::loss_autograd);
}
