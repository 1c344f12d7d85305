// Which instruction set and GEMM backend the CPU kernels use.
//
// The choice is explicit and made once per process from torch's own CPU
// capability, so `ATEN_CPU_CAPABILITY=default|avx2|avx512` forces every path
// of relufrob exactly as it forces torch's (GCC's target_clones, used before,
// are picked by the loader and ignore it). Nothing is timed at run time: for
// a given machine, capability and thread count the results are bitwise
// repeatable.
//
// Each ISA is a traits type. Kernels are templates over it, written as
// always-inline bodies; run_with_isa<Isa> compiles such a body inside a
// function carrying that ISA's target attribute, so one source gives SSE2,
// AVX2 and AVX-512 code while the rest of the extension stays baseline x86-64.
#pragma once

#include <cstdint>

#if defined(__GNUC__)
#define RELUFROB_ALWAYS_INLINE inline __attribute__((always_inline))
// For lambdas passed to run_with_isa: they must be inlined to get its ISA.
#define RELUFROB_INLINE_LAMBDA __attribute__((always_inline))
#else
#define RELUFROB_ALWAYS_INLINE inline
#define RELUFROB_INLINE_LAMBDA
#endif

#if defined(__x86_64__) && defined(__GNUC__)
#define RELUFROB_X86_DISPATCH 1
// Exactly the features torch requires for its AVX2 and AVX512 capabilities.
#define RELUFROB_TARGET_AVX2 __attribute__((target("avx2,fma")))
#define RELUFROB_TARGET_AVX512 \
  __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")))
#else
#define RELUFROB_X86_DISPATCH 0
#define RELUFROB_TARGET_AVX2
#define RELUFROB_TARGET_AVX512
#endif

namespace relufrob::cpu {

enum class CpuIsa { kBaseline, kAvx2, kAvx512 };
enum class GemmBackend { kBlas, kBrgemm };

// torch's capability (at::get_cpu_capability(), which honours
// ATEN_CPU_CAPABILITY) mapped onto the ISAs relufrob has kernels for, and
// lowered to what the CPU can run.
CpuIsa active_isa();

// The large-problem float32 GEMMs: oneDNN's brgemm micro-kernels on AVX-512
// CPUs that are not Intel's, BLAS (MKL in torch's x86 wheels) elsewhere. MKL
// takes its AVX-512 code paths on Intel CPUs only: on AMD Zen 5 brgemm ran
// about 2x MKL's AVX2 path, while on a Xeon MKL ran 1.1-1.4x brgemm tiles
// (and on AVX2 machines three brgemm-tiled GEMMs measured 2.3x slower than
// torch.mm at 8192x512x512). RELUFROB_CPU_GEMM=blas|brgemm overrides the
// choice, so that both backends can be tested and compared on any machine.
GemmBackend gemm_backend();

// bfloat16 GEMMs: native (oneDNN's bfloat16 kernels on AMX or AVX512-BF16,
// bfloat16 operands with float32 accumulation) or widened (the operands
// converted to float32 a block at a time, float32 GEMMs). Native where the
// ISA is AVX-512 and the CPU has those instructions: there a 4096x512x512
// bfloat16 GEMM took 2-8 ms against 14-16 ms in float32 (Xeon with AMX),
// while without them oneDNN's bfloat16 GEMM took 0.9 s (the same machine
// forced to AVX2). float16 is always widened: without AMX-FP16 its native
// GEMM measured no faster than float32. RELUFROB_CPU_LOWP_GEMM=native|widen
// overrides the choice; ONEDNN_MAX_CPU_ISA below AVX-512 means widened.
bool native_bf16_gemm();

// The L2 cache of one core in bytes, or 0 where the OS does not tell.
int64_t l2_cache_bytes();

const char* isa_name(CpuIsa isa);
const char* gemm_backend_name(GemmBackend backend);

// Register blocking per ISA. kVecBytes is one SIMD register; kPanelRows x
// kMatmulVecs accumulators plus kMatmulVecs loaded vectors and a broadcast
// must fit the register file (16 on SSE2/AVX2, 32 on AVX-512). The small
// kernel works on groups of kGroupPanels x kPanelRows rows, and takes
// problems of up to kDirectMaxMacs multiply-adds per GEMM (grads_instances.h).
// (I only tags the type: two ISAs with equal blocking stay distinct types.)
template <CpuIsa I, int VecBytes, int PanelRows, int64_t DirectMaxMacs>
struct IsaTraits {
  static constexpr int kVecBytes = VecBytes;
  static constexpr int kPanelRows = PanelRows;
  static constexpr int kMatmulVecs = 2;
  static constexpr int kGroupPanels = 8;
  static constexpr int64_t kDirectMaxMacs = DirectMaxMacs;
};

// Without FMA and with 4-wide vectors the small kernel loses to BLAS from
// 64x64x64 up (74 vs 49 us, AMD EPYC Zen 3 forced to the baseline); with
// AVX2 it is on par with BLAS up to 2^22 and faster below.
using IsaBaseline = IsaTraits<CpuIsa::kBaseline, 16, 6, int64_t(1) << 16>;
using IsaAvx2 = IsaTraits<CpuIsa::kAvx2, 32, 6, int64_t(1) << 22>;
using IsaAvx512 = IsaTraits<CpuIsa::kAvx512, 64, 8, int64_t(1) << 22>;

// Runs `body` (an always-inline lambda) compiled for Isa's instruction set.
template <typename Isa>
struct IsaTarget {
  template <typename F>
  static auto run(F&& body) {
    return body();
  }
};

template <>
struct IsaTarget<IsaAvx2> {
  template <typename F>
  RELUFROB_TARGET_AVX2 static auto run(F&& body) {
    return body();
  }
};

template <>
struct IsaTarget<IsaAvx512> {
  template <typename F>
  RELUFROB_TARGET_AVX512 static auto run(F&& body) {
    return body();
  }
};

template <typename Isa, typename F>
RELUFROB_ALWAYS_INLINE auto run_with_isa(F&& body) {
  return IsaTarget<Isa>::run(static_cast<F&&>(body));
}

// Calls fn(Isa{}) with the traits of the active ISA.
template <typename F>
auto dispatch_isa(F&& fn) {
  switch (active_isa()) {
    case CpuIsa::kAvx512:
      return fn(IsaAvx512{});
    case CpuIsa::kAvx2:
      return fn(IsaAvx2{});
    case CpuIsa::kBaseline:
      break;
  }
  return fn(IsaBaseline{});
}

}  // namespace relufrob::cpu
