// Flat C API over the kernels, for the Python benchmark (ctypes) and other
// non-C++ callers.  All tensors contiguous; dtype 0 = bf16, 1 = fp16.  Whole
// sequences only: T queries against the same T keys (Tq = Tk = T, q_offset 0).
// Each function returns NULL on success, else a message valid until the next call.
#include <string>

#include "attn_stats.cuh"
#include "select.cuh"
#include "sparse_bwd.cuh"
#include "sparse_fwd.cuh"

using namespace ssa;

static thread_local std::string g_err;
static const char* ret(const std::string& e) {
  g_err = e;
  return g_err.empty() ? nullptr : g_err.c_str();
}
static Strides4 contig(int H, int T, int D) { return {int64_t(H) * T * D, int64_t(T) * D, D}; }
// Shape fields of any params struct for a whole sequence of length T.
template <class P>
static P& whole(P& p, int B, int Hq, int Hkv, int T, int D, int bs, int K, int dt) {
  p.B = B; p.Hq = Hq; p.Hkv = Hkv; p.Tq = p.Tk = T; p.q_offset = 0; p.D = D;
  p.block_size = bs; p.top_k = K; p.dtype = DType(dt);
  return p;
}
static SelectParams sel_params(const void* q, const void* k, int B, int Hq, int Hkv, int T, int D, int bs, int K,
                               int dt) {
  SelectParams p;
  p.q = q;
  p.k = k;
  p.q_s = contig(Hq, T, D);
  p.k_s = contig(Hkv, T, D);
  return whole(p, B, Hq, Hkv, T, D, bs, K, dt);
}

extern "C" {

size_t ssa_select_ws(int B, int Hq, int Hkv, int T, int D, int bs, int K) {
  return select_workspace_bytes(sel_params(nullptr, nullptr, B, Hq, Hkv, T, D, bs, K, 0));
}
const char* ssa_select(const void* q, const void* k, void* kbar, int32_t* blocks, int32_t* counts, int B, int Hq,
                       int Hkv, int T, int D, int bs, int K, int dt, void* stream) {
  SelectParams p = sel_params(q, k, B, Hq, Hkv, T, D, bs, K, dt);
  p.kbar = kbar;
  p.blocks = blocks;
  p.counts = counts;
  return ret(select_blocks(p, cudaStream_t(stream)));
}
size_t ssa_block_index_ws(int B, int Hkv, int T, int K, int bs) {
  BlockIndexParams p;
  p.B = B; p.Hkv = Hkv; p.Tq = p.Tk = T; p.K = K; p.block_size = bs;
  return block_index_workspace_bytes(p);
}
const char* ssa_block_index(const int32_t* blocks, int32_t* offsets, int32_t* tokens, int32_t* work, int B, int Hkv,
                            int T, int K, int bs, void* stream) {
  BlockIndexParams p;
  p.blocks = blocks; p.offsets = offsets; p.tokens = tokens; p.work = work;
  p.B = B; p.Hkv = Hkv; p.Tq = p.Tk = T; p.K = K; p.block_size = bs;
  return ret(build_block_index(p, cudaStream_t(stream)));
}
const char* ssa_sparse_fwd(const void* q, const void* k, const void* v, void* o, float* lse, const int32_t* blocks,
                           int B, int Hq, int Hkv, int T, int D, int bs, int K, int dt, void* stream) {
  SparseFwdParams p;
  p.q = q; p.k = k; p.v = v; p.o = o; p.lse = lse; p.blocks = blocks;
  p.q_s = contig(Hq, T, D); p.k_s = contig(Hkv, T, D); p.v_s = p.k_s; p.o_s = p.q_s;
  return ret(sparse_fwd(whole(p, B, Hq, Hkv, T, D, bs, K, dt), cudaStream_t(stream)));
}
const char* ssa_sparse_bwd(const void* q, const void* k, const void* v, const void* o, const void* dout,
                           const float* lse, const int32_t* blocks, const int32_t* offsets, const int32_t* tokens,
                           void* dq, void* dk, void* dv, void* workspace, int B, int Hq, int Hkv, int T, int D, int bs,
                           int K, int dt, void* stream) {
  SparseBwdParams p;
  p.q = q; p.k = k; p.v = v; p.o = o; p.dout = dout; p.lse = lse; p.blocks = blocks;
  p.index_offsets = offsets; p.index_tokens = tokens; p.dq = dq; p.dk = dk; p.dv = dv; p.workspace = workspace;
  p.q_s = contig(Hq, T, D); p.k_s = contig(Hkv, T, D);
  p.v_s = p.k_s; p.o_s = p.q_s; p.do_s = p.q_s; p.dq_s = p.q_s; p.dk_s = p.k_s; p.dv_s = p.k_s;
  return ret(sparse_bwd(whole(p, B, Hq, Hkv, T, D, bs, K, dt), cudaStream_t(stream)));
}
size_t ssa_sparse_bwd_ws(int B, int Hq, int Hkv, int T, int D, int bs, int K) {
  SparseBwdParams p;
  return sparse_bwd_workspace_bytes(whole(p, B, Hq, Hkv, T, D, bs, K, 0));
}
size_t ssa_stats_map_elems(int B, int Hq, int T, int bs, int row_pool, int mean_heads) {
  StatsParams p;
  p.B = B; p.Hq = Hq; p.Tq = p.Tk = T; p.block_size = bs; p.map_row_pool = row_pool; p.map_mean_heads = mean_heads != 0;
  return stats_map_elems(p);
}
const char* ssa_stats(const void* q, const void* k, const int32_t* blocks, float* stats, float* map, int row_pool,
                      int mean_heads, int B, int Hq, int Hkv, int T, int D, int bs, int K, int dt, void* stream) {
  StatsParams p;
  p.q = q; p.k = k; p.blocks = blocks; p.stats = stats; p.map = map;
  p.map_row_pool = row_pool; p.map_mean_heads = mean_heads != 0;
  p.q_s = contig(Hq, T, D); p.k_s = contig(Hkv, T, D);
  return ret(attn_stats(whole(p, B, Hq, Hkv, T, D, bs, K, dt), cudaStream_t(stream)));
}

}  // extern "C"
