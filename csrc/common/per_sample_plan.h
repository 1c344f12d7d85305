// relufrob::per_sample_grads: each sample's gradient norm, and the sum of the
// clipped per-sample gradients (DP-SGD), without any B x K x N tensor.
//
// Sample b is X[b]: one row of a (B, K) X, or the T rows of a (B, *, K) X.
// With G = df/dZ and f_b the loss of sample b's rows,
//     df_b/dW    = X_bᵀ G_b
//     df_b/dbias = G_b summed over its rows (an (N,) bias), or G_b itself
//                  (a full-shape bias: sample b's own slice)
//     norm_b²    = ||X_bᵀ G_b||² + ||df_b/dbias||²
// where ||X_bᵀ G_b||² is ||x_b||² ||g_b||² for one row, and for T rows either
// <X_b X_bᵀ, G_b G_bᵀ> (the "ghost" norm, T²(K + N) work) or X_bᵀ G_b formed
// directly (T K N work), whichever is cheaper for the shape.
// The clipped sums are Xᵀ (c ⊙ G) and the bias's likewise, with
// c_b = min(1, max_norm / (norm_b + 1e-6)) scaling the rows of sample b.
#pragma once

#include "grads_plan.h"
#include "per_sample_math.h"

#include <optional>
#include <string_view>
#include <tuple>

namespace relufrob {

// (loss, norms, dW, db); dW and db are (0,) placeholders when not asked for.
using PerSampleResult = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

enum class NormRoute {
  kRows,    // one row per sample: ||x_b||² ||g_b||²
  kGhost,   // <X_b X_bᵀ, G_b G_bᵀ>
  kDirect,  // ||X_bᵀ G_b||² from the K x N product
};

struct PerSamplePlan {
  // X (M, K) with M = B * T, W, Y, bias, and the loss, dW and db outputs;
  // its `want` holds dW and db only.
  GradsPlan grads;
  int64_t B = 0;  // samples
  int64_t T = 1;  // rows per sample
  NormRoute route = NormRoute::kRows;
  bool clip = false;
  double max_norm = 0.0;  // when clip
  at::Tensor norms;       // (B,), the target dtype

  PerSampleResult result() const { return {grads.loss, norms, grads.dW, grads.db}; }
};

// With no residuals (M * N == 0) the loss, the norms and the sums are zeros:
// fills them and returns true. Every backend answers that case this way.
bool answer_empty(PerSamplePlan& ps);

// The ghost norm costs T²(K + N) per sample, the direct product T K N.
NormRoute choose_route(int64_t T, int64_t K, int64_t N, std::string_view route);

// Validates (the messages of make_grads_plan, plus X's batch dimension,
// max_norm and route) and allocates the outputs.
PerSamplePlan make_per_sample_plan(const at::Tensor& X, const at::Tensor& W, const at::Tensor& Y,
                                   const at::Tensor& bias,
                                   const std::optional<std::string_view>& activation,
                                   std::optional<double> max_norm, std::string_view route,
                                   bool need_dW, bool need_db);

}  // namespace relufrob
