#include "cpu_isa.h"

#include <ATen/Version.h>
#include <c10/util/Exception.h>

#include <cstdlib>
#if __has_include(<unistd.h>)
#include <unistd.h>
#endif
#include <string>

namespace relufrob::cpu {
namespace {

// Whether this CPU (and OS) can run `isa`'s kernels. torch takes
// ATEN_CPU_CAPABILITY at its word, even above what the hardware has; relufrob
// never runs an instruction the CPU lacks.
bool cpu_runs(CpuIsa isa) {
#if RELUFROB_X86_DISPATCH
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  switch (isa) {
    case CpuIsa::kAvx512:
      return avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
    case CpuIsa::kAvx2:
      return avx2;
    case CpuIsa::kBaseline:
      break;
  }
#endif
  return isa == CpuIsa::kBaseline;
}

// torch's capability, lowered to what the CPU can run.
CpuIsa isa_from_torch() {
  CpuIsa isa = CpuIsa::kBaseline;
#if RELUFROB_X86_DISPATCH
  // The names torch.backends.cpu.get_cpu_capability() reports.
  const std::string capability = at::get_cpu_capability();
  if (capability == "AVX512") isa = CpuIsa::kAvx512;
  if (capability == "AVX2") isa = CpuIsa::kAvx2;
  if (isa == CpuIsa::kAvx512 && !cpu_runs(isa)) isa = CpuIsa::kAvx2;
  if (isa == CpuIsa::kAvx2 && !cpu_runs(isa)) isa = CpuIsa::kBaseline;
#endif
  return isa;
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
  if (isa != CpuIsa::kAvx512) return GemmBackend::kBlas;
#if RELUFROB_X86_DISPATCH
  __builtin_cpu_init();
  if (__builtin_cpu_is("intel")) return GemmBackend::kBlas;
#endif
  return GemmBackend::kBrgemm;
}

bool bf16_gemm_from_env(CpuIsa isa) {
  const char* forced = std::getenv("RELUFROB_CPU_LOWP_GEMM");
  if (forced && *forced) {
    const std::string name(forced);
    if (name == "native") return true;
    if (name == "widen") return false;
    TORCH_CHECK_VALUE(name == "auto",
                      "relufrob: RELUFROB_CPU_LOWP_GEMM must be 'auto', 'native' or "
                      "'widen', got '",
                      name, "'");
  }
  if (isa != CpuIsa::kAvx512) return false;
  // oneDNN's own ISA cap, as torch's is ATEN_CPU_CAPABILITY.
  const char* onednn = std::getenv("ONEDNN_MAX_CPU_ISA");
  if (onednn && *onednn) {
    const std::string cap(onednn);
    if (cap.rfind("AVX512", 0) != 0 && cap.rfind("AMX", 0) != 0 && cap != "ALL") return false;
  }
#if RELUFROB_X86_DISPATCH
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512bf16") || __builtin_cpu_supports("amx-bf16");
#else
  return false;
#endif
}

}  // namespace

bool native_bf16_gemm() {
  static const bool native = bf16_gemm_from_env(active_isa());
  return native;
}

CpuIsa active_isa() {
  static const CpuIsa isa = isa_from_torch();
  return isa;
}

GemmBackend gemm_backend() {
  static const GemmBackend backend = backend_from_env(active_isa());
  return backend;
}

int64_t l2_cache_bytes() {
#if defined(_SC_LEVEL2_CACHE_SIZE)
  const long bytes = sysconf(_SC_LEVEL2_CACHE_SIZE);
  if (bytes > 0) return bytes;
#endif
  return 0;
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
