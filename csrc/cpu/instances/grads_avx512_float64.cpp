// grads_on_isa for IsaAvx512, float64 X (grads_kernels.h).
#include "../grads_instances.h"

RELUFROB_INSTANTIATE_GRADS(relufrob::cpu::IsaAvx512, double)
