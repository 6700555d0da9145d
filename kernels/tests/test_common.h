// What the GPU kernel tests share (no LibTorch): test cases, device buffers,
// random 16-bit inputs, and the CPU references in fp64.
//
//  * selection: every slot is compared with the fp64 reference's block, except
//    where the two blocks' scores are equal within 1e-5 (near-ties can flip in
//    fp32);
//  * outputs: FlashAttention-style, max|kernel - fp64| <= 2 * max|lowp - fp64|
//    + atol, where lowp is the same computation in the kernel's precision
//    (16-bit operands, P and dS rounded to 16 bits, fp32 accumulation).
//
// Cases follow the kernels' contract (api_types.cuh): Tq queries at positions
// q_off .. q_off + Tq - 1 against T keys; Tq = 0 means the whole sequence.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "../select.cuh"

namespace ssa_test {

using namespace ssa;

#define CK(x)                                                                              \
  do {                                                                                     \
    cudaError_t e_ = (x);                                                                  \
    if (e_ != cudaSuccess) {                                                               \
      std::printf("CUDA error %s at %s:%d: %s\n", cudaGetErrorString(e_), __FILE__, __LINE__, #x); \
      std::exit(2);                                                                        \
    }                                                                                      \
  } while (0)
#define OK(x)                                                                \
  do {                                                                       \
    std::string e_ = (x);                                                    \
    if (!e_.empty()) {                                                       \
      std::printf("kernel error: %s at %s:%d\n", e_.c_str(), __FILE__, __LINE__); \
      std::exit(2);                                                          \
    }                                                                        \
  } while (0)

struct Case {
  DType dt;
  int D, B, Hq, Hkv, T, bs, K;  // T: keys (Tk)
  bool const_k = false;  // all keys equal: every selection score ties
  int seg_tokens = 512;  // dK/dV work-item size (small values exercise the split path)
  int Tq = 0;            // queries; 0 = T (the whole sequence)
  int q_off = 0;         // position of query 0
  // standard deviations of q and k (v and dout: 1): far from 1 they leave
  // fp16's range, which the selection's fp16 scoring must absorb
  float q_sd = 1.f, k_sd = 1.f;
  // each query row a step of an AR(1) walk from the previous token's (per head):
  // neighbouring tokens then select mostly the same blocks, as trained models'
  // do, and the forward's query tiles take over
  bool smooth_q = false;
  int tq() const { return Tq ? Tq : T; }
  bool cache() const { return tq() != T || q_off != 0; }
  // e.g. "bf16 d64 B1 Hq16 Hkv1 T1000 bs16 k16 seg7"; with a cache "... Tk600 Tq200 off350 ..."
  std::string desc() const {
    char len[64], range[64] = "", buf[260];
    if (cache()) std::snprintf(len, sizeof len, "Tk%d Tq%d off%d", T, tq(), q_off);
    else std::snprintf(len, sizeof len, "T%d", T);
    if (q_sd != 1.f || k_sd != 1.f) std::snprintf(range, sizeof range, " q-sd%.0e k-sd%.0e", q_sd, k_sd);
    std::snprintf(buf, sizeof buf, "%s d%d B%d Hq%d Hkv%d %s bs%d k%d%s%s%s seg%d", dtype_name(dt), D, B, Hq, Hkv,
                  len, bs, K, const_k ? " const-k" : "", range, smooth_q ? " smooth-q" : "", seg_tokens);
    return buf;
  }
  // Shape fields of a kernel's params struct.
  template <class P>
  void shape(P& p) const {
    p.B = B; p.Hq = Hq; p.Hkv = Hkv; p.D = D;
    p.Tq = tq(); p.Tk = T; p.q_offset = q_off;
    p.block_size = bs; p.top_k = K; p.dtype = dt;
  }
};

inline float round_to(DType dt, float x) {
  return dt == DType::bf16 ? __bfloat162float(__float2bfloat16(x)) : __half2float(__float2half(x));
}
inline uint16_t bits_of(DType dt, float x) {
  uint16_t u;
  if (dt == DType::bf16) {
    __nv_bfloat16 h = __float2bfloat16(x);
    std::memcpy(&u, &h, 2);
  } else {
    __half h = __float2half(x);
    std::memcpy(&u, &h, 2);
  }
  return u;
}
inline float float_of(DType dt, uint16_t u) {
  if (dt == DType::bf16) {
    __nv_bfloat16 h;
    std::memcpy(&h, &u, 2);
    return __bfloat162float(h);
  }
  __half h;
  std::memcpy(&h, &u, 2);
  return __half2float(h);
}

template <typename X>
struct DevBuf {
  X* p = nullptr;
  size_t n = 0;
  explicit DevBuf(size_t count) : n(count) { CK(cudaMalloc(&p, std::max<size_t>(1, n) * sizeof(X))); }
  ~DevBuf() { cudaFree(p); }
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;
  void poison() { CK(cudaMemset(p, 0xff, std::max<size_t>(1, n) * sizeof(X))); }
  std::vector<X> get() const {
    std::vector<X> h(n);
    if (n) CK(cudaMemcpy(h.data(), p, n * sizeof(X), cudaMemcpyDeviceToHost));
    return h;
  }
  void put(const std::vector<X>& h) { CK(cudaMemcpy(p, h.data(), n * sizeof(X), cudaMemcpyHostToDevice)); }
};

struct Tensor16 {  // host copy of a 16-bit tensor, values as float
  std::vector<float> f;
  std::vector<uint16_t> bits;
};
inline Tensor16 random16(DType dt, size_t n, std::mt19937& rng, float sd) {
  std::normal_distribution<float> nd(0.f, sd);
  Tensor16 t;
  t.f.resize(n);
  t.bits.resize(n);
  for (size_t i = 0; i < n; ++i) {
    t.bits[i] = bits_of(dt, nd(rng));
    t.f[i] = float_of(dt, t.bits[i]);
  }
  return t;
}
// Rows [r0, r0 + n) of a (BH, T, D) tensor: (BH, n, D), contiguous.
inline Tensor16 rows_of(const Tensor16& x, int BH, int T, int D, int r0, int n) {
  Tensor16 r;
  for (int bh = 0; bh < BH; ++bh) {
    const size_t from = (size_t(bh) * T + r0) * D, to = from + size_t(n) * D;
    r.f.insert(r.f.end(), x.f.begin() + from, x.f.begin() + to);
    r.bits.insert(r.bits.end(), x.bits.begin() + from, x.bits.begin() + to);
  }
  return r;
}
inline Strides4 contig(int H, int T, int D) { return {int64_t(H) * T * D, int64_t(T) * D, D}; }

// ------------------------------------------------------------ CPU references
// Selection in fp64 for q (B,Hq,Tq,D) at positions q_off.. against k
// (B,Hkv,T,D); returns blocks (B,Hkv,Tq,K) and scores (B,Hkv,Tq,max(1,nbc)).
inline void ref_select(const Case& c, const Tensor16& q, const Tensor16& k, std::vector<int>& blocks,
                       std::vector<double>& scores) {
  const int G = c.Hq / c.Hkv, nbc = c.T / c.bs, D = c.D, Tq = c.tq();
  blocks.assign(size_t(c.B) * c.Hkv * Tq * c.K, -1);
  scores.assign(size_t(c.B) * c.Hkv * Tq * std::max(1, nbc), 0.0);
  std::vector<double> kbar(size_t(nbc) * D), s(nbc);
  for (int b = 0; b < c.B; ++b)
    for (int hk = 0; hk < c.Hkv; ++hk) {
      const float* kp = &k.f[((size_t(b) * c.Hkv + hk) * c.T) * D];
      for (int j = 0; j < nbc; ++j)
        for (int d = 0; d < D; ++d) {
          double a = 0;
          for (int u = 0; u < c.bs; ++u) a += kp[size_t(j * c.bs + u) * D + d];
          kbar[size_t(j) * D + d] = a / c.bs;
        }
      for (int i = 0; i < Tq; ++i) {
        const int t = c.q_off + i, bt = t / c.bs, nvis = (t + 1) / c.bs;
        double* sc = &scores[((size_t(b) * c.Hkv + hk) * Tq + i) * std::max(1, nbc)];
        for (int h = 0; h < G && nvis > 0; ++h) {
          const float* qp = &q.f[((size_t(b) * c.Hq + hk * G + h) * Tq + i) * D];
          double mx = -1e300;
          for (int j = 0; j < nvis; ++j) {
            double a = 0;
            for (int d = 0; d < D; ++d) a += double(qp[d]) * kbar[size_t(j) * D + d];
            s[j] = a / std::sqrt(double(D));
            mx = std::max(mx, s[j]);
          }
          double sum = 0;
          for (int j = 0; j < nvis; ++j) sum += std::exp(s[j] - mx);
          for (int j = 0; j < bt; ++j) sc[j] += std::exp(s[j] - mx) / sum;
        }
        std::vector<int> idx(bt);
        std::iota(idx.begin(), idx.end(), 0);
        std::stable_sort(idx.begin(), idx.end(), [&](int a, int b2) { return sc[a] > sc[b2]; });
        int* out = &blocks[((size_t(b) * c.Hkv + hk) * Tq + i) * c.K];
        out[0] = bt;
        for (int j = 0; j < std::min(c.K - 1, bt); ++j) out[1 + j] = idx[j];
      }
    }
}

// Every block visible to each query, own block first: the selection that
// makes sparse attention full causal attention.  (B,Hkv,Tq,nb), nb = ceil(T/bs).
inline std::vector<int> all_blocks(const Case& c) {
  const int nb = (c.T + c.bs - 1) / c.bs, Tq = c.tq();
  std::vector<int> all(size_t(c.B) * c.Hkv * Tq * nb, -1);
  for (size_t r = 0; r < size_t(c.B) * c.Hkv * Tq; ++r) {
    const int t = c.q_off + int(r % Tq), bt = t / c.bs;
    all[r * nb] = bt;
    for (int j = 0; j < bt; ++j) all[r * nb + 1 + j] = j;
  }
  return all;
}

// Sparse attention forward+backward for the given selection (K slots per
// query; pass c with K = nb and all_blocks() for full attention).  lowp =
// emulate the kernels' precision (16-bit P and dS, 16-bit outputs); else fp64.
struct Grads {
  std::vector<double> o, lse, dq, dk, dv;
};
inline Grads ref_attention(const Case& c, const Tensor16& q, const Tensor16& k, const Tensor16& v,
                           const Tensor16& dout, const std::vector<int>& blocks, bool lowp) {
  const int G = c.Hq / c.Hkv, D = c.D, Tq = c.tq();
  const double scale = 1.0 / std::sqrt(double(D));
  auto rnd = [&](double x) { return lowp ? double(round_to(c.dt, float(x))) : x; };
  auto acc = [&](double x) { return lowp ? double(float(x)) : x; };
  Grads r;
  r.o.assign(q.f.size(), 0);
  r.dq.assign(q.f.size(), 0);
  r.dk.assign(k.f.size(), 0);
  r.dv.assign(k.f.size(), 0);
  r.lse.assign(size_t(c.B) * c.Hq * Tq, 0);
  std::vector<int> keys;
  std::vector<double> s, p, dp;
  for (int b = 0; b < c.B; ++b)
    for (int hk = 0; hk < c.Hkv; ++hk)
      for (int i = 0; i < Tq; ++i) {
        const int t = c.q_off + i;  // the query's position
        keys.clear();
        const int* sel = &blocks[((size_t(b) * c.Hkv + hk) * Tq + i) * c.K];
        for (int x = 0; x < c.K && sel[x] >= 0; ++x)
          for (int u = sel[x] * c.bs; u < std::min(c.T, (sel[x] + 1) * c.bs); ++u)
            if (u <= t) keys.push_back(u);
        const size_t kvb = (size_t(b) * c.Hkv + hk) * c.T;
        for (int h = 0; h < G; ++h) {
          const size_t row = (size_t(b) * c.Hq + hk * G + h) * Tq + i;
          const float* qp = &q.f[row * D];
          const float* dop = &dout.f[row * D];
          s.assign(keys.size(), 0);
          p.assign(keys.size(), 0);
          dp.assign(keys.size(), 0);
          double mx = -1e300;
          for (size_t x = 0; x < keys.size(); ++x) {
            double a = 0;
            const float* kp = &k.f[(kvb + keys[x]) * D];
            for (int d = 0; d < D; ++d) a += double(qp[d]) * kp[d];
            s[x] = acc(a) * scale;
            mx = std::max(mx, s[x]);
          }
          double l = 0;
          for (size_t x = 0; x < keys.size(); ++x) l += std::exp(s[x] - mx);
          const double lse = mx + std::log(l);
          r.lse[row] = lse;
          for (size_t x = 0; x < keys.size(); ++x) p[x] = std::exp(s[x] - lse);
          std::vector<double> o(D, 0.0);
          for (size_t x = 0; x < keys.size(); ++x) {
            const float* vp = &v.f[(kvb + keys[x]) * D];
            double pi = lowp ? rnd(std::exp(s[x] - mx)) / l : p[x];
            for (int d = 0; d < D; ++d) o[d] += pi * vp[d];
          }
          for (int d = 0; d < D; ++d) r.o[row * D + d] = rnd(o[d]);
          // backward: delta from the (rounded) output, as the kernels do
          double delta = 0;
          for (int d = 0; d < D; ++d) delta += double(dop[d]) * r.o[row * D + d];
          for (size_t x = 0; x < keys.size(); ++x) {
            const float* vp = &v.f[(kvb + keys[x]) * D];
            double a = 0;
            for (int d = 0; d < D; ++d) a += double(dop[d]) * vp[d];
            dp[x] = acc(a);
          }
          for (size_t x = 0; x < keys.size(); ++x) {
            const double ds = rnd(p[x] * (dp[x] - delta)), pr = rnd(p[x]);
            const float* kp = &k.f[(kvb + keys[x]) * D];
            for (int d = 0; d < D; ++d) {
              r.dq[row * D + d] += ds * kp[d] * scale;
              r.dk[(kvb + keys[x]) * D + d] += ds * qp[d] * scale;
              r.dv[(kvb + keys[x]) * D + d] += pr * dop[d];
            }
          }
        }
      }
  if (lowp) {
    for (auto* vec : {&r.dq, &r.dk, &r.dv})
      for (auto& x : *vec) x = rnd(x);
  }
  return r;
}

inline double max_err(const std::vector<double>& ref, const std::vector<float>& got, bool* nan = nullptr) {
  double e = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    if (!std::isfinite(got[i])) {
      if (nan) *nan = true;
      return INFINITY;
    }
    e = std::max(e, std::fabs(ref[i] - got[i]));
  }
  return e;
}
inline double max_err(const std::vector<double>& ref, const std::vector<double>& got) {
  double e = 0;
  for (size_t i = 0; i < ref.size(); ++i) e = std::max(e, std::fabs(ref[i] - got[i]));
  return e;
}
inline double max_abs(const std::vector<double>& x) {
  double m = 0;
  for (double v : x) m = std::max(m, std::fabs(v));
  return m;
}
inline std::vector<float> to_float(DType dt, const std::vector<uint16_t>& u) {
  std::vector<float> f(u.size());
  for (size_t i = 0; i < u.size(); ++i) f[i] = float_of(dt, u[i]);
  return f;
}

inline int g_fail = 0;
inline void check(bool ok, const char* what, const std::string& detail) {
  std::printf("    %-34s %s  %s\n", what, ok ? "ok  " : "FAIL", detail.c_str());
  if (!ok) ++g_fail;
}
inline std::string fmt(const char* f, double a, double b = 0, double c2 = 0) {
  char buf[200];
  std::snprintf(buf, sizeof buf, f, a, b, c2);
  return buf;
}
// The FlashAttention-style output check of the file header.
inline void check_output(const char* name, const std::vector<double>& exact, const std::vector<double>& lowp,
                         const std::vector<float>& got) {
  const double e_k = max_err(exact, got), e_l = max_err(exact, lowp), atol = 1e-3 * max_abs(exact) + 1e-5;
  check(e_k <= 2 * e_l + atol, name, fmt("kernel err %.3g  lowp err %.3g  max|ref| %.3g", e_k, e_l, max_abs(exact)));
}

// Inputs of one case on the host and the device.  Queries are drawn for all T
// positions and a cache case runs on rows q_off .. q_off + Tq - 1 of them in
// place (the kernels see the whole tensor's strides); q and dout here are those
// rows, contiguous, for the references.
struct Inputs {
  Case case_;
  Tensor16 q, k, v, dout;
  DevBuf<uint16_t> q_all, k_dev, v_dev, dout_dev;
  Strides4 q_s, kv_s, o_s;  // q_all's strides; K/V's; contiguous (B, Hq, Tq, D) outputs
  const uint16_t* q_dev() const { return q_all.p + size_t(case_.q_off) * case_.D; }
  Inputs(const Case& c, std::mt19937& rng)
      : case_(c),
        q_all(size_t(c.B) * c.Hq * c.T * c.D),
        k_dev(size_t(c.B) * c.Hkv * c.T * c.D),
        v_dev(k_dev.n),
        dout_dev(size_t(c.B) * c.Hq * c.tq() * c.D) {
    Tensor16 q_full = random16(c.dt, q_all.n, rng, c.q_sd);
    if (c.smooth_q)  // q[t] = 0.95 q[t-1] + 0.31 noise keeps the variance (0.95^2 + 0.31^2 ~ 1)
      for (size_t row = 0; row < size_t(c.B) * c.Hq; ++row)
        for (int t = 1; t < c.T; ++t)
          for (int d = 0; d < c.D; ++d) {
            const size_t i = (row * c.T + t) * c.D + d, prev = i - c.D;
            q_full.bits[i] = bits_of(c.dt, 0.95f * q_full.f[prev] + 0.31f * q_full.f[i]);
            q_full.f[i] = float_of(c.dt, q_full.bits[i]);
          }
    k = random16(c.dt, k_dev.n, rng, c.k_sd);
    v = random16(c.dt, v_dev.n, rng, 1.f);
    dout = random16(c.dt, dout_dev.n, rng, 1.f);
    if (c.const_k)
      for (size_t i = 0; i < k.f.size(); ++i) {
        k.bits[i] = k.bits[i % c.D];
        k.f[i] = k.f[i % c.D];
      }
    q = rows_of(q_full, c.B * c.Hq, c.T, c.D, c.q_off, c.tq());
    q_all.put(q_full.bits);
    k_dev.put(k.bits);
    v_dev.put(v.bits);
    dout_dev.put(dout.bits);
    q_s = contig(c.Hq, c.T, c.D);
    kv_s = contig(c.Hkv, c.T, c.D);
    o_s = contig(c.Hq, c.tq(), c.D);
  }
};

// Runs the selection kernel; returns blocks (B,Hkv,Tq,K) and counts (B,Hkv,Tq).
inline void run_selection(const Inputs& in, DevBuf<int32_t>& blocks, DevBuf<int32_t>& counts,
                          bool register_slots = false, bool nsa_chunked = false) {
  const Case& c = in.case_;
  SelectParams sp;
  c.shape(sp);
  sp.register_slots = register_slots;
  sp.nsa_chunked = nsa_chunked;
  sp.q = in.q_dev();
  sp.k = in.k_dev.p;
  sp.q_s = in.q_s;
  sp.k_s = in.kv_s;
  DevBuf<float> kbar(select_workspace_bytes(sp) / 4 + 1);
  blocks.poison();
  counts.poison();
  sp.kbar = kbar.p;
  sp.blocks = blocks.p;
  sp.counts = counts.p;
  OK(select_supported(sp));
  OK(select_blocks(sp, 0));
  CK(cudaDeviceSynchronize());
}

}  // namespace ssa_test
