// The compiled rec-LRA step of a plain MLP on the skip pathway (see rec_lra_native.py).
//
// The maths of DenseSkipKernel.step (rec_lra_dense.py) for fixed synapses and every layer
// learning: the GEMMs are ATen's (MKL on CPU), the small and elementwise work around them is
// written here as loops over contiguous buffers, with f evaluated inside them, and every
// direction becomes the parameter's .grad (or is added to it) without a trip through Python:
//
//   h_i = W_i z_{i-1} + b_i, z_i = f(h_i)     into the stacks H, Z (k, B, n): the GEMM, then
//                                             one pass adding b_i and applying f
//   e_L = softmax(h_L) - onehot(y)            with the mean CE and mean ||e_L||
//   H <- H - beta e_L E_stack^T               one batched GEMM adding onto H, in place
//   Err = Z - f(H)                            with every row's norm and every bias sum, one pass
//   dW_1 = Err_1^T x / B,  dW_{2..k} = Err_{2..k}^T Z_{1..k-1} / B,  dW_L = e_L^T z_k / B
//
// f is computed inside the passes only where ATen's vectors are built for the CPU (the x86
// builds, CPU_CAPABILITY set by rec_lra_native.build_flags): with at::vec's portable vectors
// those passes are 1.5-1.7x slower than torch's own kernels (docs/PERFORMANCE.md), so the
// other builds give f to torch's kernels (at::addmm with the bias, at::tanh / at::sigmoid),
// each a pass of its own, and the passes only the errors.
#include <torch/extension.h>

#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <ATen/record_function.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace {

enum Activation : int64_t { kTanh = 0, kSigmoid = 1 };

#if defined(CPU_CAPABILITY_AVX512) || defined(CPU_CAPABILITY_AVX2)
constexpr bool kFInPasses = true;
#else
constexpr bool kFInPasses = false;
#endif

// f by torch's own kernel, a pass of its own
void activate_out(at::Tensor& out, const at::Tensor& h, int64_t f) {
  if (f == kTanh) {
    at::tanh_out(out, h);
  } else {
    at::sigmoid_out(out, h);
  }
}

template <typename T>
using Vec = at::vec::Vectorized<T>;

// f on a vector of pre-activations. tanh in float64 is SLEEF's (1 ulp, through at::vec);
// sigmoid is 1 / (1 + exp(-x)) with SLEEF's exp, as ATen's own CPU kernel computes it.
template <typename T>
struct Tanh {
  Vec<T> operator()(const Vec<T>& x) const { return x.tanh(); }
};

// tanh in float32: x P(x^2) / Q(x^2), the rational minimax approximation of degrees 6 and 3 in
// x^2 on |x| <= 9.02 (beyond it float32 tanh rounds to +-1), fitted by
// experiments/speed/fit_tanh.py. At most 6 ulp from the correctly rounded tanh over every float
// (checked exhaustively by that script; torch's CPU tanh, MKL's, is within 1), and 1.2-1.4x
// cheaper than MKL's (7x than SLEEF's); tanh was the step's largest cost beside its GEMMs and
// Adam (docs/PERFORMANCE.md). NaN stays NaN; +-inf give +-1.
template <>
struct Tanh<float> {
  Vec<float> operator()(const Vec<float>& x) const {
    using V = Vec<float>;
    const V v = at::vec::clamp(x, V(-9.02f), V(9.02f)), t = v * v;
    V p = at::vec::fmadd(t, V(-8.436030059190067e-14f), V(5.257770607780543e-11f));
    p = at::vec::fmadd(p, t, V(-2.0183945181884155e-08f));
    p = at::vec::fmadd(p, t, V(1.1144249583594501e-05f));
    p = at::vec::fmadd(p, t, V(0.0031030005775392056f));
    p = at::vec::fmadd(p, t, V(0.13083156943321228f));
    p = at::vec::fmadd(p, t, V(1.0f));
    V q = at::vec::fmadd(t, V(0.0002544750168453902f), V(0.02449137717485428f));
    q = at::vec::fmadd(q, t, V(0.4641648232936859f));
    q = at::vec::fmadd(q, t, V(1.0f));
    return V::blendv(v * p / q, x, x.isnan());
  }
};

