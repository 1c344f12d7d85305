// Standalone check of the framework-free CUDA kernels (the epilogue and the
// bias-gradient column sums): no ATen, no torch, only the CUDA runtime.
// Builds with plain nvcc:
//     nvcc -std=c++17 -I csrc csrc/cuda/selftest/epilogue_selftest.cu -o selftest
// and, on a machine with a GPU, compares the kernels with the same shared
// math run on the host. Prints PASS/FAIL and exits non-zero on failure.
#include "cuda/bias_grad_kernels.cuh"
#include "cuda/epilogue_kernels.cuh"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <utility>
#include <vector>

namespace {

using relufrob::cuda::BiasMode;

bool same(double a, double b, double tol) {
  if (std::isnan(a) || std::isnan(b)) return std::isnan(a) && std::isnan(b);
  return std::fabs(a - b) <= tol * (1.0 + std::fabs(b));
}

#define CHECK_CUDA(expr)                                              \
  do {                                                                \
    cudaError_t err_ = (expr);                                        \
    if (err_ != cudaSuccess) {                                        \
      std::printf("FAIL: %s: %s\n", #expr, cudaGetErrorString(err_)); \
      return 1;                                                       \
    }                                                                 \
  } while (0)

// A device copy of a host vector, freed at scope exit.
template <typename T>
struct DeviceVec {
  T* ptr = nullptr;
  explicit DeviceVec(const std::vector<T>& host) {
    if (cudaMalloc(&ptr, (host.size() + 1) * sizeof(T)) == cudaSuccess && !host.empty())
      cudaMemcpy(ptr, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice);
  }
  explicit DeviceVec(size_t n) { cudaMalloc(&ptr, (n + 1) * sizeof(T)); }
  ~DeviceVec() { cudaFree(ptr); }
  std::vector<T> to_host(size_t n) const {
    std::vector<T> out(n);
    if (n) cudaMemcpy(out.data(), ptr, n * sizeof(T), cudaMemcpyDeviceToHost);
    return out;
  }
};

// One epilogue variant on an M x n problem, against the host's shared math.
template <typename T>
int check_epilogue(int64_t M, int64_t n, bool relu, BiasMode mode, bool with_y) {
  using relufrob::cuda::epilogue_num_blocks;
  const int64_t numel = M * n;
  std::vector<T> z(numel), y(numel), bias(mode == BiasMode::kRow ? n : numel);
  for (int64_t i = 0; i < numel; ++i) {
    z[i] = static_cast<T>((i % 7) - 3);  // integer values: exact zeros included
    y[i] = static_cast<T>(((i * 5) % 11) - 5) / T(4);
  }
  for (size_t i = 0; i < bias.size(); ++i) bias[i] = static_cast<T>((i % 3) - 1) / T(2);
  // One size carries a NaN: it must reach G and dY (and make the loss NaN).
  if (numel == 255) z[3] = std::numeric_limits<T>::quiet_NaN();
  const T two_scale = T(2);

  const int blocks = epilogue_num_blocks(numel);
  DeviceVec<T> d_z(z), d_y(y), d_bias(bias), d_g(numel), d_dy(numel), d_loss(1), d_part(blocks);
  relufrob::cuda::EpilogueIO<T> io;
  io.y = with_y ? d_y.ptr : nullptr;
  io.bias = mode == BiasMode::kNone ? nullptr : d_bias.ptr;
  io.bias_mode = mode;
  io.relu = relu;
  io.g = d_g.ptr;
  io.dy = d_dy.ptr;
  relufrob::cuda::launch_epilogue<T, T>(d_z.ptr, io, numel, n, two_scale, d_part.ptr, blocks, 0);
  CHECK_CUDA(cudaGetLastError());
  relufrob::cuda::launch_finalize_loss<T, T>(d_part.ptr, blocks, T(1), d_loss.ptr, 0);
  CHECK_CUDA(cudaGetLastError());
  CHECK_CUDA(cudaDeviceSynchronize());
  const auto g = d_g.to_host(numel), dy = d_dy.to_host(numel);
  const T loss = d_loss.to_host(1)[0];

  double expected_loss = 0;
  const double tol = sizeof(T) == 4 ? 1e-5 : 1e-12;
  for (int64_t i = 0; i < numel; ++i) {
    T zi = z[i];
    if (mode == BiasMode::kRow) zi = relufrob::add_bias(zi, bias[i % n]);
    if (mode == BiasMode::kFull) zi = relufrob::add_bias(zi, bias[i]);
    const T yi = with_y ? y[i] : T(0);
    const auto e = relu ? relufrob::epilogue<true>(zi, yi, two_scale)
                        : relufrob::epilogue<false>(zi, yi, two_scale);
    expected_loss += e.sq;
    if (!same(g[i], e.g, 0) || !same(dy[i], e.dy, 0)) {
      std::printf("FAIL: epilogue element %lld (relu %d, bias %d, y %d): g %g vs %g, dy %g vs %g\n",
                  (long long)i, relu, static_cast<int>(mode), with_y, (double)g[i], (double)e.g,
                  (double)dy[i], (double)e.dy);
      return 1;
    }
  }
  if (!same(loss, expected_loss, tol)) {
    std::printf("FAIL: loss %.17g vs %.17g\n", (double)loss, expected_loss);
    return 1;
  }
  return 0;
}

// The column sums against a host loop, and bitwise equal on a second run.
template <typename T>
int check_bias_grad(int64_t M, int64_t N) {
  std::vector<T> g(M * N);
  for (int64_t i = 0; i < M * N; ++i) g[i] = static_cast<T>((i * 13) % 17) / T(8) - T(1);
  DeviceVec<T> d_g(g), d_db(N);
  DeviceVec<T> d_work(relufrob::cuda::bias_grad_workspace(M, N));
  std::vector<T> runs[2];
  for (auto& run : runs) {
    relufrob::cuda::launch_bias_grad<T, T>(d_g.ptr, M, N, d_work.ptr, d_db.ptr, 0);
    CHECK_CUDA(cudaGetLastError());
    CHECK_CUDA(cudaDeviceSynchronize());
    run = d_db.to_host(N);
  }
  const double tol = sizeof(T) == 4 ? 1e-5 : 1e-12;
  for (int64_t j = 0; j < N; ++j) {
    double expected = 0;
    for (int64_t r = 0; r < M; ++r) expected += g[r * N + j];
    if (!same(runs[0][j], expected, tol) || std::memcmp(&runs[0][j], &runs[1][j], sizeof(T)) != 0) {
      std::printf("FAIL: db[%lld] of %lld x %lld: %.17g, %.17g vs %.17g\n", (long long)j,
                  (long long)M, (long long)N, (double)runs[0][j], (double)runs[1][j], expected);
      return 1;
    }
  }
  return 0;
}

}  // namespace

int main() {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("SKIP: no CUDA device\n");
    return 0;
  }
  const int64_t shapes[][2] = {{1, 1}, {15, 17}, {64, 64}, {1024, 1024}};
  for (const auto& s : shapes) {
    for (bool relu : {true, false})
      for (BiasMode mode : {BiasMode::kNone, BiasMode::kRow, BiasMode::kFull})
        for (bool with_y : {true, false})
          if (check_epilogue<float>(s[0], s[1], relu, mode, with_y) ||
              check_epilogue<double>(s[0], s[1], relu, mode, with_y))
            return 1;
  }
  for (const auto& mn : {std::pair<int64_t, int64_t>{0, 5}, {1, 3}, {300, 257}, {70000, 33}}) {
    if (check_bias_grad<float>(mn.first, mn.second) || check_bias_grad<double>(mn.first, mn.second))
      return 1;
  }
  std::printf("PASS\n");
  return 0;
}
