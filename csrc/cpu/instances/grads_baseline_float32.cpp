// grads_on_isa for IsaBaseline, float32 X (grads_kernels.h).
#include "../grads_instances.h"

RELUFROB_INSTANTIATE_GRADS(relufrob::cpu::IsaBaseline, float)