template <typename T>
struct Sigmoid {
  Vec<T> operator()(const Vec<T>& x) const {
    return ((Vec<T>(T(0)) - x).exp() + Vec<T>(T(1))).reciprocal();
  }
};

// What the errors pass applies where torch's kernel has computed f(h) already
template <typename T>
struct Given {
  Vec<T> operator()(const Vec<T>& y) const { return y; }
};

// fn(Tanh<T>{}) or fn(Sigmoid<T>{}): the loops are compiled once per activation
template <typename T, typename Fn>
void with_activation(int64_t f, const Fn& fn) {
  if (f == kTanh) {
    fn(Tanh<T>{});
  } else {
    fn(Sigmoid<T>{});
  }
}

// Rows per thread task for a pass over rows of n elements: ATen's grain for elementwise work
int64_t row_grain(int64_t n) { return std::max<int64_t>(1, at::internal::GRAIN_SIZE / n); }

// fn(c, m) over row positions c in steps of whole vectors, then once for the tail (m < size)
template <typename T, typename Fn>
inline void over_row(int64_t n, const Fn& fn) {
  constexpr int64_t V = Vec<T>::size();
  int64_t c = 0;
  for (; c + V <= n; c += V) fn(c, V);
  if (c < n) fn(c, n - c);
}

// p.grad = d, or p.grad += d where a .grad is already there (as autograd accumulates)
void give_grad(const at::Tensor& p, const at::Tensor& d) {
  at::Tensor& grad = const_cast<at::Tensor&>(p).mutable_grad();
  if (grad.defined()) {
    grad.add_(d);
  } else {
    grad = d;
  }
}

// The buffer of a direction: the step's previous one where nothing else holds it any more (its
// views, given as .grad, were dropped by zero_grad), else a fresh tensor. Memory is reused only
// where no tensor could see it change, and no direction is allocated (and first touched, page by
// page) again at every step.
at::Tensor& recycled(at::Tensor& buf, at::IntArrayRef shape, const at::TensorOptions& options) {
  if (!(buf.defined() && buf.sizes() == shape && buf.options().type_equal(options) &&
        buf.device() == options.device() && buf.storage().use_count() == 1)) {
    buf = at::empty(shape, options);
  }
  return buf;
}

// alpha * a @ b into out, the scale applied inside the GEMM; returns a view of out (a direction
// is only ever given as a view of its buffer, so that the buffer's storage count tells who holds
// it)
at::Tensor scaled_mm(at::Tensor& out, const at::Tensor& a, const at::Tensor& b, double alpha) {
  return at::addmm_out(out, out, a, b, 0.0, alpha).alias();
}

// A vector of m <= size values at p (a whole one, or a row's tail), and its store
template <typename T>
inline Vec<T> load(const T* p, int64_t m) {
  return m == Vec<T>::size() ? Vec<T>::loadu(p) : Vec<T>::loadu(p, m);
}
template <typename T>
inline void store(const Vec<T>& v, T* p, int64_t m) {
  if (m == Vec<T>::size()) {
    v.store(p);
  } else {
    v.store(p, m);
  }
}

// The forward pass's elementwise half, one pass over the GEMM's output h = W z (B, n): h += b,
// z = f(h).
template <typename T, typename F>
void bias_activate_(T* h, T* z, const T* b, int64_t B, int64_t n, F f) {
  at::parallel_for(0, B, row_grain(n), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      T* hr = h + r * n;
      T* zr = z + r * n;
      over_row<T>(n, [&](int64_t c, int64_t m) {
        const Vec<T> v = load(hr + c, m) + load(b + c, m);
        store(v, hr + c, m);
        store(f(v), zr + c, m);
      });
    }
  });
}

