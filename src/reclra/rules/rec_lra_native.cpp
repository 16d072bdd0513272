// The compiled rec-LRA step of a plain MLP on the skip pathway (see rec_lra_native.py).
//
// The maths of DenseSkipKernel.step (rec_lra_dense.py) for fixed synapses and every layer
// learning: the GEMMs are ATen's (MKL on CPU), the small and elementwise work around them is
// written here as loops over contiguous buffers, and every direction becomes the parameter's
// .grad (or is added to it) without a trip through Python:
//
//   h_i = W_i z_{i-1} + b_i, z_i = f(h_i)     into the stacks H, Z (k, B, n)
//   e_L = softmax(h_L) - onehot(y)            with the mean CE and mean ||e_L||
//   Y = f(H - beta e_L E_stack^T)             one batched GEMM adding onto H, in place
//   Err = Z - Y                               with every row's norm and every bias sum, one pass
//   dW_1 = Err_1^T x / B,  dW_{2..k} = Err_{2..k}^T Z_{1..k-1} / B,  dW_L = e_L^T z_k / B
#include <torch/extension.h>

#include <ATen/Parallel.h>
#include <ATen/record_function.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace {

enum Activation : int64_t { kTanh = 0, kSigmoid = 1 };

void activate_out(at::Tensor& out, const at::Tensor& h, int64_t f) {
  if (f == kTanh) {
    at::tanh_out(out, h);
  } else {
    at::sigmoid_out(out, h);
  }
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

// In place on the logits h (B, C): e = softmax(h) - onehot(y). Returns the mean cross-entropy
// and the mean ||e||; db (C,) receives the batch mean of e.
template <typename T>
std::pair<double, double> output_error_(T* h, const int64_t* y, T* db, int64_t B, int64_t C) {
  double loss = 0.0, norm = 0.0;
  std::vector<double> col(C, 0.0);
  for (int64_t r = 0; r < B; ++r) {
    T* row = h + r * C;
    const int64_t label = y[r];
    TORCH_CHECK(label >= 0 && label < C, "label ", label, " out of range for ", C, " classes");
    T m = row[0];
    for (int64_t c = 1; c < C; ++c) m = std::max(m, row[c]);
    const double shifted = static_cast<double>(row[label] - m);
    double s = 0.0;
    for (int64_t c = 0; c < C; ++c) {  // exp(h - max), once per logit
      const double p = std::exp(static_cast<double>(row[c] - m));
      row[c] = static_cast<T>(p);
      s += p;
    }
    loss += std::log(s) - shifted;
    double sq = 0.0;
    for (int64_t c = 0; c < C; ++c) {
      const double e = static_cast<double>(row[c]) / s - (c == label ? 1.0 : 0.0);
      row[c] = static_cast<T>(e);
      col[c] += e;
      sq += e * e;
    }
    norm += std::sqrt(sq);
  }
  for (int64_t c = 0; c < C; ++c) db[c] = static_cast<T>(col[c] / B);
  return {loss / B, norm / B};
}

// In place on the targets Y (k, B, n): Err = Z - Y. norm (k,) receives every layer's mean row
// norm, db (k, n) every layer's batch mean of Err: one pass, the layers split between threads.
template <typename T>
void errors_(T* Y, const T* Z, T* norm, T* db, int64_t k, int64_t B, int64_t n) {
  at::parallel_for(0, k, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> sums(n);
    for (int64_t j = begin; j < end; ++j) {
      std::fill(sums.begin(), sums.end(), T(0));
      double total = 0.0;
      for (int64_t r = 0; r < B; ++r) {
        T* yr = Y + (j * B + r) * n;
        const T* zr = Z + (j * B + r) * n;
        T sq = 0;
#pragma omp simd reduction(+ : sq)
        for (int64_t c = 0; c < n; ++c) {
          const T e = zr[c] - yr[c];
          yr[c] = e;
          sums[c] += e;
          sq += e * e;
        }
        total += std::sqrt(static_cast<double>(sq));
      }
      norm[j] = static_cast<T>(total / B);
      for (int64_t c = 0; c < n; ++c) db[j * n + c] = sums[c] / static_cast<T>(B);
    }
  });
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
    at::addmm_out(Hi, b[i], z, W[i].t());
    activate_out(Zi, Hi, f);
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
  activate_out(H, H, f);                                        // y_i = f(h_i - beta d_i)
  AT_DISPATCH_FLOATING_TYPES(H.scalar_type(), "rec_lra_errors", [&] {
    RECORD_FUNCTION("reclra::errors", std::vector<c10::IValue>());
    errors_<scalar_t>(H.data_ptr<scalar_t>(), Z.data_ptr<scalar_t>(),
                      norms.data_ptr<scalar_t>(), db.data_ptr<scalar_t>(), k, B, n);
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
  m.def("loop_threads", &loop_threads, "threads the step's loops run on");
#ifdef _OPENMP
  m.attr("openmp") = true;
#else
  m.attr("openmp") = false;
#endif
}
