// Typed handle on the dispatcher op relufrob::grads, for C++ code that must
// go through the dispatcher (so that fake tensors, autocast-free tracing and
// every backend see the call) rather than calling a backend kernel directly.
#pragma once

#include "grads_plan.h"

#include <ATen/core/dispatch/Dispatcher.h>

namespace relufrob {

inline GradsResult call_grads_op(const at::Tensor& X, const at::Tensor& W,
                                 const at::Tensor& Y, GradRequest want,
                                 c10::string_view reduction) {
  static const auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("relufrob::grads", "")
          .typed<GradsResult(const at::Tensor&, const at::Tensor&,
                             const at::Tensor&, bool, bool, bool,
                             c10::string_view)>();
  return op.call(X, W, Y, want.dW, want.dX, want.dY, reduction);
}

}  // namespace relufrob