// In place on the logits h (B, C): e = softmax(h) - onehot(y). Returns the mean cross-entropy
// and the mean ||e||; db (C,) receives the batch mean of e. The rows are split between threads
// in fixed blocks, and the blocks' sums added in their order (the same sums on any thread count).
template <typename T>
std::pair<double, double> output_error_(T* h, const int64_t* y, T* db, int64_t B, int64_t C) {
  constexpr int64_t kRows = 128;  // rows per block: about 100 ns of exp and log per row
  const int64_t blocks = (B + kRows - 1) / kRows;
  std::vector<double> loss(blocks, 0.0), norm(blocks, 0.0), col(blocks * C, 0.0);
  at::parallel_for(0, blocks, 1, [&](int64_t first, int64_t last) {
    for (int64_t blk = first; blk < last; ++blk) {
      double* cols = col.data() + blk * C;
      for (int64_t r = blk * kRows; r < std::min(B, (blk + 1) * kRows); ++r) {
        T* row = h + r * C;
        const int64_t label = y[r];
        TORCH_CHECK(label >= 0 && label < C, "label ", label, " out of range for ", C, " classes");
        T mx = row[0];
        for (int64_t c = 1; c < C; ++c) mx = std::max(mx, row[c]);
        const double shifted = static_cast<double>(row[label] - mx);
        double s = 0.0;
        for (int64_t c = 0; c < C; ++c) {  // exp(h - max), once per logit
          const double p = std::exp(static_cast<double>(row[c] - mx));
          row[c] = static_cast<T>(p);
          s += p;
        }
        loss[blk] += std::log(s) - shifted;
        double sq = 0.0;
        for (int64_t c = 0; c < C; ++c) {
          const double e = static_cast<double>(row[c]) / s - (c == label ? 1.0 : 0.0);
          row[c] = static_cast<T>(e);
          cols[c] += e;
          sq += e * e;
        }
        norm[blk] += std::sqrt(sq);
      }
    }
  });
  double total_loss = 0.0, total_norm = 0.0;
  for (int64_t blk = 0; blk < blocks; ++blk) {
    total_loss += loss[blk];
    total_norm += norm[blk];
  }
  for (int64_t c = 0; c < C; ++c) {
    double sum = 0.0;
    for (int64_t blk = 0; blk < blocks; ++blk) sum += col[blk * C + c];
    db[c] = static_cast<T>(sum / B);
  }
  return {total_loss / B, total_norm / B};
}

// In place on the displaced pre-activations H (k, B, n): Err = Z - f(H), the targets and their
// errors in one pass. norm (k,) receives every layer's mean row norm, db (k, n) every layer's
// batch mean of Err. Every layer's rows are cut into S segments, so that the threads get equal
// shares of k layers; the segments' sums are added in their order.
template <typename T, typename F>
void errors_(T* H, const T* Z, T* norm, T* db, int64_t k, int64_t B, int64_t n, F f) {
  const int64_t S = k * B * n < (1 << 16) ? 1 : std::min<int64_t>(B, 8);
  std::vector<T> partial(k * S * n, T(0));
  std::vector<double> total(k * S, 0.0);
  at::parallel_for(0, k * S, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t j = task / S, s = task % S;
      T* sums = partial.data() + task * n;
      for (int64_t r = s * B / S; r < (s + 1) * B / S; ++r) {
        T* hr = H + (j * B + r) * n;
        const T* zr = Z + (j * B + r) * n;
        Vec<T> sq(T(0));
        over_row<T>(n, [&](int64_t c, int64_t m) {
          // z - y, y = f(h - beta d); in a tail, the lanes past the row are zero
          const Vec<T> e = Vec<T>::set(Vec<T>(T(0)), load(zr + c, m) - f(load(hr + c, m)), m);
          store(e, hr + c, m);
          store(load(sums + c, m) + e, sums + c, m);
          sq = at::vec::fmadd(e, e, sq);
        });
        const T row = at::vec::vec_reduce_all<T>([](Vec<T>& a, Vec<T>& b) { return a + b; }, sq);
        total[task] += std::sqrt(static_cast<double>(row));
      }
    }
  });
  for (int64_t j = 0; j < k; ++j) {
    double sum = 0.0;
    for (int64_t s = 0; s < S; ++s) sum += total[j * S + s];
    norm[j] = static_cast<T>(sum / B);
    for (int64_t c = 0; c < n; ++c) {
      T col = 0;
      for (int64_t s = 0; s < S; ++s) col += partial[(j * S + s) * n + c];
      db[j * n + c] = col / static_cast<T>(B);
    }
  }
}

}  // namespace

