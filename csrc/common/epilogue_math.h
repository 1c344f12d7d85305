// The elementwise half of the op, written once for every backend.
//
// Everything here is a pure function of scalars so that the CPU loops and the
// CUDA kernels share one definition of the conventions that hand-written
// kernels usually get wrong (see docs/math.md). This header must stay free of
// ATen/torch includes: it is compiled by nvcc inside framework-free device
// headers too.
#pragma once

#if defined(__CUDACC__) || defined(__HIPCC__)
#define RELUFROB_HD __host__ __device__ __forceinline__
#else
#define RELUFROB_HD inline
#endif

namespace relufrob {

// relu(NaN) must stay NaN, as torch.relu does; a plain `z > 0 ? z : 0` would
// silently turn NaN into 0 and hide it from the loss and dY. `!(z <= 0)` is
// true for z > 0 and for NaN in one comparison, which keeps the select
// branch-free so that CPU loops vectorise.
template <typename T>
RELUFROB_HD T relu(T z) {
  return !(z <= T(0)) ? z : T(0);
}

// The ReLU gradient mask is taken on the *output*, as autograd's
// threshold_backward(grad, result, 0) does: the gradient is zeroed where
// `result <= 0`. So it is false at z == 0, and *true* at NaN (NaN <= 0 is
// false), letting the NaN residual through to G as autograd does.
template <typename T>
RELUFROB_HD bool relu_mask(T a) {
  return !(a <= T(0));
}

// Z = XW + b: the bias is added to the finished product, as `X @ W + b` does.
template <typename T>
RELUFROB_HD T add_bias(T xw, T b) {
  return xw + b;
}

template <typename T>
RELUFROB_HD T residual(T a, T y) {
  return a - y;
}

template <typename T>
RELUFROB_HD T loss_term(T r) {
  return r * r;
}

// `two_scale` is 2 for reduction="sum" and 2/(M*N) for "mean" (times the
// op's explicit scale). Folding the scale into G before the GEMMs (instead of
// scaling dW/dX afterwards) keeps 0 * inf out of the empty-dimension cases.
template <typename T>
RELUFROB_HD T grad_y(T r, T two_scale) {
  return -(two_scale * r);
}

// The activation of the general form f = scale * ||act(XW + b) - Y||²:
// relu, or the identity (no mask: every element gets its gradient).
template <bool kRelu, typename T>
RELUFROB_HD T activate(T z) {
  if constexpr (kRelu) {
    return relu(z);
  } else {
    return z;
  }
}

// The masked entries are written as exact zeros, never skipped: the GEMMs that
// consume G must still see NaN * 0 = NaN where X or W hold NaN/Inf.
template <bool kRelu, typename T>
RELUFROB_HD T grad_z(T a, T r, T two_scale) {
  if constexpr (kRelu) {
    return relu_mask(a) ? two_scale * r : T(0);
  } else {
    return two_scale * r;
  }
}

// Everything the epilogue derives from one element of Z = XW + b and Y (a
// missing Y is a target of zeros: a - 0 is a bitwise, -0 included).
template <typename T>
struct EpilogueValues {
  T g;   // df/dZ, the G consumed by the gradient GEMMs (and df/db)
  T dy;  // df/dY
  T sq;  // this element's contribution to the (unscaled) loss
};

template <bool kRelu, typename T>
RELUFROB_HD EpilogueValues<T> epilogue(T z, T y, T two_scale) {
  const T a = activate<kRelu>(z);
  const T r = residual(a, y);
  return {grad_z<kRelu>(a, r, two_scale), grad_y(r, two_scale), loss_term(r)};
}

}  // namespace relufrob
