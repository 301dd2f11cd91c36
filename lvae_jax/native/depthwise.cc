// Depthwise 'same' convolution on NHWC float32 for XLA:CPU, called through the XLA FFI.
//
//   forward:         y[n,h,w,c]  = sum_{i,j} x[n, h+i-p, w+j-p, c] * k[i,j,c]   (zero padding)
//   kernel gradient: dk[i,j,c]   = sum_{n,h,w} x[n, h+i-p, w+j-p, c] * g[n,h,w,c]
//   (the input gradient is the forward with the kernel flipped, done by the caller)
//
// K is odd, p = (K - 1) / 2, stride 1. x: (N, H, W, C), k: (K, K, C), y: like x, dk: like k.
//
// Why it exists: XLA:CPU lowers the depthwise convolution either to its grouped convolution
// (~30x slower than PyTorch's kernel) or to K*K shifted products that stream the whole
// activation K*K times; the kernel gradient is K*K channel-wise reductions over N*H*W, each a
// full pass over two activations. Here every output row (forward) or every input row (kernel
// gradient) is visited once, with the K*K taps accumulated in registers over 8-channel vectors.
//
// Determinism: the forward sums the taps in (i, j) order for every element; the kernel gradient
// accumulates rows in a fixed number of chunks (a function of N*H only) that are then added in
// chunk order, so results do not depend on the number of threads or on scheduling.

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

// Run f(0) ... f(n-1) on the XLA intra-op thread pool and the calling thread. A task that starts
// after all indexes are taken returns without touching f, so f may live on the caller's stack.
template <class F>
void parallel_for(ffi::ThreadPool& pool, int64_t n, const F& f) {
  int64_t threads = std::min<int64_t>(pool.num_threads(), n);
  if (threads <= 1) {
    for (int64_t i = 0; i < n; ++i) f(i);
    return;
  }
  struct State {
    std::atomic<int64_t> next{0};
    std::atomic<int64_t> done{0};
    std::mutex mu;
    std::condition_variable cv;
  };
  auto st = std::make_shared<State>();
  const F* fp = &f;
  auto work = [st, n, fp]() {
    for (int64_t i; (i = st->next.fetch_add(1)) < n;) {
      (*fp)(i);
      if (st->done.fetch_add(1) + 1 == n) {
        std::lock_guard<std::mutex> lock(st->mu);
        st->cv.notify_all();
      }
    }
  };
  for (int64_t t = 1; t < threads; ++t) pool.Schedule([work]() { work(); });
  work();
  std::unique_lock<std::mutex> lock(st->mu);
  st->cv.wait(lock, [&] { return st->done.load() == n; });
}

}  // namespace

// The row kernels, once per instruction set.
namespace lvae_generic {
#include "depthwise_kernels.inc"
}  // namespace lvae_generic
#if defined(__x86_64__)
#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace lvae_avx2 {
#include "depthwise_kernels.inc"
}  // namespace lvae_avx2
#pragma GCC pop_options
#endif