// One step: x (B, D) the flat input, y (B,) int64 labels; W, b the k + 1 layers' parameters
// (hidden first); Et (k, n_L, n) the stacked fixed synapses transposed; H, Z (k, B, n) the
// stacks (contiguous); pool the directions' buffers of the previous step (dW_{2..k}, dW_1, dW_L,
// db_{1..k}, db_L; empty tensors at first); eps the adaptive depth's bound (a layer whose mean
// error norm is below it is not updated: its GEMMs are not done). Returns the mean loss, the pool
// for the next step (five buffers), then every layer's mean error norm, the output's last.
std::vector<at::Tensor> step(const at::Tensor& x, const at::Tensor& y,
                             const std::vector<at::Tensor>& W, const std::vector<at::Tensor>& b,
                             const at::Tensor& Et, at::Tensor H, at::Tensor Z, double beta,
                             int64_t f, std::vector<at::Tensor> pool, double eps) {
  RECORD_FUNCTION("reclra::rec_lra_step", std::vector<c10::IValue>());
  at::NoGradGuard no_grad;
  const int64_t k = H.size(0), B = H.size(1), n = H.size(2);
  TORCH_CHECK(H.is_contiguous() && Z.is_contiguous(), "the stacks must be contiguous");
  TORCH_CHECK(static_cast<int64_t>(W.size()) == k + 1 && x.size(0) == B && y.size(0) == B,
              "shapes do not match the stacks");
  const double inv = 1.0 / static_cast<double>(B);
  TORCH_CHECK(pool.size() == 5, "the pool holds five buffers");
  at::Tensor labels = y.to(at::kLong).contiguous();
  const auto opts = H.options();

  at::Tensor z = x;
  for (int64_t i = 0; i < k; ++i) {
    at::Tensor Hi = H.select(0, i), Zi = Z.select(0, i);
    if constexpr (kFInPasses) {
      at::mm_out(Hi, z, W[i].t());
      AT_DISPATCH_FLOATING_TYPES(H.scalar_type(), "rec_lra_forward", [&] {
        const at::Tensor bias = b[i].contiguous();
        with_activation<scalar_t>(f, [&](auto act) {
          bias_activate_<scalar_t>(Hi.data_ptr<scalar_t>(), Zi.data_ptr<scalar_t>(),
                                   bias.data_ptr<scalar_t>(), B, n, act);
        });
      });
    } else {
      at::addmm_out(Hi, b[i], z, W[i].t());
      activate_out(Zi, Hi, f);
    }
    z = Zi;
  }
  at::Tensor e = at::addmm(b[k], z, W[k].t()).contiguous();  // h_L, then e_L in place
  const int64_t C = e.size(1);
  at::Tensor& db_L = recycled(pool[4], {C}, opts);
  at::Tensor& db = recycled(pool[3], {k, n}, opts);
  at::Tensor norms = at::empty({k + 1}, opts);
  double loss = 0.0;
  std::vector<bool> learns(k + 1, true);  // adaptive depth (eps > 0): mean ||e_i|| >= eps
  AT_DISPATCH_FLOATING_TYPES(e.scalar_type(), "rec_lra_step", [&] {
    RECORD_FUNCTION("reclra::output_error", std::vector<c10::IValue>());
    auto [l, norm_L] = output_error_<scalar_t>(e.data_ptr<scalar_t>(),
                                               labels.data_ptr<int64_t>(),
                                               db_L.data_ptr<scalar_t>(), B, C);
    loss = l;
    norms.data_ptr<scalar_t>()[k] = static_cast<scalar_t>(norm_L);
    if (eps > 0) learns[k] = static_cast<scalar_t>(norm_L) >= eps;
  });
  if (learns[k]) {
    give_grad(W[k], scaled_mm(recycled(pool[2], W[k].sizes(), opts), e.t(), z, inv));
    give_grad(b[k], db_L.alias());
  }

  at::baddbmm_out(H, H, e.expand({k, B, C}), Et, 1.0, -beta);  // h_i - beta d_i
  AT_DISPATCH_FLOATING_TYPES(H.scalar_type(), "rec_lra_errors", [&] {
    RECORD_FUNCTION("reclra::errors", std::vector<c10::IValue>());
    if constexpr (kFInPasses) {
      with_activation<scalar_t>(f, [&](auto act) {  // Err = Z - f(H)
        errors_<scalar_t>(H.data_ptr<scalar_t>(), Z.data_ptr<scalar_t>(),
                          norms.data_ptr<scalar_t>(), db.data_ptr<scalar_t>(), k, B, n, act);
      });
    } else {
      activate_out(H, H, f);  // Y = f(H), then Err = Z - Y
      errors_<scalar_t>(H.data_ptr<scalar_t>(), Z.data_ptr<scalar_t>(),
                        norms.data_ptr<scalar_t>(), db.data_ptr<scalar_t>(), k, B, n,
                        Given<scalar_t>{});
    }
  });
  int64_t active = k;
  if (eps > 0) {
    AT_DISPATCH_FLOATING_TYPES(norms.scalar_type(), "rec_lra_learns", [&] {
      for (int64_t i = 0; i < k; ++i) {
        learns[i] = norms.data_ptr<scalar_t>()[i] >= eps;
        active -= learns[i] ? 0 : 1;
      }
    });
  }
  if (learns[0]) {
    give_grad(W[0], scaled_mm(recycled(pool[1], W[0].sizes(), opts), H.select(0, 0).t(), x, inv));
  }
  if (active == k && k > 1) {  // every layer at once: dW_i = Err_i^T z_{i-1} / B, one GEMM
    at::Tensor& dW = recycled(pool[0], {k - 1, n, n}, opts);
    at::baddbmm_out(dW, dW, H.slice(0, 1).transpose(1, 2), Z.slice(0, 0, k - 1), 0.0, inv);
    for (int64_t i = 1; i < k; ++i) give_grad(W[i], dW.select(0, i - 1));
  } else {  // the learning layers one by one; the others' GEMMs are not done at all
    for (int64_t i = 1; i < k; ++i) {
      if (learns[i]) {
        at::Tensor out = at::empty({n, n}, opts);
        give_grad(W[i], scaled_mm(out, H.select(0, i).t(), Z.select(0, i - 1), inv));
      }
    }
  }
  for (int64_t i = 0; i < k; ++i) {
    if (learns[i]) give_grad(b[i], db.select(0, i));
  }
  std::vector<at::Tensor> out = {at::scalar_tensor(loss, opts)};
  out.insert(out.end(), pool.begin(), pool.end());
  for (int64_t i = 0; i <= k; ++i) out.push_back(norms.select(0, i));
  return out;
}

