// grads_on_isa for IsaAvx512, bfloat16 X (grads_kernels.h).
#include "../grads_instances.h"

RELUFROB_INSTANTIATE_GRADS_MIXED(relufrob::cpu::IsaAvx512, c10::BFloat16)
