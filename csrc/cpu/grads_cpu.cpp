// CPU implementation of relufrob::grads: picks the direct loops for small
// problems and the row-blocked GEMM pipeline otherwise, each compiled for the
// active ISA (cpu_isa.h).
#include "../common/dtype_dispatch.h"
#include "../common/grads_op.h"
#include "blocked_kernel.h"
#include "cpu_isa.h"
#include "direct_kernel.h"

#include <torch/library.h>

namespace relufrob::cpu {
namespace {

// The fused small kernel beats three BLAS calls while W (and its transpose)
// stay in L2 and the problem is small enough that BLAS set-up dominates; how
// small depends on the ISA (cpu_isa.h).
constexpr int64_t kDirectMaxDim = 256;

template <typename Isa>
bool use_direct(const GradsPlan& p) {
  return p.M * p.K * p.N <= Isa::kDirectMaxMacs && p.K <= kDirectMaxDim && p.N <= kDirectMaxDim;
}

// scalar_t: X and W; target_t: Y and bias (see direct_grads).
template <typename scalar_t, typename target_t>
void run_typed(GradsPlan& p) {
  const double sum = dispatch_isa([&](auto isa) {
    using Isa = decltype(isa);
    return use_direct<Isa>(p) ? direct_grads<Isa, scalar_t, target_t>(p)
                              : blocked_grads<Isa, scalar_t, target_t>(p);
  });
  *p.loss.data_ptr<target_t>() = static_cast<target_t>(sum * p.scale);
}

void run_cpu(GradsPlan& p) {
  if (p.M * p.N == 0) {
    // No residuals: the loss is 0 (NaN for the mean over nothing) and the
    // gradients that are sums over them are zeros. Answered directly, since M
    // can be huge when K and N are both 0, and walking its rows would do
    // nothing for a long time.
    p.loss.fill_(0.0 * p.scale);
    if (p.want.dW) p.dW.zero_();
    if (p.want.dX) p.dX.zero_();
    if (p.want.db) p.db.zero_();
    return;
  }
  dispatch_dtypes(p, [&](auto x_dtype, auto target_dtype) {
    run_typed<typename decltype(x_dtype)::type, typename decltype(target_dtype)::type>(p);
  });
}

}  // namespace
}  // namespace relufrob::cpu

TORCH_LIBRARY_IMPL(relufrob, CPU, m) {
  m.impl("grads", &relufrob::grads_kernel<&relufrob::cpu::run_cpu>);
}
