#include "grads_plan.h"

#include <ATen/ATen.h>
#include <ATen/EmptyTensor.h>
#include <c10/util/Exception.h>
#include <c10/util/safe_numerics.h>

#include <cmath>
#include <utility>
#include <vector>

#if __has_include(<unistd.h>)
#include <unistd.h>
#endif

namespace relufrob {
namespace {

// Both public entry points (relufrob.grads and relufrob.loss) validate here.
constexpr const char* kOp = "relufrob";

// "torch.float32", as Python users write dtypes, rather than ATen's "Float".
std::string dtype_name(at::ScalarType dt) {
  return "torch." + std::string(c10::getDtypeNames(dt).first);
}

void check_tensor_kind(const at::Tensor& t, const char* name) {
  TORCH_CHECK_TYPE(t.defined(), kOp, ": ", name, " must be a tensor, got None");
  TORCH_CHECK_VALUE(t.layout() == at::kStrided, kOp, ": ", name,
                    " must be a dense (strided) tensor, got layout ", t.layout());
  const auto dt = t.scalar_type();
  TORCH_CHECK_TYPE(dt == at::kFloat || dt == at::kDouble || dt == at::kHalf || dt == at::kBFloat16,
                   kOp, ": ", name,
                   " must be a floating-point tensor (float16, bfloat16, "
                   "float32 or float64), got ",
                   dtype_name(dt));
}

at::Tensor as_contiguous_2d(const at::Tensor& t, int64_t rows, int64_t cols) {
  // The common case, tested first: each reshape/contiguous is a dispatcher
  // call, which is most of the cost of a tiny problem.
  if (t.dim() == 2 && t.is_contiguous()) return t;
  // reshape is free for the common contiguous case and copies only when the
  // caller's strides (transposes, steps, expand) cannot be viewed as (rows, cols).
  return t.reshape({rows, cols}).contiguous();
}

}  // namespace

int64_t leading_rows(const at::Tensor& X) {
  int64_t rows = 1;
  for (int64_t d = 0; d + 1 < X.dim(); ++d) {
    TORCH_CHECK_VALUE(!c10::mul_overflows(rows, X.size(d), &rows), kOp,
                      ": X has more rows than int64 can count, shape ", X.sizes());
  }
  return rows;
}

double reduction_scale(std::string_view reduction, int64_t numel) {
  if (reduction == "sum") return 1.0;
  TORCH_CHECK_VALUE(reduction == "mean", kOp, ": reduction must be 'sum' or 'mean', got '",
                    std::string(reduction), "'");
  return 1.0 / static_cast<double>(numel);
}

bool parse_activation(const std::optional<std::string_view>& activation) {
  if (!activation) return false;
  TORCH_CHECK_VALUE(*activation == "relu", kOp, ": activation must be 'relu' or None, got '",
                    std::string(*activation), "'");
  return true;
}

namespace {

// The dtype that Y, bias, the loss, dY and db share: Y's, else bias's, else
// X's. It is X's, or float32 when X is float16/bfloat16: a low-precision
// GEMM with a float32 target, as autocast produces.
at::ScalarType target_dtype(const at::Tensor& X, const at::Tensor& Y, const at::Tensor& bias) {
  if (Y.defined()) return Y.scalar_type();
  if (bias.defined()) return bias.scalar_type();
  return X.scalar_type();
}

bool is_reduced_float(at::ScalarType dt) { return dt == at::kHalf || dt == at::kBFloat16; }

// W, then Y and bias where given: every dtype first, then every device.
void check_same_dtype_and_device(const at::Tensor& X, const at::Tensor& W, const at::Tensor& Y,
                                 const at::Tensor& bias) {
  const auto xdt = X.scalar_type();
  TORCH_CHECK_TYPE(W.scalar_type() == xdt, kOp, ": W must have the same dtype as X (",
                   dtype_name(xdt), "), got ", dtype_name(W.scalar_type()));
  const bool reduced = is_reduced_float(xdt);
  const auto allowed = [&](at::ScalarType dt) {
    return dt == xdt || (reduced && dt == at::kFloat);
  };
  const std::pair<const char*, const at::Tensor*> targets[] = {{"Y", &Y}, {"bias", &bias}};
  for (const auto& [name, t] : targets) {
    if (!t->defined()) continue;
    TORCH_CHECK_TYPE(allowed(t->scalar_type()), kOp, ": ", name, " must have the same dtype as X (",
                     dtype_name(xdt), reduced ? "), or torch.float32, got " : "), got ",
                     dtype_name(t->scalar_type()));
  }
  TORCH_CHECK_TYPE(!Y.defined() || !bias.defined() || bias.scalar_type() == Y.scalar_type(), kOp,
                   ": bias must have the same dtype as Y (", dtype_name(Y.scalar_type()), "), got ",
                   dtype_name(bias.scalar_type()));
  const std::pair<const char*, const at::Tensor*> others[] = {
      {"W", &W}, {"Y", &Y}, {"bias", &bias}};
  for (const auto& [name, t] : others) {
    TORCH_CHECK_VALUE(!t->defined() || t->device() == X.device(), kOp, ": ", name,
                      " must be on the same device as X (", X.device(), "), got ", t->device());
  }
}

// Physical memory, or 0 where it cannot be told.
double physical_memory_bytes() {
#if defined(_SC_PHYS_PAGES) && defined(_SC_PAGE_SIZE)
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
  if (pages > 0 && page > 0) return static_cast<double>(pages) * static_cast<double>(page);
#endif
  return 0.0;
}

// (N,) is nn.Linear's bias; the output's shape (*, N) is the exercise's. For
// a 1-D X both are (N,), and both readings give the same numbers.
BiasKind check_bias(const at::Tensor& bias, const at::Tensor& X, int64_t N) {
  if (!bias.defined()) return BiasKind::kNone;
  check_tensor_kind(bias, "bias");
  if (bias.dim() == 1 && bias.size(0) == N) return BiasKind::kRow;
  std::vector<int64_t> out_shape = X.sizes().vec();
  out_shape.back() = N;
  TORCH_CHECK_VALUE(bias.sizes() == c10::IntArrayRef(out_shape), kOp,
                    ": bias must have shape (N,) = (", N,
                    ",) or the output's shape (*, N) = ", c10::IntArrayRef(out_shape),
                    ", got bias shape ", bias.sizes());
  return BiasKind::kFull;
}

// Bytes of an (rows, cols) copy of t, or 0 when t is used in place.
double copy_bytes(const at::Tensor& t, int64_t rows, int64_t cols) {
  return t.is_contiguous() ? 0.0 : static_cast<double>(rows) * cols * t.element_size();
}

// An expanded input (stride 0) is tiny in memory but is copied to its full
// size, and the outputs have its full size too: 2^31 expanded rows make
// gigabytes. Failing here, before any copy, takes no time; running out of
// memory in the middle of the copies takes seconds or gets the process
// killed.
void check_fits_in_memory(const at::Tensor& X, const at::Tensor& W, const at::Tensor& Y,
                          const at::Tensor& bias, const GradsPlan& p, const GradRequest& want) {
  const double elem = static_cast<double>(X.element_size());
  const double rows = static_cast<double>(p.M);
  double bytes = copy_bytes(X, p.M, p.K);
  if (Y.defined()) bytes += copy_bytes(Y, p.M, p.N);
  const bool full_bias = p.bias_kind == BiasKind::kFull;
  if (full_bias) bytes += copy_bytes(bias, p.M, p.N);
  bytes += elem * ((want.dX ? rows * p.K : 0.0) + (want.dY ? rows * p.N : 0.0) +
                   (want.db && full_bias ? rows * p.N : 0.0));
  // W's own copy and dW are K x N whatever M is: an expanded W of 2^40
  // columns is refused by its own name.
  const double w_bytes = copy_bytes(W, p.K, p.N) + (want.dW ? elem * p.K * p.N : 0.0);
  constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;
  if (bytes + w_bytes < kGiB) return;  // the common case, without asking the OS
  static const double memory = physical_memory_bytes();
  if (memory <= 0 || bytes + w_bytes <= memory) return;
  TORCH_CHECK_WITH(OutOfMemoryError, w_bytes < bytes, kOp, ": W has shape (", p.K, ", ", p.N,
                   ") (expanded or not); its contiguous copy and dW need ", w_bytes / kGiB,
                   " GiB, more than this machine's ", memory / kGiB, " GiB of memory allows");
  TORCH_CHECK_WITH(OutOfMemoryError, false, kOp, ": X has ", p.M,
                   " rows (with its leading dimensions, expanded or not); the copies of the "
                   "inputs that are not contiguous and the outputs need ",
                   bytes / kGiB, " GiB, more than this machine's ", memory / kGiB,
                   " GiB of memory");
}

}  // namespace

at::Tensor empty_output(at::IntArrayRef sizes, const at::TensorOptions& options) {
  // On CPU, allocate directly: going through the dispatcher for each of the
  // outputs is a measurable share of a 10x4x4 call.
  return options.device().is_cpu() ? at::detail::empty_cpu(sizes, options)
                                   : at::empty(sizes, options);
}

GradsPlan make_grads_plan(const at::Tensor& X, const at::Tensor& W, const at::Tensor& Y,
                          const at::Tensor& bias, const GradsOptions& options, GradRequest want) {
  check_tensor_kind(X, "X");
  check_tensor_kind(W, "W");
  if (Y.defined()) check_tensor_kind(Y, "Y");

  TORCH_CHECK_VALUE(X.dim() >= 1, kOp,
                    ": X must have shape (*, K) with at least 1 dimension, got "
                    "shape ",
                    X.sizes());
  TORCH_CHECK_VALUE(W.dim() == 2, kOp, ": W must be 2-D (K, N), got shape ", W.sizes());
  const int64_t K = X.size(-1);
  TORCH_CHECK_VALUE(W.size(0) == K, kOp, ": W must have shape (K, N) with K = X.shape[-1] = ", K,
                    ", got W shape ", W.sizes());
  const int64_t N = W.size(1);
  if (Y.defined()) {
    TORCH_CHECK_VALUE(
        Y.dim() == X.dim() && Y.sizes().slice(0, Y.dim() - 1) == X.sizes().slice(0, X.dim() - 1) &&
            Y.size(-1) == N,
        kOp, ": Y must have shape (*, N) with X's leading dimensions ",
        X.sizes().slice(0, X.dim() - 1), " and N = W.shape[1] = ", N, ", got Y shape ", Y.sizes());
  }
  const BiasKind bias_kind = check_bias(bias, X, N);

  check_same_dtype_and_device(X, W, Y, bias);

  GradsPlan p;
  p.relu = parse_activation(options.activation);
  p.K = K;
  p.N = N;
  p.M = leading_rows(X);
  p.bias_kind = bias_kind;
  p.target_dtype = target_dtype(X, Y, bias);
  want.dY = want.dY && Y.defined();
  want.db = want.db && bias.defined();
  p.want = want;
  int64_t numel = 0;
  TORCH_CHECK_VALUE(!c10::mul_overflows(p.M, N, &numel), kOp,
                    ": the output (*, N) has more elements than int64 can count");
  // A NaN or infinite scale would silently make every output NaN or Inf.
  TORCH_CHECK_VALUE(std::isfinite(options.scale), kOp, ": scale must be a finite number, got ",
                    options.scale);
  p.scale = options.scale * reduction_scale(options.reduction, numel);

  if (X.is_cpu()) check_fits_in_memory(X, W, Y, bias, p, want);

  p.X = as_contiguous_2d(X, p.M, K);
  p.W = W.is_contiguous() ? W : W.contiguous();
  if (Y.defined()) p.Y = as_contiguous_2d(Y, p.M, N);
  if (bias_kind == BiasKind::kRow) p.bias = bias.is_contiguous() ? bias : bias.contiguous();
  if (bias_kind == BiasKind::kFull) p.bias = as_contiguous_2d(bias, p.M, N);

  const auto opts = X.options();
  const auto target_opts = opts.dtype(p.target_dtype);
  const auto empty = [&](at::IntArrayRef sizes) { return empty_output(sizes, opts); };
  const auto placeholder = [&] { return empty({0}); };
  p.loss = empty_output({}, target_opts);
  p.dW = want.dW ? empty({K, N}) : placeholder();
  // A view is a dispatcher call too; 2-D outputs need none.
  const auto as_2d = [](const at::Tensor& t, int64_t rows, int64_t cols) {
    return t.dim() == 2 ? t : t.view({rows, cols});
  };
  if (want.dX) {
    p.dX = empty(X.sizes());
    p.dX2 = as_2d(p.dX, p.M, K);
  } else {
    p.dX = placeholder();
  }
  if (want.dY) {
    p.dY = empty_output(Y.sizes(), target_opts);
    p.dY2 = as_2d(p.dY, p.M, N);
  } else {
    p.dY = placeholder();
  }
  if (want.db) {
    p.db = empty_output(bias.sizes(), target_opts);
    if (bias_kind == BiasKind::kFull) p.db2 = as_2d(p.db, p.M, N);
  } else {
    p.db = placeholder();
  }
  return p;
}

}  // namespace relufrob
