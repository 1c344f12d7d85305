#include "cpu_isa.h"

#include <ATen/Version.h>
#include <c10/util/Exception.h>

#include <cstdlib>
#include <string>

namespace relufrob::cpu {
namespace {

CpuIsa isa_from_torch() {
#if RELUFROB_X86_DISPATCH
  // The names torch.backends.cpu.get_cpu_capability() reports.
  const std::string capability = at::get_cpu_capability();
  if (capability == "AVX512") return CpuIsa::kAvx512;
  if (capability == "AVX2") return CpuIsa::kAvx2;
#endif
  return CpuIsa::kBaseline;
}

GemmBackend backend_from_env(CpuIsa isa) {
  const char* forced = std::getenv("RELUFROB_CPU_GEMM");
  if (forced && *forced) {
    const std::string name(forced);
    if (name == "blas") return GemmBackend::kBlas;
    if (name == "brgemm") return GemmBackend::kBrgemm;
    TORCH_CHECK_VALUE(name == "auto",
                      "relufrob: RELUFROB_CPU_GEMM must be 'auto', 'blas' or "
                      "'brgemm', got '",
                      name, "'");
  }
  return isa == CpuIsa::kAvx512 ? GemmBackend::kBrgemm : GemmBackend::kBlas;
}

}  // namespace

CpuIsa active_isa() {
  static const CpuIsa isa = isa_from_torch();
  return isa;
}

GemmBackend gemm_backend() {
  static const GemmBackend backend = backend_from_env(active_isa());
  return backend;
}

const char* isa_name(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::kAvx512:
      return "avx512";
    case CpuIsa::kAvx2:
      return "avx2";
    case CpuIsa::kBaseline:
      break;
  }
  return "default";
}

const char* gemm_backend_name(GemmBackend backend) {
  return backend == GemmBackend::kBrgemm ? "brgemm" : "blas";
}

}  // namespace relufrob::cpu
