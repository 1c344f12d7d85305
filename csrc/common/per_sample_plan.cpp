#include "per_sample_plan.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <cmath>

namespace relufrob {
namespace {

constexpr const char* kOp = "relufrob";

}  // namespace

NormRoute choose_route(int64_t T, int64_t K, int64_t N, std::string_view route) {
  TORCH_CHECK_VALUE(route == "auto" || route == "ghost" || route == "direct", kOp,
                    ": route must be 'auto', 'ghost' or 'direct', got '", route, "'");
  if (T == 1) return NormRoute::kRows;
  if (route == "ghost") return NormRoute::kGhost;
  if (route == "direct") return NormRoute::kDirect;
  // T²(K + N) against T K N, in double: the products can pass int64.
  const double t = static_cast<double>(T);
  return t * (K + N) <= static_cast<double>(K) * N ? NormRoute::kGhost : NormRoute::kDirect;
}

bool answer_empty(PerSamplePlan& ps) {
  GradsPlan& p = ps.grads;
  if (p.M * p.N != 0) return false;
  p.loss.zero_();
  ps.norms.zero_();
  if (p.want.dW) p.dW.zero_();
  if (p.want.db) p.db.zero_();
  return true;
}

PerSamplePlan make_per_sample_plan(const at::Tensor& X, const at::Tensor& W, const at::Tensor& Y,
                                   const at::Tensor& bias,
                                   const std::optional<std::string_view>& activation,
                                   std::optional<double> max_norm, std::string_view route,
                                   bool need_dW, bool need_db) {
  TORCH_CHECK_VALUE(!X.defined() || X.dim() >= 2, kOp,
                    ": X must have shape (B, *, K), a batch of samples, got shape ",
                    X.defined() ? X.sizes() : at::IntArrayRef());
  if (max_norm) {
    TORCH_CHECK_VALUE(std::isfinite(*max_norm) && *max_norm > 0, kOp,
                      ": max_norm must be a finite number > 0, got ", *max_norm);
  }
  GradsOptions options;
  options.activation = activation;
  PerSamplePlan ps;
  ps.grads = make_grads_plan(X, W, Y, bias, options, {need_dW, false, false, need_db});
  const GradsPlan& p = ps.grads;
  TORCH_CHECK_TYPE(p.X.scalar_type() == at::kFloat || p.X.scalar_type() == at::kDouble, kOp,
                   ": the per-sample kernels take float32 or float64 X (relufrob's "
                   "per-sample functions widen float16/bfloat16), got ",
                   p.X.scalar_type());
  ps.B = X.size(0);
  ps.T = ps.B > 0 ? p.M / ps.B : 1;
  ps.route = choose_route(ps.T, p.K, p.N, route);
  ps.clip = max_norm.has_value();
  ps.max_norm = max_norm.value_or(0.0);
  ps.norms = empty_output({ps.B}, X.options().dtype(p.target_dtype));
  return ps;
}

}  // namespace relufrob
