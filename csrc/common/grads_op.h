// Typed handle on the dispatcher op relufrob::grads, for C++ code that must
// go through the dispatcher (so that fake tensors, autocast-free tracing and
// every backend see the call) rather than calling a backend kernel directly.
#pragma once

#include "grads_plan.h"

#include <ATen/core/dispatch/Dispatcher.h>

namespace relufrob {

using GradsSignature = GradsResult(const at::Tensor&, const at::Tensor&, const at::Tensor&, bool,
                                   bool, bool, c10::string_view);

// Looked up once; the handle stays valid for the life of the library.
inline const c10::TypedOperatorHandle<GradsSignature>& grads_op() {
  static const auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow("relufrob::grads", "").typed<GradsSignature>();
  return op;
}

inline GradsResult call_grads_op(const at::Tensor& X, const at::Tensor& W, const at::Tensor& Y,
                                 GradRequest want, c10::string_view reduction) {
  return grads_op().call(X, W, Y, want.dW, want.dX, want.dY, reduction);
}

}  // namespace relufrob
