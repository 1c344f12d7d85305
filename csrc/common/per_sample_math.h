// The per-sample half of the math (docs/math.md), written once for every
// backend like epilogue_math.h, and like it free of ATen/torch includes.
#pragma once

#include "epilogue_math.h"

namespace relufrob {

// Opacus's epsilon in the clip factor.
constexpr double kClipEps = 1e-6;

// norm_b² for a sample that is one row x_b with gradient row g_b:
// df_b/dW = x_bᵀ g_b has ||x_b||² ||g_b||² as its squared norm, and an (N,)
// bias's df_b/dbias is g_b itself.
template <typename T>
RELUFROB_HD T one_row_squared_norm(T x_sq, T g_sq, bool bias) {
  return x_sq * g_sq + (bias ? g_sq : T(0));
}

// c_b = min(1, max_norm / (norm_b + eps)). NaN stays NaN (a NaN sample
// spoils the sum, as torch.clamp(max=1) lets NaN through in the reference);
// a zero norm gives 1.
template <typename T>
RELUFROB_HD T clip_factor(T norm, T max_norm) {
  const T q = max_norm / (norm + static_cast<T>(kClipEps));
  return q > T(1) ? T(1) : q;
}

}  // namespace relufrob
