// grads_on_isa for IsaBaseline, bfloat16 X (grads_kernels.h).
#include "../grads_instances.h"

RELUFROB_INSTANTIATE_GRADS_MIXED(relufrob::cpu::IsaBaseline, c10::BFloat16)
