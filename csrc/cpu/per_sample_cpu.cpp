// CPU implementation of relufrob::per_sample_grads (per_sample_kernel.h),
// compiled for the active ISA; float32 and float64 only (the Python
// functions widen float16/bfloat16).
#include "../common/per_sample_op.h"
#include "cpu_isa.h"
#include "per_sample_kernel.h"

#include <torch/library.h>

namespace relufrob::cpu {
namespace {

void run_per_sample_cpu(PerSamplePlan& ps) {
  if (answer_empty(ps)) return;
  GradsPlan& p = ps.grads;
  AT_DISPATCH_FLOATING_TYPES(p.X.scalar_type(), "relufrob_per_sample", [&] {
    const double loss =
        dispatch_isa([&](auto isa) { return per_sample_grads<decltype(isa), scalar_t>(ps); });
    *p.loss.data_ptr<scalar_t>() = static_cast<scalar_t>(loss);
  });
}

}  // namespace
}  // namespace relufrob::cpu

TORCH_LIBRARY_IMPL(relufrob, CPU, m) {
  m.impl("per_sample_grads", &relufrob::per_sample_kernel<&relufrob::cpu::run_per_sample_cpu>);
}
