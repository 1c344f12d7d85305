// grads_on_isa for IsaBaseline, float64 X (grads_kernels.h).
#include "../grads_instances.h"

RELUFROB_INSTANTIATE_GRADS(relufrob::cpu::IsaBaseline, double)
