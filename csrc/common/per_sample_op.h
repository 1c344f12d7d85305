// The C++ signature of relufrob::per_sample_grads, and the adapter that turns
// a backend's `void run(PerSamplePlan&)` into its kernel (as grads_op.h does
// for relufrob::grads).
#pragma once

#include "grads_op.h"
#include "per_sample_plan.h"

namespace relufrob {

// per_sample_grads(X, W, Y?, bias?, *, activation?, max_norm?, route,
//                  need_dW, need_db), as declared in schema.cpp.
using PerSampleSignature = PerSampleResult(const at::Tensor&, const at::Tensor&,
                                           const OptionalTensor&, const OptionalTensor&,
                                           OptionalString, std::optional<double>, c10::string_view,
                                           bool, bool);

inline const c10::TypedOperatorHandle<PerSampleSignature>& per_sample_op() {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("relufrob::per_sample_grads", "")
                             .typed<PerSampleSignature>();
  return op;
}

template <void (*Run)(PerSamplePlan&)>
PerSampleResult per_sample_kernel(const at::Tensor& X, const at::Tensor& W, const OptionalTensor& Y,
                                  const OptionalTensor& bias, OptionalString activation,
                                  std::optional<double> max_norm, c10::string_view route,
                                  bool need_dW, bool need_db) {
  static const at::Tensor none;
  const std::optional<std::string_view> act =
      activation ? std::optional<std::string_view>(*activation) : std::nullopt;
  PerSamplePlan ps = make_per_sample_plan(X, W, Y ? *Y : none, bias ? *bias : none, act, max_norm,
                                          route, need_dW, need_db);
  Run(ps);
  return ps.result();
}

}  // namespace relufrob