namespace {

using RowFn = void (*)(const float*, const float*, float*, int64_t, int64_t, int64_t, int64_t);

bool use_avx2() {
#if defined(__x86_64__)
  static const bool yes = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return yes;
#else
  return false;
#endif
}

#if defined(__x86_64__)
#define LVAE_PICK(name, K) (use_avx2() ? lvae_avx2::name<K> : lvae_generic::name<K>)
#else
#define LVAE_PICK(name, K) (lvae_generic::name<K>)
#endif

bool pick_fwd(int64_t K, RowFn* out) {
  switch (K) {
    case 3: *out = LVAE_PICK(fwd_row, 3); return true;
    case 5: *out = LVAE_PICK(fwd_row, 5); return true;
    case 7: *out = LVAE_PICK(fwd_row, 7); return true;
    case 9: *out = LVAE_PICK(fwd_row, 9); return true;
    default: return false;
  }
}

bool pick_kgrad(int64_t K, RowFn* out) {
  switch (K) {
    case 3: *out = LVAE_PICK(kgrad_row, 3); return true;
    case 5: *out = LVAE_PICK(kgrad_row, 5); return true;
    case 7: *out = LVAE_PICK(kgrad_row, 7); return true;
    case 9: *out = LVAE_PICK(kgrad_row, 9); return true;
    default: return false;
  }
}

ffi::Error check_shapes(ffi::Buffer<ffi::F32>& x, ffi::Buffer<ffi::F32>& k, int64_t* dims) {
  auto xd = x.dimensions();
  auto kd = k.dimensions();
  if (xd.size() != 4 || kd.size() != 3)
    return ffi::Error::InvalidArgument("lvae depthwise: x must be (N, H, W, C), k (K, K, C)");
  if (kd[0] != kd[1] || kd[2] != xd[3])
    return ffi::Error::InvalidArgument("lvae depthwise: kernel (K, K, C) does not match x");
  for (int i = 0; i < 4; ++i) dims[i] = xd[i];
  dims[4] = kd[0];
  return ffi::Error::Success();
}

ffi::Error DepthwiseFwd(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> k,
                        ffi::ResultBuffer<ffi::F32> y) {
  int64_t d[5];
  if (auto e = check_shapes(x, k, d); e.failure()) return e;
  const int64_t N = d[0], H = d[1], W = d[2], C = d[3], K = d[4];
  RowFn row;
  if (!pick_fwd(K, &row))
    return ffi::Error::InvalidArgument("lvae depthwise: kernel size must be 3, 5, 7 or 9");
  const float* xp = x.typed_data();
  const float* kp = k.typed_data();
  float* yp = y->typed_data();
  const int64_t rows = N * H;
  // A few rows per task: enough work per task, enough tasks to balance.
  const int64_t per = std::max<int64_t>(1, rows / 64);
  const int64_t tasks = (rows + per - 1) / per;
  parallel_for(pool, tasks, [&](int64_t t) {
    for (int64_t r = t * per; r < std::min(rows, (t + 1) * per); ++r) {
      const int64_t n = r / H, h = r % H;
      row(xp + n * H * W * C, kp, yp + (n * H + h) * W * C, H, W, C, h);
    }
  });
  return ffi::Error::Success();
}

ffi::Error DepthwiseKgrad(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> g,
                          ffi::ResultBuffer<ffi::F32> dk) {
  auto xd = x.dimensions();
  auto gd = g.dimensions();
  auto kd = dk->dimensions();
  if (xd.size() != 4 || gd.size() != 4 || kd.size() != 3)
    return ffi::Error::InvalidArgument("lvae depthwise kgrad: x, g (N, H, W, C), dk (K, K, C)");
  for (int i = 0; i < 4; ++i)
    if (xd[i] != gd[i]) return ffi::Error::InvalidArgument("lvae depthwise kgrad: x and g differ");
  if (kd[0] != kd[1] || kd[2] != xd[3])
    return ffi::Error::InvalidArgument("lvae depthwise kgrad: dk (K, K, C) does not match x");
  const int64_t N = xd[0], H = xd[1], W = xd[2], C = xd[3], K = kd[0];
  RowFn row;
  if (!pick_kgrad(K, &row))
    return ffi::Error::InvalidArgument("lvae depthwise kgrad: kernel size must be 3, 5, 7 or 9");
  const int64_t rows = N * H;
  const int64_t chunks = std::min<int64_t>(rows, 32);  // fixed by the shape: deterministic
  const int64_t kk = K * K * C;
  std::vector<float> partial(static_cast<size_t>(chunks * kk), 0.0f);
  const float* xp = x.typed_data();
  const float* gp = g.typed_data();
  parallel_for(pool, chunks, [&](int64_t t) {
    const int64_t lo = rows * t / chunks, hi = rows * (t + 1) / chunks;
    float* acc = partial.data() + t * kk;
    for (int64_t r = lo; r < hi; ++r) {
      const int64_t n = r / H, h = r % H;
      row(xp + n * H * W * C, gp + n * H * W * C, acc, H, W, C, h);
    }
  });
  float* out = dk->typed_data();
  std::memcpy(out, partial.data(), sizeof(float) * kk);
  for (int64_t t = 1; t < chunks; ++t) {
    const float* p = partial.data() + t * kk;
    for (int64_t e = 0; e < kk; ++e) out[e] += p[e];
  }
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(LvaeDepthwiseFwd, DepthwiseFwd,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(LvaeDepthwiseKgrad, DepthwiseKgrad,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());

extern "C" int lvae_native_abi_version() { return 1; }
