// The CPU grads kernel for one ISA and dtype pair: declared here, defined in
// grads_instances.h and explicitly instantiated in instances/, one file per
// ISA x X dtype. In one translation unit the 18 instantiations took over 5
// minutes to compile (2-core Xeon), and every edit of a CPU header paid that
// wait; split, ninja compiles them side by side and the caller
// (grads_cpu.cpp) compiles in seconds.
#pragma once

#include "../common/grads_plan.h"

namespace relufrob::cpu {

// The loss (before the plan's scale) of plan p, whose outputs it fills.
// scalar_t: X, W, dX and dW; target_t: Y, bias, dY and db (scalar_t, or
// float under a float16/bfloat16 scalar_t).
template <typename Isa, typename scalar_t, typename target_t>
double grads_on_isa(const GradsPlan& p);

}  // namespace relufrob::cpu
