// The C++ signature of relufrob::grads in one place: a typed handle for C++
// code that must go through the dispatcher (so that fake tensors and every
// backend see the call), and the adapter that turns a backend's
// `void run(GradsPlan&)` into a kernel with the op's signature.
#pragma once

#include "grads_plan.h"

#include <ATen/core/dispatch/Dispatcher.h>

#include <optional>

namespace relufrob {

using OptionalTensor = std::optional<at::Tensor>;
using OptionalString = std::optional<c10::string_view>;

// grads(X, W, Y?, *, bias?, activation?, reduction, scale, need_dW, need_dX,
//       need_dY, need_db), as declared in schema.cpp.
using GradsSignature = GradsResult(const at::Tensor&, const at::Tensor&, const OptionalTensor&,
                                   const OptionalTensor&, OptionalString, c10::string_view, double,
                                   bool, bool, bool, bool);

// Looked up once; the handle stays valid for the life of the library.
inline const c10::TypedOperatorHandle<GradsSignature>& grads_op() {
  static const auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow("relufrob::grads", "").typed<GradsSignature>();
  return op;
}

inline OptionalString to_schema(const std::optional<std::string_view>& s) {
  return s ? OptionalString(c10::string_view(s->data(), s->size())) : std::nullopt;
}

inline GradsResult call_grads_op(const at::Tensor& X, const at::Tensor& W, const OptionalTensor& Y,
                                 const OptionalTensor& bias, const GradsOptions& options,
                                 GradRequest want) {
  return grads_op().call(X, W, Y, bias, to_schema(options.activation), options.reduction,
                         options.scale, want.dW, want.dX, want.dY, want.db);
}

// A backend kernel for relufrob::grads: validates and allocates (one plan
// for every backend, so they reject the same inputs in the same words), then
// runs the backend's computation on the plan.
template <void (*Run)(GradsPlan&)>
GradsResult grads_kernel(const at::Tensor& X, const at::Tensor& W, const OptionalTensor& Y,
                         const OptionalTensor& bias, OptionalString activation,
                         c10::string_view reduction, double scale, bool need_dW, bool need_dX,
                         bool need_dY, bool need_db) {
  GradsOptions options;
  options.activation = activation ? std::optional<std::string_view>(*activation) : std::nullopt;
  options.reduction = reduction;
  options.scale = scale;
  // By reference: a copy of each tensor handle costs atomic reference
  // counting, measurable on a 10x4x4 problem.
  static const at::Tensor none;
  GradsPlan p = make_grads_plan(X, W, Y ? *Y : none, bias ? *bias : none, options,
                                {need_dW, need_dX, need_dY, need_db});
  Run(p);
  return p.result();
}

}  // namespace relufrob
