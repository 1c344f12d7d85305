// CPU implementation of relufrob::grads: the kernel for the plan's dtypes and
// the active ISA (cpu_isa.h), each compiled in its own file (grads_kernels.h).
#include "../common/dtype_dispatch.h"
#include "../common/grads_op.h"
#include "cpu_isa.h"
#include "grads_kernels.h"

#include <torch/library.h>

namespace relufrob::cpu {
namespace {

// scalar_t: X and W; target_t: Y and bias (see grads_kernels.h).
template <typename scalar_t, typename target_t>
void run_typed(GradsPlan& p) {
  const double sum =
      dispatch_isa([&](auto isa) { return grads_on_isa<decltype(isa), scalar_t, target_t>(p); });
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
