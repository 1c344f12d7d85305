// Standalone check of the framework-free CUDA epilogue kernels: no ATen, no
// torch, only the CUDA runtime. Builds with plain nvcc:
//     nvcc -std=c++17 -I csrc csrc/cuda/selftest/epilogue_selftest.cu -o selftest
// and, on a machine with a GPU, compares the kernels with the same shared
// math run on the host. Prints PASS/FAIL and exits non-zero on failure.
#include "cuda/epilogue_kernels.cuh"

#include <cmath>
#include <cstdio>
#include <limits>
#include <vector>

namespace {

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

template <typename T>
int check(int64_t numel) {
  using relufrob::cuda::epilogue_num_blocks;
  std::vector<T> z(numel), y(numel);
  for (int64_t i = 0; i < numel; ++i) {
    z[i] = static_cast<T>((i % 7) - 3);  // integer values: exact zeros included
    y[i] = static_cast<T>(((i * 5) % 11) - 5) / T(4);
  }
  // One size carries a NaN: it must reach G and dY (and make the loss NaN).
  if (numel == 255) z[3] = std::numeric_limits<T>::quiet_NaN();
  const T two_scale = T(2);

  T *d_z, *d_y, *d_g, *d_dy, *d_loss, *d_partials;
  const int blocks = epilogue_num_blocks(numel);
  CHECK_CUDA(cudaMalloc(&d_z, numel * sizeof(T)));
  CHECK_CUDA(cudaMalloc(&d_y, numel * sizeof(T)));
  CHECK_CUDA(cudaMalloc(&d_g, numel * sizeof(T)));
  CHECK_CUDA(cudaMalloc(&d_dy, numel * sizeof(T)));
  CHECK_CUDA(cudaMalloc(&d_loss, sizeof(T)));
  CHECK_CUDA(cudaMalloc(&d_partials, blocks * sizeof(T)));
  CHECK_CUDA(cudaMemcpy(d_z, z.data(), numel * sizeof(T), cudaMemcpyHostToDevice));
  CHECK_CUDA(cudaMemcpy(d_y, y.data(), numel * sizeof(T), cudaMemcpyHostToDevice));
  relufrob::cuda::launch_epilogue<T, T>(d_z, d_y, numel, two_scale, d_g, d_dy, d_partials, blocks,
                                        0);
  CHECK_CUDA(cudaGetLastError());
  relufrob::cuda::launch_finalize_loss<T, T>(d_partials, blocks, T(1), d_loss, 0);
  CHECK_CUDA(cudaGetLastError());

  std::vector<T> g(numel), dy(numel);
  T loss;
  CHECK_CUDA(cudaMemcpy(g.data(), d_g, numel * sizeof(T), cudaMemcpyDeviceToHost));
  CHECK_CUDA(cudaMemcpy(dy.data(), d_dy, numel * sizeof(T), cudaMemcpyDeviceToHost));
  CHECK_CUDA(cudaMemcpy(&loss, d_loss, sizeof(T), cudaMemcpyDeviceToHost));
  cudaFree(d_z);
  cudaFree(d_y);
  cudaFree(d_g);
  cudaFree(d_dy);
  cudaFree(d_loss);
  cudaFree(d_partials);

  double expected_loss = 0;
  const double tol = sizeof(T) == 4 ? 1e-5 : 1e-12;
  for (int64_t i = 0; i < numel; ++i) {
    const auto e = relufrob::epilogue<T>(z[i], y[i], two_scale);
    expected_loss += e.sq;
    if (!same(g[i], e.g, 0) || !same(dy[i], e.dy, 0)) {
      std::printf("FAIL: element %lld: g %g vs %g, dy %g vs %g\n", (long long)i, (double)g[i],
                  (double)e.g, (double)dy[i], (double)e.dy);
      return 1;
    }
  }
  if (!same(loss, expected_loss, tol)) {
    std::printf("FAIL: loss %.17g vs %.17g\n", (double)loss, expected_loss);
    return 1;
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
  for (int64_t numel : {int64_t(1), int64_t(255), int64_t(4096), int64_t(1) << 20}) {
    if (check<float>(numel) || check<double>(numel)) return 1;
  }
  std::printf("PASS\n");
  return 0;
}
