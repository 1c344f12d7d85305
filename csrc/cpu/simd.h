// SIMD registers as GCC/Clang vector extensions, sized by an ISA's traits
// (cpu_isa.h), so that register blocking and lane reductions are explicit
// rather than left to the auto-vectoriser.
#pragma once

#include "cpu_isa.h"

#include <cstdint>

namespace relufrob::cpu {

// One SIMD register of T.
template <typename T, int kBytes>
using VecOf __attribute__((vector_size(kBytes))) = T;

template <typename Isa, typename T>
using Vec = VecOf<T, Isa::kVecBytes>;

template <typename Isa, typename T>
constexpr int64_t kVecLanes = Isa::kVecBytes / sizeof(T);

// Unaligned vector moves through a may_alias type. (memcpy would take the
// vector's address and make GCC keep a stack copy of the accumulators,
// zeroed with a `rep stos` for every block.)
template <typename T, int kBytes>
using UnalignedVecOf __attribute__((vector_size(kBytes), aligned(alignof(T)), may_alias)) = T;

template <typename T, typename V>
RELUFROB_ALWAYS_INLINE void load_vec(V& v, const T* p) {
  v = *reinterpret_cast<const UnalignedVecOf<T, sizeof(V)>*>(p);
}

template <typename T, typename V>
RELUFROB_ALWAYS_INLINE void store_vec(T* p, const V& v) {
  *reinterpret_cast<UnalignedVecOf<T, sizeof(V)>*>(p) = v;
}

}  // namespace relufrob::cpu
