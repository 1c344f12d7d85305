// How both CPU kernels share out rows among threads: the rows are cut into
// contiguous chunks, one per thread, run in ONE parallel region. Each chunk
// keeps its own dW and loss partials, which are added in chunk order
// afterwards, so results depend on the thread count but never on timing.
//
// One region per call matters on a loaded machine: every parallel region
// waits for its slowest thread, and a thread that the OS has descheduled in
// favour of another process stalls each region for a whole time slice. A
// call made of many short regions (a few per block of rows) then slows down
// many times more than the load itself explains.
#pragma once

#include <ATen/Parallel.h>
#include <c10/util/SmallVector.h>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace relufrob::cpu {

struct RowSplit {
  int64_t chunks = 1;          // 1: run on the calling thread
  int64_t rows_per_chunk = 0;  // a multiple of the caller's row granularity

  int64_t begin(int64_t c, int64_t M) const { return std::min(M, c * rows_per_chunk); }
  int64_t end(int64_t c, int64_t M) const { return std::min(M, begin(c, M) + rows_per_chunk); }
};

// At most max_chunks chunks of whole `row_multiple`-row units.
inline RowSplit split_rows(int64_t M, int64_t row_multiple, int64_t max_chunks) {
  const int64_t units = (M + row_multiple - 1) / row_multiple;
  const int64_t chunks = std::max<int64_t>(1, std::min(max_chunks, units));
  return {chunks, (units + chunks - 1) / chunks * row_multiple};
}

// fn(c) for every chunk, returning the chunk's loss partial; the partials are
// added in chunk order. In parallel, one region in all, when there are several
// chunks; inline otherwise, so that a single chunk's own parallel work (BLAS,
// tiles) can still use every thread.
template <typename F>
double sum_over_chunks(const RowSplit& split, const F& fn) {
  if (split.chunks == 1) return fn(0);
  std::vector<double> partials(split.chunks, 0.0);
  at::parallel_for(0, split.chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) partials[c] = fn(c);
  });
  double sum = 0.0;
  for (double part : partials) sum += part;
  return sum;
}

// One zeroed partial per chunk (of dW, or of an (N,) bias's db). Chunk 0
// writes straight into `first` when the caller has such a buffer (the dW
// output itself, when no padding or conversion is needed); every other chunk
// gets storage of its own. Inline storage keeps a tiny problem off the heap.
template <typename T>
class ChunkPartials {
 public:
  ChunkPartials(int64_t chunks, int64_t size, T* first)
      : size_(size), chunks_(chunks), first_(first) {
    const int64_t owned = first ? chunks - 1 : chunks;
    owned_.assign(owned * size, T(0));
    if (first_) {
      std::fill(first_, first_ + size, T(0));
    } else {
      first_ = owned_.data();
    }
  }
  ChunkPartials(const ChunkPartials&) = delete;
  ChunkPartials& operator=(const ChunkPartials&) = delete;

  T* of(int64_t c) {
    if (c == 0) return first_;
    const int64_t slot = first_ == owned_.data() ? c : c - 1;
    return owned_.data() + slot * size_;
  }

  // Adds chunks 1.. into chunk 0's partial, in chunk order; returns it.
  T* sum_in_order() {
    for (int64_t c = 1; c < chunks_; ++c) {
      const T* part = of(c);
      for (int64_t i = 0; i < size_; ++i) first_[i] += part[i];
    }
    return first_;
  }

 private:
  int64_t size_, chunks_;
  T* first_;
  c10::SmallVector<T, 256> owned_;
};

}  // namespace relufrob::cpu
