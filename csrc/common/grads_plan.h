// Input validation, shape flattening and output allocation for relufrob::grads,
// shared by every backend so that a CPU and a CUDA call reject the same inputs
// with the same messages and return identically shaped results.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>
#include <string_view>
#include <tuple>

namespace relufrob {

using GradsResult = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

// Which gradients the caller asked for; the rest are neither computed nor
// allocated beyond an empty placeholder. dY is never computed without a Y,
// nor db without a bias.
struct GradRequest {
  bool dW = true;
  bool dX = true;
  bool dY = true;
  bool db = true;

  bool any_gemm_grad() const { return dW || dX; }
  // G = df/dZ is needed by the GEMM gradients and is itself db.
  bool need_g() const { return dW || dX || db; }
};

// How b enters Z = XW + b.
enum class BiasKind {
  kNone,
  kRow,   // (N,): added to every row, as nn.Linear's bias; db sums G's rows
  kFull,  // the output's shape (*, N): added elementwise; db is G itself
};

// The arguments of relufrob::grads and relufrob::loss beyond the tensors.
struct GradsOptions {
  // "relu", or nullopt (None) for the identity.
  std::optional<std::string_view> activation = "relu";
  std::string_view reduction = "sum";  // "sum" or "mean"
  double scale = 1.0;                  // multiplies the reduced loss
};

struct GradsPlan {
  // Contiguous views (copies only where the caller's layout forces one).
  at::Tensor X;     // (M, K)
  at::Tensor W;     // (K, N)
  at::Tensor Y;     // (M, N), or undefined: a target of zeros
  at::Tensor bias;  // (N,) for kRow, (M, N) for kFull, else undefined
  int64_t M = 0, K = 0, N = 0;
  BiasKind bias_kind = BiasKind::kNone;
  // The dtype of Y, the bias, the loss, dY and db: X's, or float32 under a
  // float16/bfloat16 X (the mixed precision of autocast, where the GEMMs run
  // in the low precision and the residual and the loss in float32).
  at::ScalarType target_dtype = at::kFloat;
  bool relu = true;
  GradRequest want;
  // The loss is scale * sum(R²): the op's scale, times 1/(M*N) for "mean"
  // (inf when M*N == 0, which makes the mean of nothing NaN, as torch's mean
  // does).
  double scale = 1.0;

  bool has_y() const { return Y.defined(); }
  bool has_bias() const { return bias_kind != BiasKind::kNone; }
  // A float32 target under a float16/bfloat16 X.
  bool mixed() const { return target_dtype != X.scalar_type(); }

  // Outputs, allocated in the callers' shapes. Gradients that were not
  // requested are empty placeholders of shape (0,).
  at::Tensor loss, dW, dX, dY, db;
  // 2-D views of dX, dY and (for a full bias) db that the kernels write through.
  at::Tensor dX2, dY2, db2;

  GradsResult result() const { return {loss, dW, dX, dY, db}; }
};

// M: the rows in X's leading dimensions, (*, K) -> prod(*). Taken from the
// shape, not numel / K, which is 0 / 0 when K == 0; and overflow-checked,
// since with K == 0 the leading dimensions hold no data and so are not
// bounded by memory.
int64_t leading_rows(const at::Tensor& X);

// 1 for "sum", 1/numel for "mean" (inf for numel == 0, so that the mean over
// nothing is NaN as in torch.mean); anything else raises ValueError.
double reduction_scale(std::string_view reduction, int64_t numel);

// True for "relu", false for None (the identity); anything else raises
// ValueError.
bool parse_activation(const std::optional<std::string_view>& activation);

// An uninitialised output tensor; on CPU without a trip through the
// dispatcher.
at::Tensor empty_output(at::IntArrayRef sizes, const at::TensorOptions& options);

// Validates the arguments (raising ValueError/TypeError that name X, W, Y,
// bias, activation or reduction) and allocates the outputs on X's device.
// Y and bias may be undefined tensors (None).
GradsPlan make_grads_plan(const at::Tensor& X, const at::Tensor& W, const at::Tensor& Y,
                          const at::Tensor& bias, const GradsOptions& options, GradRequest want);

}  // namespace relufrob
