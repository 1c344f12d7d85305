// relufrob::per_sample_grads returns norms and clipped gradient sums, not
// something to differentiate: like relufrob::grads, its Autograd kernel steps
// below autograd for the whole call, so its outputs never carry a graph.
#include "../common/per_sample_op.h"

#include <ATen/core/LegacyTypeDispatch.h>
#include <torch/library.h>

namespace relufrob {
namespace {

PerSampleResult per_sample_autograd(c10::DispatchKeySet keys, const at::Tensor& X,
                                    const at::Tensor& W, const OptionalTensor& Y,
                                    const OptionalTensor& bias, OptionalString activation,
                                    std::optional<double> max_norm, c10::string_view route,
                                    bool need_dW, bool need_db) {
  const at::AutoDispatchBelowADInplaceOrView guard;
  return per_sample_op().redispatch(keys & c10::after_ADInplaceOrView_keyset, X, W, Y, bias,
                                    activation, max_norm, route, need_dW, need_db);
}

}  // namespace
}  // namespace relufrob

TORCH_LIBRARY_IMPL(relufrob, Autograd, m) {
  m.impl("per_sample_grads", &relufrob::per_sample_autograd);
}
