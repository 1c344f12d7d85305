// Input validation, shape flattening and output allocation for relufrob::grads,
// shared by every backend so that a CPU and a CUDA call reject the same inputs
// with the same messages and return identically shaped results.
#pragma once

#include <ATen/core/Tensor.h>

#include <string_view>
#include <tuple>

namespace relufrob {

using GradsResult = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

// Which gradients the caller asked for; the rest are neither computed nor
// allocated beyond an empty placeholder.
struct GradRequest {
  bool dW = true;
  bool dX = true;
  bool dY = true;

  bool any_gemm_grad() const { return dW || dX; }
};

struct GradsPlan {
  // 2-D, contiguous views (copies only where the caller's layout forces one).
  at::Tensor X;  // (M, K)
  at::Tensor W;  // (K, N)
  at::Tensor Y;  // (M, N)
  int64_t M = 0, K = 0, N = 0;
  GradRequest want;
  // 1 for reduction="sum", 1/(M*N) for "mean" (inf when M*N == 0, which makes
  // the mean of nothing NaN, as torch's mean does).
  double scale = 1.0;

  // Outputs, allocated in the callers' shapes. Gradients that were not
  // requested are empty placeholders of shape (0,).
  at::Tensor loss, dW, dX, dY;
  // 2-D views of dX and dY that the kernels write through.
  at::Tensor dX2, dY2;

  GradsResult result() const { return {loss, dW, dX, dY}; }
};

// M: the rows in X's leading dimensions, (*, K) -> prod(*). Taken from the
// shape, not numel / K, which is 0 / 0 when K == 0; and overflow-checked,
// since with K == 0 the leading dimensions hold no data and so are not
// bounded by memory.
int64_t leading_rows(const at::Tensor& X);

// 1 for "sum", 1/numel for "mean" (inf for numel == 0, so that the mean over
// nothing is NaN as in torch.mean); anything else raises ValueError.
double reduction_scale(std::string_view reduction, int64_t numel);

// Validates the arguments (raising ValueError/TypeError that name X, W or Y)
// and allocates the outputs on the inputs' device.
GradsPlan make_grads_plan(const at::Tensor& X, const at::Tensor& W, const at::Tensor& Y,
                          GradRequest want, std::string_view reduction);

}  // namespace relufrob
