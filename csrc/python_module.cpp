// The Python extension module relufrob._C. Importing it runs the static
// TORCH_LIBRARY registrations. Besides build facts, it offers a direct
// binding of relufrob::grads: the op still goes through the dispatcher, but
// skips torch.ops' generic Python argument matching, which costs several times
// more than the whole 10x4x4 computation.
#include "build_config.h"
#include "common/grads_op.h"

#include <torch/csrc/utils/pybind.h>

#include <optional>

namespace py = pybind11;

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "relufrob kernels; the operators live in torch.ops.relufrob";
  m.def(
      "grads",
      [](const at::Tensor& X, const at::Tensor& W, const at::Tensor& Y,
         bool need_dW, bool need_dX, bool need_dY, std::string_view reduction) {
        // Other Python threads may run while a real problem computes; for a
        // tiny one, releasing and retaking the GIL would cost more than the
        // whole computation.
        // (In double: the inputs are not validated yet, and an int64 product
        // of arbitrary sizes could overflow.)
        const bool tiny = static_cast<double>(Y.numel()) *
                              static_cast<double>(W.dim() > 0 ? W.size(0) : 0) <
                          65536.0;
        std::optional<py::gil_scoped_release> no_gil;
        if (!tiny) no_gil.emplace();
        return relufrob::call_grads_op(X, W, Y, {need_dW, need_dX, need_dY},
                                       reduction);
      },
      "relufrob::grads through the dispatcher, without torch.ops' Python layer.");
  m.def("build_info", [] {
    py::dict info;
#ifdef RELUFROB_WITH_CUDA
    info["cuda"] = true;
#else
    info["cuda"] = false;
#endif
    info["cuda_archs"] = std::string(RELUFROB_CUDA_ARCHS);
    info["torch_version"] = std::string(RELUFROB_TORCH_VERSION);
#ifdef _OPENMP
    info["openmp"] = true;
#else
    info["openmp"] = false;
#endif
    return info;
  }, "How this copy of relufrob._C was compiled.");
}
