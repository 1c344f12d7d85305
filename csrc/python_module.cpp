// The Python extension module relufrob._C. Importing it runs the static
// TORCH_LIBRARY registrations. Besides build facts and which CPU kernels
// run, it offers grads_fast, a
// METH_FASTCALL binding of relufrob::grads: the op still goes through the
// dispatcher, but skips torch.ops' (and pybind11's) generic argument handling,
// which costs several times more than the whole 10x4x4 computation.
#include "build_config.h"
#include "common/grads_op.h"
#include "cpu/cpu_isa.h"
#include "cpu/tiled_gemm.h"

#include <torch/csrc/Exceptions.h>
#include <torch/csrc/autograd/python_variable.h>
#include <torch/csrc/utils/pybind.h>

#include <optional>

namespace py = pybind11;

namespace {

// relufrob.Grads, registered by the Python package at import.
PyObject* grads_type = nullptr;

// relufrob.grads' fast path, as a METH_FASTCALL function: for a 10x4x4
// problem pybind11's generic argument handling and building the named tuple
// in Python cost as much as everything else together. Arguments:
// (X, W, Y, need_dW, need_dX, need_dY, reduction). Returns None, without
// raising, when X, W or Y is not a tensor or reduction not a str, so that the
// caller's general path can produce its usual error; errors raised by the op
// itself propagate as Python exceptions.
PyObject* grads_fast(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  HANDLE_TH_ERRORS
  TORCH_CHECK_TYPE(nargs == 7 && grads_type, "relufrob._C.grads_fast: bad call");
  for (int i = 0; i < 3; ++i) {
    if (!THPVariable_Check(args[i])) Py_RETURN_NONE;
  }
  Py_ssize_t len = 0;
  const char* red = PyUnicode_Check(args[6]) ? PyUnicode_AsUTF8AndSize(args[6], &len) : nullptr;
  if (!red) {
    PyErr_Clear();
    Py_RETURN_NONE;
  }
  const relufrob::GradRequest want{PyObject_IsTrue(args[3]) == 1, PyObject_IsTrue(args[4]) == 1,
                                   PyObject_IsTrue(args[5]) == 1};
  const at::Tensor& X = THPVariable_Unpack(args[0]);
  const at::Tensor& W = THPVariable_Unpack(args[1]);
  const at::Tensor& Y = THPVariable_Unpack(args[2]);
  relufrob::GradsResult out;
  {
    // Other Python threads may run while a real problem computes; for a tiny
    // one, releasing and retaking the GIL would cost more than the work. (The
    // size is taken in double: the inputs are not validated yet.)
    const bool tiny =
        static_cast<double>(Y.numel()) * static_cast<double>(W.dim() > 0 ? W.size(0) : 0) < 65536.0;
    std::optional<py::gil_scoped_release> no_gil;
    if (!tiny) no_gil.emplace();
    out = relufrob::call_grads_op(X, W, Y, want, std::string_view(red, len));
  }
  auto& [loss, dW, dX, dY] = out;
  const auto wrap = [](at::Tensor& t, bool wanted) {
    if (!wanted) Py_RETURN_NONE;
    return THPVariable_Wrap(std::move(t));
  };
  PyObject* items = PyTuple_New(4);
  if (!items) return nullptr;
  PyTuple_SET_ITEM(items, 0, THPVariable_Wrap(std::move(loss)));
  PyTuple_SET_ITEM(items, 1, wrap(dW, want.dW));
  PyTuple_SET_ITEM(items, 2, wrap(dX, want.dX));
  PyTuple_SET_ITEM(items, 3, wrap(dY, want.dY));
  // tuple.__new__(Grads, items): a named tuple is a plain tuple subclass.
  PyObject* new_args = PyTuple_Pack(1, items);
  Py_DECREF(items);
  if (!new_args) return nullptr;
  PyObject* result =
      PyTuple_Type.tp_new(reinterpret_cast<PyTypeObject*>(grads_type), new_args, nullptr);
  Py_DECREF(new_args);
  return result;
  END_HANDLE_TH_ERRORS
}

PyMethodDef fast_methods[] = {
    {"grads_fast", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(grads_fast)),
     METH_FASTCALL, "relufrob.grads' fast path (see python_module.cpp)."},
    {nullptr, nullptr, 0, nullptr}};

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "relufrob kernels; the operators live in torch.ops.relufrob";
  if (PyModule_AddFunctions(m.ptr(), fast_methods) != 0) throw py::error_already_set();
  m.def(
      "_set_grads_type",
      [](py::object type) {
        Py_XDECREF(grads_type);
        grads_type = type.release().ptr();
      },
      "Registers relufrob.Grads, the type grads_fast returns.");
  m.def(
      "build_info",
      [] {
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
      },
      "How this copy of relufrob._C was compiled.");
  m.def(
      "cpu_kernels",
      [] {
        namespace cpu = relufrob::cpu;
        py::dict info;
        info["isa"] = cpu::isa_name(cpu::active_isa());
        info["gemm"] = cpu::gemm_backend_name(cpu::gemm_backend());
        return info;
      },
      "The CPU kernels this process runs: their ISA and the large-problem GEMM backend.");
  // The benchmark's brgemm floor: the machine's brgemm GEMMs, tiled exactly
  // as relufrob's large-problem path tiles them.
  m.def(
      "_brgemm_mm",
      [](const at::Tensor& a, const at::Tensor& b, at::Tensor& out) {
        for (const at::Tensor* t : std::initializer_list<const at::Tensor*>{&a, &b, &out}) {
          TORCH_CHECK_VALUE(t->device().is_cpu() && t->scalar_type() == at::kFloat &&
                                t->dim() == 2 && t->is_contiguous(),
                            "_brgemm_mm: a, b and out must be contiguous 2-D float32 CPU tensors");
        }
        TORCH_CHECK_VALUE(
            a.size(1) == b.size(0) && out.size(0) == a.size(0) && out.size(1) == b.size(1),
            "_brgemm_mm: shapes do not chain: ", a.sizes(), " @ ", b.sizes(), " -> ", out.sizes());
        const py::gil_scoped_release no_gil;
        relufrob::cpu::tiled_gemm(a.size(0), b.size(1), a.size(1), a.const_data_ptr<float>(),
                                  a.size(1), b.const_data_ptr<float>(), b.size(1),
                                  out.data_ptr<float>(), out.size(1), /*accumulate=*/false);
      },
      "out = a @ b on brgemm tiles (contiguous float32 CPU): the benchmark's brgemm floor.");
}
