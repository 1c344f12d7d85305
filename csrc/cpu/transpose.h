// A cache-friendly transpose, for the kernels whose GEMMs read Wᵀ or Xᵀ
// row-major (the small kernel's padded Wᵀ, brgemm's Xᵀ blocks).
#pragma once

#include <algorithm>
#include <cstdint>

namespace relufrob::cpu {

// dst (cols x rows, row stride ld_dst) = src (rows x cols, row stride
// ld_src)ᵀ, in square tiles so that both sides stay within a few cache lines.
template <typename T>
inline void transpose_tiled(int64_t rows, int64_t cols, const T* src, int64_t ld_src, T* dst,
                            int64_t ld_dst) {
  constexpr int64_t kTile = 16;
  for (int64_t i0 = 0; i0 < rows; i0 += kTile)
    for (int64_t j0 = 0; j0 < cols; j0 += kTile)
      for (int64_t j = j0; j < std::min(cols, j0 + kTile); ++j)
        for (int64_t i = i0; i < std::min(rows, i0 + kTile); ++i)
          dst[j * ld_dst + i] = src[i * ld_src + j];
}

}  // namespace relufrob::cpu
