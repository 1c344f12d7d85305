// The definition of grads_on_isa (grads_kernels.h), included only by the
// files in instances/ that instantiate it.
#pragma once

#include "blocked_kernel.h"
#include "cpu_isa.h"
#include "direct_kernel.h"
#include "grads_kernels.h"

namespace relufrob::cpu {

template <typename Isa, typename scalar_t, typename target_t>
double grads_on_isa(const GradsPlan& p) {
  return use_direct<Isa>(p) ? direct_grads<Isa, scalar_t, target_t>(p)
                            : blocked_grads<Isa, scalar_t, target_t>(p);
}

}  // namespace relufrob::cpu

// One ISA's kernels for an X dtype whose target is the same dtype (float32,
// float64), and for one that may also have a float32 target (float16,
// bfloat16 under autocast: dtype_dispatch.h).
#define RELUFROB_INSTANTIATE_GRADS(Isa, scalar_t) \
  template double relufrob::cpu::grads_on_isa<Isa, scalar_t, scalar_t>(const relufrob::GradsPlan&);
#define RELUFROB_INSTANTIATE_GRADS_MIXED(Isa, scalar_t) \
  RELUFROB_INSTANTIATE_GRADS(Isa, scalar_t)             \
  template double relufrob::cpu::grads_on_isa<Isa, scalar_t, float>(const relufrob::GradsPlan&);
