// The dtype pairs every backend instantiates its kernels for, chosen in one
// place: X's dtype (X, W, dX, dW; Z and G on CUDA) and the target's (Y, bias,
// the loss, dY, db). They are the same, except that a float16/bfloat16 X may
// have a float32 target (mixed precision, as torch.autocast produces).
#pragma once

#include "grads_plan.h"

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>

#include <type_traits>

namespace relufrob {

template <typename T>
struct DtypeTag {
  using type = T;
};

// Calls fn(DtypeTag<scalar_t>{}, DtypeTag<target_t>{}) for plan p's dtypes.
template <typename F>
void dispatch_dtypes(const GradsPlan& p, F&& fn) {
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, p.X.scalar_type(), "relufrob_grads", [&] {
        if constexpr (!std::is_same_v<scalar_t, at::opmath_type<scalar_t>>) {
          if (p.mixed()) return fn(DtypeTag<scalar_t>{}, DtypeTag<float>{});
        }
        fn(DtypeTag<scalar_t>{}, DtypeTag<scalar_t>{});
      });
}

}  // namespace relufrob
