// Autocast behaviour of the relufrob ops, for torch.autocast on CPU and CUDA.
//
// relufrob follows what autocast does to the reference expression
// (relu(X @ W + b) - Y).pow(2).sum(): the matmul runs in the autocast dtype,
// and the residual, the loss and the bias's addition are promoted to the
// wider of that dtype and Y's (float32 for a float32 Y). So X and W are cast
// to the autocast dtype, as autocast casts matmul's operands (with its
// weight cache), Y and bias keep their dtype, and the op's mixed precision
// (a float16/bfloat16 X with a float32 target, grads_plan.h) does the rest.
//
// The casts are ordinary differentiable ops, so relufrob.loss's gradients
// flow back through them into each input's own dtype. relufrob.grads returns
// gradients, not a graph, so it casts them back itself.
#include "../common/grads_op.h"

#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/library.h>

namespace relufrob {
namespace {

struct AutocastArgs {
  at::Tensor X, W;
  OptionalTensor Y, bias;
};

// The target's dtype is the promotion of the autocast dtype with Y's and
// bias's, as the reference's subtraction and addition promote. A float64
// target has no mixed kernel, and is left for the op to refuse by name.
at::ScalarType promoted_target_dtype(at::ScalarType gemm_dtype, const OptionalTensor& Y,
                                     const OptionalTensor& bias) {
  at::ScalarType dt = gemm_dtype;
  for (const auto* t : {&Y, &bias}) {
    if (t->has_value() && (*t)->defined() && (*t)->is_floating_point())
      dt = at::promote_types(dt, (*t)->scalar_type());
  }
  return dt;
}

OptionalTensor widen(const OptionalTensor& t, at::ScalarType dt) {
  if (!t.has_value() || !t->defined() || !t->is_floating_point() || t->scalar_type() == dt ||
      dt == at::kDouble)
    return t;
  return t->to(dt);
}

template <c10::DeviceType kDevice>
AutocastArgs cast_args(const at::Tensor& X, const at::Tensor& W, const OptionalTensor& Y,
                       const OptionalTensor& bias) {
  const at::ScalarType gemm_dtype = at::autocast::get_autocast_dtype(kDevice);
  AutocastArgs a;
  a.X = at::autocast::cached_cast(gemm_dtype, X, kDevice);
  a.W = at::autocast::cached_cast(gemm_dtype, W, kDevice);
  // X is float64 (not eligible, so not cast): nothing to mix; the op judges.
  const at::ScalarType target = promoted_target_dtype(a.X.scalar_type(), Y, bias);
  a.Y = widen(Y, target);
  a.bias = widen(bias, target);
  return a;
}

// A gradient back in its input's dtype (placeholders of gradients that were
// not asked for stay as they are).
at::Tensor like_input(const at::Tensor& grad, const OptionalTensor& input, bool wanted) {
  if (!wanted || !input.has_value() || !input->defined() ||
      grad.scalar_type() == input->scalar_type())
    return grad;
  return grad.to(input->scalar_type());
}

template <c10::DispatchKey kKey, c10::DeviceType kDevice>
GradsResult grads_autocast(const at::Tensor& X, const at::Tensor& W, const OptionalTensor& Y,
                           const OptionalTensor& bias, OptionalString activation,
                           c10::string_view reduction, double scale, bool need_dW, bool need_dX,
                           bool need_dY, bool need_db) {
  const c10::impl::ExcludeDispatchKeyGuard no_autocast(kKey);
  const AutocastArgs a = cast_args<kDevice>(X, W, Y, bias);
  auto [loss, dW, dX, dY, db] = grads_op().call(a.X, a.W, a.Y, a.bias, activation, reduction, scale,
                                                need_dW, need_dX, need_dY, need_db);
  return {loss, like_input(dW, W, need_dW), like_input(dX, X, need_dX), like_input(dY, Y, need_dY),
          like_input(db, bias, need_db)};
}

template <c10::DispatchKey kKey, c10::DeviceType kDevice>
at::Tensor loss_autocast(const at::Tensor& X, const at::Tensor& W, const OptionalTensor& Y,
                         const OptionalTensor& bias, OptionalString activation,
                         c10::string_view reduction, double scale) {
  const c10::impl::ExcludeDispatchKeyGuard no_autocast(kKey);
  const AutocastArgs a = cast_args<kDevice>(X, W, Y, bias);
  static const auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("relufrob::loss", "")
          .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const OptionalTensor&,
                            const OptionalTensor&, OptionalString, c10::string_view, double)>();
  return op.call(a.X, a.W, a.Y, a.bias, activation, reduction, scale);
}

}  // namespace
}  // namespace relufrob

TORCH_LIBRARY_IMPL(relufrob, AutocastCPU, m) {
  m.impl("grads", &relufrob::grads_autocast<c10::DispatchKey::AutocastCPU, c10::DeviceType::CPU>);
  m.impl("loss", &relufrob::loss_autocast<c10::DispatchKey::AutocastCPU, c10::DeviceType::CPU>);
}

TORCH_LIBRARY_IMPL(relufrob, AutocastCUDA, m) {
  m.impl("grads", &relufrob::grads_autocast<c10::DispatchKey::AutocastCUDA, c10::DeviceType::CUDA>);
  m.impl("loss", &relufrob::loss_autocast<c10::DispatchKey::AutocastCUDA, c10::DeviceType::CUDA>);
}