// f as the step's passes compute it, in place on h (contiguous, float32 or float64): what the
// tests, experiments/speed/fit_tanh.py and tanh_kernels.py check and time
at::Tensor activate_(at::Tensor h, int64_t f) {
  TORCH_CHECK(f == kTanh || f == kSigmoid, "f is 0 (tanh) or 1 (sigmoid), not ", f);
  TORCH_CHECK(h.is_contiguous(), "h must be contiguous");
  if (!kFInPasses) {
    activate_out(h, h, f);
    return h;
  }
  AT_DISPATCH_FLOATING_TYPES(h.scalar_type(), "rec_lra_activate", [&] {
    scalar_t* p = h.data_ptr<scalar_t>();
    with_activation<scalar_t>(f, [&](auto act) {
      at::parallel_for(0, h.numel(), at::internal::GRAIN_SIZE, [&](int64_t begin, int64_t end) {
        over_row<scalar_t>(end - begin, [&](int64_t c, int64_t m) {
          store(act(load(p + begin + c, m)), p + begin + c, m);
        });
      });
    });
  });
  return h;
}

// How many threads at::parallel_for gives the step's loops: torch's thread count in a build with
// OpenMP, 1 in one without (at::parallel_for is inline, and serial in code built without it)
int64_t loop_threads() {
  const int64_t n = at::get_num_threads();
  std::vector<int> seen(n, 0);
  at::parallel_for(0, n, 1, [&](int64_t, int64_t) { seen[at::get_thread_num()] = 1; });
  return std::count(seen.begin(), seen.end(), 1);
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("step", &step, "one rec-LRA step of a plain MLP on the skip pathway");
  m.def("activate_", &activate_, "f (0: tanh, 1: sigmoid) as the step computes it, in place");
  m.def("loop_threads", &loop_threads, "threads the step's loops run on");
#ifdef _OPENMP
  m.attr("openmp") = true;
#else
  m.attr("openmp") = false;
#endif
  m.attr("f_in_passes") = kFInPasses;
}
