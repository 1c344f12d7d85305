// The Python extension module relufrob._C. Importing it runs the static
// TORCH_LIBRARY registrations. Besides build facts and which CPU kernels
// run, it offers grads_fast and per_sample_fast, METH_FASTCALL bindings of
// relufrob::grads and relufrob::per_sample_grads: the op still goes through
// the dispatcher, but skips torch.ops' (and pybind11's) generic argument
// handling, which costs several times more than the whole 10x4x4 computation.
#include "build_config.h"
#include "common/grads_op.h"
#include "common/per_sample_op.h"
#include "cpu/cpu_isa.h"
#include "cpu/tiled_gemm.h"

#include <torch/csrc/Exceptions.h>
#include <torch/csrc/autograd/python_variable.h>
#include <torch/csrc/utils/pybind.h>

#include <optional>

namespace py = pybind11;

namespace {

// relufrob.Grads and relufrob.GradsWithBias, registered by the Python
// package at import.
PyObject* grads_type = nullptr;
PyObject* grads_with_bias_type = nullptr;
// relufrob.PerSampleNorms and relufrob.ClippedGrads, likewise.
PyObject* norms_type = nullptr;
PyObject* clipped_type = nullptr;

// An instance of the named tuple `type` holding `items` (references stolen).
// A named tuple is a plain tuple subclass with no fields of its own, so its
// instance is allocated and filled as a tuple is: no intermediate tuples
// (tuple.__new__ would copy from one).
PyObject* named_tuple(PyObject* type, std::initializer_list<PyObject*> items) {
  auto* t = reinterpret_cast<PyTypeObject*>(type);
  PyObject* result = t->tp_alloc(t, static_cast<Py_ssize_t>(items.size()));
  Py_ssize_t i = 0;
  for (PyObject* item : items) {
    if (result) {
      PyTuple_SET_ITEM(result, i++, item);
    } else {
      Py_XDECREF(item);
    }
  }
  return result;
}

// A result as a Python tensor, or None where it was not asked for (a
// placeholder).
PyObject* tensor_or_none(at::Tensor& t, bool wanted) {
  if (!wanted) Py_RETURN_NONE;
  return THPVariable_Wrap(std::move(t));
}

// A tensor argument that may be None: nullopt for None, false for anything
// else that is not a tensor.
bool optional_tensor(PyObject* obj, std::optional<at::Tensor>& out) {
  if (obj == Py_None) return true;
  if (!THPVariable_Check(obj)) return false;
  out = THPVariable_Unpack(obj);
  return true;
}

// A str argument as UTF-8; nullopt for None when allowed; false (with no
// Python error set) for anything else, including a str that has no UTF-8
// form (a lone surrogate).
bool string_arg(PyObject* obj, bool none_ok, std::optional<std::string_view>& out) {
  if (obj == Py_None && none_ok) return true;
  if (!PyUnicode_Check(obj)) return false;
  Py_ssize_t len = 0;
  const char* text = PyUnicode_AsUTF8AndSize(obj, &len);
  if (!text) {
    PyErr_Clear();
    return false;
  }
  out = std::string_view(text, len);
  return true;
}

// Other Python threads may run while a real problem computes; for a tiny one,
// releasing and retaking the GIL would cost more than the work. (The size is
// taken in double: the inputs are not validated yet.)
bool tiny_problem(const at::Tensor& X, const at::Tensor& W) {
  return static_cast<double>(X.numel()) * static_cast<double>(W.dim() > 1 ? W.size(1) : 0) <
         65536.0;
}

// relufrob.grads' fast path, as a METH_FASTCALL function: for a 10x4x4
// problem pybind11's generic argument handling and building the named tuple
// in Python cost as much as everything else together. Arguments:
// (X, W, Y, bias, activation, reduction, need), `need` being None (every
// gradient of the inputs given) or (need_dW, need_dX, need_dY, need_db).
// Returns None, without raising, for arguments it does not take (non-tensors,
// non-str), so that the caller's general path can produce its usual error;
// errors raised by the op itself propagate as Python exceptions.
PyObject* grads_fast(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  HANDLE_TH_ERRORS
  TORCH_CHECK_TYPE(nargs == 7 && grads_type && grads_with_bias_type,
                   "relufrob._C.grads_fast: bad call");
  std::optional<at::Tensor> Y, bias;
  std::optional<std::string_view> activation, reduction;
  if (!THPVariable_Check(args[0]) || !THPVariable_Check(args[1]) || !optional_tensor(args[2], Y) ||
      !optional_tensor(args[3], bias) || !string_arg(args[4], true, activation) ||
      !string_arg(args[5], false, reduction)) {
    Py_RETURN_NONE;
  }
  bool need[4] = {true, true, true, true};
  if (args[6] != Py_None) {
    TORCH_CHECK_TYPE(PyTuple_Check(args[6]) && PyTuple_GET_SIZE(args[6]) == 4,
                     "relufrob._C.grads_fast: need must be None or a 4-tuple");
    for (int i = 0; i < 4; ++i) {
      const int truth = PyObject_IsTrue(PyTuple_GET_ITEM(args[6], i));
      if (truth < 0) return nullptr;  // its __bool__ raised
      need[i] = truth == 1;
    }
  }
  relufrob::GradsOptions options;
  options.activation = activation;
  options.reduction = *reduction;
  const relufrob::GradRequest want{need[0], need[1], need[2] && Y, need[3] && bias};
  const at::Tensor& X = THPVariable_Unpack(args[0]);
  const at::Tensor& W = THPVariable_Unpack(args[1]);
  relufrob::GradsResult out;
  {
    std::optional<py::gil_scoped_release> no_gil;
    if (!tiny_problem(X, W)) no_gil.emplace();
    out = relufrob::call_grads_op(X, W, Y, bias, options, want);
  }
  auto& [loss, dW, dX, dY, db] = out;
  PyObject* first = THPVariable_Wrap(std::move(loss));
  if (bias) {
    return named_tuple(grads_with_bias_type,
                       {first, tensor_or_none(dW, want.dW), tensor_or_none(dX, want.dX),
                        tensor_or_none(dY, want.dY), tensor_or_none(db, want.db)});
  }
  return named_tuple(grads_type, {first, tensor_or_none(dW, want.dW), tensor_or_none(dX, want.dX),
                                  tensor_or_none(dY, want.dY)});
  END_HANDLE_TH_ERRORS
}

// The per-sample functions' fast path, as grads_fast is grads': arguments
// (X, W, Y, bias, activation, max_norm, route, need_dW, need_db), max_norm a
// float or None (validated by the caller); returns PerSampleNorms(loss,
// norms) for max_norm None, else ClippedGrads(loss, dW, db or None, norms),
// or None for arguments it does not take.
PyObject* per_sample_fast(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  HANDLE_TH_ERRORS
  TORCH_CHECK_TYPE(nargs == 9 && norms_type && clipped_type,
                   "relufrob._C.per_sample_fast: bad call");
  std::optional<at::Tensor> Y, bias;
  std::optional<std::string_view> activation, route;
  if (!THPVariable_Check(args[0]) || !THPVariable_Check(args[1]) || !optional_tensor(args[2], Y) ||
      !optional_tensor(args[3], bias) || !string_arg(args[4], true, activation) ||
      !(args[5] == Py_None || PyFloat_CheckExact(args[5])) || !string_arg(args[6], false, route) ||
      !PyBool_Check(args[7]) || !PyBool_Check(args[8])) {
    Py_RETURN_NONE;
  }
  const at::Tensor& X = THPVariable_Unpack(args[0]);
  const at::Tensor& W = THPVariable_Unpack(args[1]);
  // float16/bfloat16 are widened by the caller's general path.
  for (const at::Tensor* t : {&X, &W, Y ? &*Y : &X, bias ? &*bias : &X}) {
    if (t->scalar_type() != at::kFloat && t->scalar_type() != at::kDouble) Py_RETURN_NONE;
  }
  const std::optional<double> max_norm =
      args[5] == Py_None ? std::nullopt : std::optional<double>(PyFloat_AS_DOUBLE(args[5]));
  relufrob::PerSampleResult out;
  {
    std::optional<py::gil_scoped_release> no_gil;
    if (!tiny_problem(X, W)) no_gil.emplace();
    out = relufrob::per_sample_op().call(X, W, Y, bias, relufrob::to_schema(activation), max_norm,
                                         c10::string_view(route->data(), route->size()),
                                         args[7] == Py_True, args[8] == Py_True);
  }
  auto& [loss, norms, dW, db] = out;
  if (!max_norm) {
    return named_tuple(norms_type,
                       {THPVariable_Wrap(std::move(loss)), THPVariable_Wrap(std::move(norms))});
  }
  return named_tuple(clipped_type,
                     {THPVariable_Wrap(std::move(loss)), THPVariable_Wrap(std::move(dW)),
                      tensor_or_none(db, bias.has_value()), THPVariable_Wrap(std::move(norms))});
  END_HANDLE_TH_ERRORS
}

PyMethodDef fast_methods[] = {
    {"grads_fast", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(grads_fast)),
     METH_FASTCALL, "relufrob.grads' fast path (see python_module.cpp)."},
    {"per_sample_fast",
     reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(per_sample_fast)), METH_FASTCALL,
     "The per-sample functions' fast path (see python_module.cpp)."},
    {nullptr, nullptr, 0, nullptr}};

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "relufrob kernels; the operators live in torch.ops.relufrob";
  if (PyModule_AddFunctions(m.ptr(), fast_methods) != 0) throw py::error_already_set();
  m.def(
      "_set_result_types",
      [](const py::dict& types) {
        // The named tuples the fast paths return, registered by the package.
        const std::pair<const char*, PyObject**> slots[] = {
            {"Grads", &grads_type},
            {"GradsWithBias", &grads_with_bias_type},
            {"PerSampleNorms", &norms_type},
            {"ClippedGrads", &clipped_type}};
        for (const auto& [name, slot] : slots) {
          if (!types.contains(name)) continue;
          Py_XDECREF(*slot);
          *slot = py::object(types[name]).release().ptr();
        }
      },
      "Registers the result types grads_fast and per_sample_fast return, by name "
      "(Grads, GradsWithBias, PerSampleNorms, ClippedGrads).");
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
        info["bf16_gemm"] = cpu::native_bf16_gemm() ? "native" : "widen";
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
