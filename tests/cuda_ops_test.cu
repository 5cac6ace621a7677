// GPU tests of kernels/hllm/cuda/norm.cuh, rope.cuh and activation.cuh against CPU references in
// double on the same bf16-rounded inputs: RMSNorm (plain and fused with the residual add), RoPE
// with the paged KV store for every rope scaling type (and at positions up to 131071 against the
// CPU op), SwiGLU, add, embedding, bf16 -> fp32, and the launchers' argument checks.
//
// Without a GPU the whole binary prints one "skipped: no GPU (...)" line and exits 0.
#define HLLM_GPU_TEST_MAIN
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <numeric>
#include <random>
#include <set>
#include <vector>

#include "gpu_test_util.cuh"
#include "hllm/core/tensor.hpp"
#include "hllm/core/threads.hpp"
#include "hllm/cpu/rope.hpp"
#include "hllm/cuda/activation.cuh"
#include "hllm/cuda/norm.cuh"
#include "hllm/cuda/rope.cuh"
#include "hllm/layout/paged_kv.hpp"
#include "hllm/model/config.hpp"
#include "hllm/model/rope.hpp"

namespace hllm::cuda {
namespace {

using test::all_close;
using test::random_values;

__nv_bfloat16* nv(DeviceBuffer<bf16>& b) { return reinterpret_cast<__nv_bfloat16*>(b.data()); }

void sync() { HLLM_CUDA_CHECK(cudaDeviceSynchronize()); }

std::vector<float> download_f32(const DeviceBuffer<bf16>& b) {
  return test::to_float(b.download());
}

double bf16_round(double x) { return to_f32(f32_to_bf16(static_cast<float>(x))); }

// ---- RMSNorm ------------------------------------------------------------------------------------

constexpr float EPS = 1e-5f;
constexpr double BF16_RTOL = 8e-3;

// out = weight * x / rms(x), double.
std::vector<double> rmsnorm_ref(const std::vector<float>& x, const std::vector<float>& w, int rows,
                                int width) {
  std::vector<double> out(x.size());
  for (int r = 0; r < rows; ++r) {
    double ss = 0.0;
    for (int i = 0; i < width; ++i) ss += static_cast<double>(x[r * width + i]) * x[r * width + i];
    const double inv_rms = 1.0 / std::sqrt(ss / width + EPS);
    for (int i = 0; i < width; ++i) out[r * width + i] = w[i] * (x[r * width + i] * inv_rms);
  }
  return out;
}

TEST(CudaNorm, RmsnormMatchesCpu) {
  std::mt19937 rng(11);
  for (int width : {512, 4096, 14336, 8}) {
    for (int rows : {1, 3, 17}) {
      const auto x = random_values<bf16>(static_cast<size_t>(rows) * width, rng, -2.0f, 2.0f);
      const auto w = random_values<bf16>(width, rng, 0.5f, 1.5f);
      DeviceBuffer<bf16> d_x(x), d_w(w), d_out(x.size());
      d_out.poison();
      launch_rmsnorm(nv(d_x), nv(d_w), EPS, nv(d_out), rows, width, nullptr);
      sync();
      const auto ref = rmsnorm_ref(test::to_float(x), test::to_float(w), rows, width);
      EXPECT_TRUE(all_close(download_f32(d_out), ref, 1e-3, BF16_RTOL))
          << "width " << width << " rows " << rows;
      // In place (out aliases x).
      launch_rmsnorm(nv(d_x), nv(d_w), EPS, nv(d_x), rows, width, nullptr);
      sync();
      EXPECT_TRUE(all_close(download_f32(d_x), ref, 1e-3, BF16_RTOL))
          << "in place, width " << width << " rows " << rows;
    }
  }
}

TEST(CudaNorm, AddRmsnormMatchesCpu) {
  std::mt19937 rng(12);
  for (int width : {512, 4096, 14336, 8}) {
    for (int rows : {1, 3, 17}) {
      const size_t n = static_cast<size_t>(rows) * width;
      const auto x = random_values<bf16>(n, rng, -2.0f, 2.0f);
      const auto y = random_values<bf16>(n, rng, -1.0f, 1.0f);
      const auto w = random_values<bf16>(width, rng, 0.5f, 1.5f);
      DeviceBuffer<bf16> d_x(x), d_y(y), d_w(w), d_out(n);
      d_out.poison();
      launch_add_rmsnorm(nv(d_x), nv(d_y), nv(d_w), EPS, nv(d_out), rows, width, nullptr);
      sync();
      // The new residual is bf16(x + y), bit for bit; the norm sees that rounded value.
      std::vector<float> sum(n);
      std::vector<double> sum_ref(n);
      for (size_t i = 0; i < n; ++i) {
        sum[i] = to_f32(f32_to_bf16(to_f32(x[i]) + to_f32(y[i])));
        sum_ref[i] = sum[i];
      }
      EXPECT_TRUE(all_close(download_f32(d_x), sum_ref, 0.0, 0.0))
          << "residual, width " << width << " rows " << rows;
      EXPECT_TRUE(all_close(download_f32(d_out), rmsnorm_ref(sum, test::to_float(w), rows, width),
                            1e-3, BF16_RTOL))
          << "norm, width " << width << " rows " << rows;
    }
  }
}

TEST(CudaNorm, RejectsBadArguments) {
  DeviceBuffer<bf16> buf(16400 * 2);
  __nv_bfloat16* p = nv(buf);
  EXPECT_THROW(launch_rmsnorm(p, p, EPS, p, 1, 12, nullptr), Error);
  EXPECT_THROW(launch_rmsnorm(p, p, EPS, p, 1, 0, nullptr), Error);
  EXPECT_THROW(launch_rmsnorm(p, p, EPS, p, 1, 16392, nullptr), Error);
  EXPECT_THROW(launch_rmsnorm(p, p, EPS, p, -1, 64, nullptr), Error);
  EXPECT_THROW(launch_rmsnorm(p + 1, p, EPS, p, 1, 64, nullptr), Error);  // misaligned
  EXPECT_THROW(launch_add_rmsnorm(p, p, p, EPS, p, 1, 20, nullptr), Error);
  EXPECT_THROW(launch_add_rmsnorm(p, nullptr, p, EPS, p, 1, 64, nullptr), Error);
  EXPECT_NO_THROW(launch_rmsnorm(p, p, EPS, p, 0, 64, nullptr));  // no rows: nothing to do
}

// ---- RoPE + paged KV store ----------------------------------------------------------------------

LlamaConfig rope_config(RopeType type, int head_dim) {
  LlamaConfig c;
  c.hidden_size = 4096;
  c.head_dim = head_dim;
  c.rope_theta = 500000.0;
  c.max_position_embeddings = 131072;
  c.rope_scaling.type = type;
  switch (type) {
    case RopeType::linear:
      c.rope_scaling.factor = 4.0;
      break;
    case RopeType::llama3:
      c.rope_scaling.factor = 8.0;
      c.rope_scaling.low_freq_factor = 1.0;
      c.rope_scaling.high_freq_factor = 4.0;
      c.rope_scaling.original_max_position_embeddings = 8192;
      break;
    case RopeType::yarn:  // factor = 32768 / 8192 = 4, attention factor 0.1 ln 4 + 1
      c.max_position_embeddings = 32768;
      c.rope_scaling.factor = 4.0;
      c.rope_scaling.original_max_position_embeddings = 8192;
      break;
    default:
      break;
  }
  return c;
}

struct RopeCase {
  RopeType type;
  int n_heads, n_kv_heads, head_dim;
};

TEST(CudaRope, RotatesQAndStoresKvInPagedCache) {
  const std::vector<RopeCase> cases = {
      {RopeType::none, 32, 8, 128}, {RopeType::linear, 32, 8, 128}, {RopeType::llama3, 32, 8, 128},
      {RopeType::yarn, 32, 8, 128}, {RopeType::none, 4, 1, 64},     {RopeType::llama3, 4, 1, 64},
      {RopeType::yarn, 4, 1, 64},   {RopeType::linear, 4, 1, 64},
  };
  std::mt19937 rng(21);
  for (const RopeCase& rc : cases) {
    SCOPED_TRACE(std::string(rope_type_name(rc.type)) + " heads " + std::to_string(rc.n_heads) +
                 "/" + std::to_string(rc.n_kv_heads) + " head_dim " + std::to_string(rc.head_dim));
    const RopeTable table = rope_table(rope_config(rc.type, rc.head_dim));
    const int head_dim = rc.head_dim, half = head_dim / 2;
    const int n_heads = rc.n_heads, n_kv_heads = rc.n_kv_heads;

    // Tokens: sequence 0 a contiguous run ending at position 19999 (crossing block boundaries),
    // sequence 1 scattered positions including block edges; tokens interleaved.
    constexpr int BLOCK_SIZE = 16, N_SEQS = 2, MAX_POS = 20000;
    std::vector<int32_t> seqs, positions;
    for (int p = MAX_POS - 19; p < MAX_POS; ++p) seqs.push_back(0), positions.push_back(p);
    for (int p : {0, 1, 15, 16, 17, 31, 4095, 4096, 8191, 8192, 12345, 16383, 19998, 777})
      seqs.push_back(1), positions.push_back(p);
    std::vector<int> order(seqs.size());
    std::iota(order.begin(), order.end(), 0);
    std::shuffle(order.begin(), order.end(), rng);
    std::vector<int32_t> token_seq, token_pos;
    for (int i : order) token_seq.push_back(seqs[i]), token_pos.push_back(positions[i]);
    const int n_tokens = static_cast<int>(token_seq.size());

    // Block tables: only the logical blocks the tokens touch get a physical block (shuffled ids,
    // plus spares nobody writes); every other entry is -1 and must never be read.
    const int max_blocks_per_seq = MAX_POS / BLOCK_SIZE + 1;
    std::vector<int32_t> block_tables(N_SEQS * max_blocks_per_seq, -1);
    std::set<std::pair<int, int>> needed;
    for (int t = 0; t < n_tokens; ++t) needed.insert({token_seq[t], token_pos[t] / BLOCK_SIZE});
    const int n_blocks = static_cast<int>(needed.size()) + 3;
    std::vector<int32_t> physical(n_blocks);
    std::iota(physical.begin(), physical.end(), 0);
    std::shuffle(physical.begin(), physical.end(), rng);
    int next = 0;
    for (const auto& [s, b] : needed) block_tables[s * max_blocks_per_seq + b] = physical[next++];

    const size_t row_elems = static_cast<size_t>(n_kv_heads) * head_dim;
    const size_t pool_elems = static_cast<size_t>(n_blocks) * BLOCK_SIZE * row_elems;
    const auto q = random_values<bf16>(static_cast<size_t>(n_tokens) * n_heads * head_dim, rng);
    const auto k = random_values<bf16>(n_tokens * row_elems, rng);
    const auto v = random_values<bf16>(n_tokens * row_elems, rng);
    const auto k_pool = random_values<bf16>(pool_elems, rng);  // "previous" cache contents
    const auto v_pool = random_values<bf16>(pool_elems, rng);

    DeviceBuffer<bf16> d_q(q), d_k(k), d_v(v), d_k_pool(k_pool), d_v_pool(v_pool);
    DeviceBuffer<int32_t> d_seq(token_seq), d_pos(token_pos), d_tables(block_tables);
    DeviceBuffer<float> d_inv_freq(table.inv_freq);
    const PagedKvView kv{.k = d_k_pool.data(),
                         .v = d_v_pool.data(),
                         .block_tables = d_tables.data(),
                         .max_blocks_per_seq = max_blocks_per_seq,
                         .block_size = BLOCK_SIZE,
                         .n_kv_heads = n_kv_heads,
                         .head_dim = head_dim};
    launch_rope_store_kv(nv(d_q), nv(d_k), nv(d_v), n_tokens, n_heads, n_kv_heads, head_dim,
                         d_seq.data(), d_pos.data(), d_inv_freq.data(), table.attention_factor, kv,
                         nullptr);
    sync();

    // CPU reference: same float angle, double cos/sin and products.
    const auto rotate = [&](const std::vector<bf16>& x, size_t base, int32_t pos,
                            std::vector<double>& out, size_t out_base) {
      for (int i = 0; i < half; ++i) {
        const double angle = rope_angle(pos, table.inv_freq[i]);
        const double c = std::cos(angle) * table.attention_factor;
        const double s = std::sin(angle) * table.attention_factor;
        const double lo = to_f32(x[base + i]), hi = to_f32(x[base + i + half]);
        out[out_base + i] = lo * c - hi * s;
        out[out_base + i + half] = hi * c + lo * s;
      }
    };
    std::vector<double> q_ref(q.size());
    std::vector<double> k_pool_ref(pool_elems), v_pool_ref(pool_elems);
    for (size_t i = 0; i < pool_elems; ++i) k_pool_ref[i] = to_f32(k_pool[i]);
    for (size_t i = 0; i < pool_elems; ++i) v_pool_ref[i] = to_f32(v_pool[i]);
    PagedKvView host_kv = kv;
    host_kv.block_tables = block_tables.data();
    for (int t = 0; t < n_tokens; ++t) {
      for (int h = 0; h < n_heads; ++h) {
        const size_t base = (static_cast<size_t>(t) * n_heads + h) * head_dim;
        rotate(q, base, token_pos[t], q_ref, base);
      }
      const int64_t row = paged_kv_row(host_kv, token_seq[t], token_pos[t]);
      for (int g = 0; g < n_kv_heads; ++g) {
        const size_t src = (static_cast<size_t>(t) * n_kv_heads + g) * head_dim;
        const size_t dst = static_cast<size_t>(paged_kv_offset(host_kv, row, g));
        rotate(k, src, token_pos[t], k_pool_ref, dst);
        for (int i = 0; i < head_dim; ++i) v_pool_ref[dst + i] = to_f32(v[src + i]);
      }
    }
    const double atol = 2e-3 * table.attention_factor;
    EXPECT_TRUE(all_close(download_f32(d_q), q_ref, atol, BF16_RTOL)) << "q";
    // The k pool: written rows rotated, every other row unchanged (exactly: atol covers only the
    // rotated values' rounding, and unchanged rows compare equal).
    EXPECT_TRUE(all_close(download_f32(d_k_pool), k_pool_ref, atol, BF16_RTOL)) << "k cache";
    EXPECT_TRUE(all_close(download_f32(d_v_pool), v_pool_ref, 0.0, 0.0)) << "v cache";
    // Stronger check of the untouched rows: bit-identical.
    std::vector<uint8_t> written(static_cast<size_t>(n_blocks) * BLOCK_SIZE, 0);
    for (int t = 0; t < n_tokens; ++t)
      written[paged_kv_row(host_kv, token_seq[t], token_pos[t])] = 1;
    const auto k_after = d_k_pool.download();
    size_t changed = 0;
    for (size_t r = 0; r < written.size(); ++r) {
      if (written[r]) continue;
      for (size_t e = 0; e < row_elems; ++e)
        changed += k_after[r * row_elems + e].bits != k_pool[r * row_elems + e].bits;
    }
    EXPECT_EQ(changed, 0u) << "unwritten k cache rows changed";
  }
}

// Llama-3.1-8B's whole context (llama3 scaling, factor 8, head_dim 128, 32/8 heads): positions up
// to 131071, whose angles reach 131071 rad, where a reduced-range sine would be wrong; around
// 8192 (the original context) and the powers of two. The reference is the CPU op (cpu/rope.hpp,
// fp32 rotation from double cos/sin of the same float angle), so the two differ by the GPU's
// final bf16 rounding only: one half-ulp, 2^-8 of the value at most (rtol 4e-3).
TEST(CudaRope, LongContextPositionsMatchTheCpuOp) {
  const LlamaConfig config = rope_config(RopeType::llama3, 128);
  const RopeTable table = rope_table(config);
  constexpr int N_HEADS = 32, N_KV_HEADS = 8, HEAD_DIM = 128, BLOCK_SIZE = 16;
  const std::vector<int32_t> positions = {0,     1,     4095,  8191,   8192,   16384, 32767,
                                          65535, 65536, 98304, 100003, 131070, 131071};
  ASSERT_EQ(config.max_position_embeddings, 131072);
  const int n_tokens = static_cast<int>(positions.size());

  // One sequence whose table covers the whole context; only the tokens' blocks are mapped.
  const int max_blocks_per_seq = 131072 / BLOCK_SIZE;
  std::vector<int32_t> block_tables(max_blocks_per_seq, -1);
  std::map<int32_t, int32_t> physical;  // logical block -> physical block
  for (const int32_t pos : positions) physical.emplace(pos / BLOCK_SIZE, 0);
  int32_t next = 0;
  for (auto& [logical, id] : physical) block_tables[logical] = id = next++;
  const int n_blocks = next;

  std::mt19937 rng(22);
  const size_t row_elems = size_t{N_KV_HEADS} * HEAD_DIM;
  const auto q = random_values<bf16>(size_t(n_tokens) * N_HEADS * HEAD_DIM, rng);
  const auto k = random_values<bf16>(n_tokens * row_elems, rng);
  const auto v = random_values<bf16>(n_tokens * row_elems, rng);
  DeviceBuffer<bf16> d_q(q), d_k(k), d_v(v);
  DeviceBuffer<bf16> d_k_pool(size_t(n_blocks) * BLOCK_SIZE * row_elems);
  DeviceBuffer<bf16> d_v_pool(d_k_pool.size());
  d_k_pool.poison();
  d_v_pool.poison();
  const std::vector<int32_t> seqs(n_tokens, 0);
  DeviceBuffer<int32_t> d_seq(seqs), d_pos(positions), d_tables(block_tables);
  DeviceBuffer<float> d_inv_freq(table.inv_freq);
  const PagedKvView kv{.k = d_k_pool.data(),
                       .v = d_v_pool.data(),
                       .block_tables = d_tables.data(),
                       .max_blocks_per_seq = max_blocks_per_seq,
                       .block_size = BLOCK_SIZE,
                       .n_kv_heads = N_KV_HEADS,
                       .head_dim = HEAD_DIM};
  launch_rope_store_kv(nv(d_q), nv(d_k), nv(d_v), n_tokens, N_HEADS, N_KV_HEADS, HEAD_DIM,
                       d_seq.data(), d_pos.data(), d_inv_freq.data(), table.attention_factor, kv,
                       nullptr);
  sync();

  // The CPU op on fp32 copies of the same bf16 inputs.
  std::vector<float> q_cpu = test::to_float(q), k_cpu = test::to_float(k);
  const std::vector<int64_t> positions64(positions.begin(), positions.end());
  ThreadPool pool;
  cpu::apply_rope(Tensor(q_cpu.data(), DType::f32, {n_tokens, N_HEADS, HEAD_DIM}), positions64,
                  table, pool);
  cpu::apply_rope(Tensor(k_cpu.data(), DType::f32, {n_tokens, N_KV_HEADS, HEAD_DIM}), positions64,
                  table, pool);
  constexpr double ATOL = 1e-5, RTOL = 4e-3;
  EXPECT_TRUE(
      all_close(download_f32(d_q), std::vector<double>(q_cpu.begin(), q_cpu.end()), ATOL, RTOL))
      << "q";
  // The cache rows of the tokens: k rotated, v copied bit for bit.
  const std::vector<float> k_pool = download_f32(d_k_pool), v_pool = download_f32(d_v_pool);
  PagedKvView host_kv = kv;
  host_kv.block_tables = block_tables.data();
  std::vector<float> k_got, v_got;
  for (int t = 0; t < n_tokens; ++t) {
    const size_t at = size_t(paged_kv_offset(host_kv, paged_kv_row(host_kv, 0, positions[t]), 0));
    k_got.insert(k_got.end(), k_pool.begin() + at, k_pool.begin() + at + row_elems);
    v_got.insert(v_got.end(), v_pool.begin() + at, v_pool.begin() + at + row_elems);
  }
  EXPECT_TRUE(all_close(k_got, std::vector<double>(k_cpu.begin(), k_cpu.end()), ATOL, RTOL))
      << "k cache";
  const std::vector<float> v_in = test::to_float(v);
  EXPECT_TRUE(all_close(v_got, std::vector<double>(v_in.begin(), v_in.end()), 0.0, 0.0))
      << "v cache";
}

TEST(CudaRope, RejectsBadArguments) {
  DeviceBuffer<bf16> buf(4096);
  DeviceBuffer<int32_t> ints(16);
  DeviceBuffer<float> freq(64);
  __nv_bfloat16* p = nv(buf);
  PagedKvView kv;
  kv.k = buf.data();
  kv.v = buf.data();
  kv.block_tables = ints.data();
  kv.max_blocks_per_seq = 4;
  kv.block_size = 16;
  kv.n_kv_heads = 2;
  kv.head_dim = 64;
  const auto call = [&](int n_heads, int n_kv_heads, int head_dim, const PagedKvView& view) {
    launch_rope_store_kv(p, p, p, 1, n_heads, n_kv_heads, head_dim, ints.data(), ints.data(),
                         freq.data(), 1.0f, view, nullptr);
  };
  EXPECT_THROW(call(4, 2, 100, kv), Error);  // head_dim not a multiple of 16
  EXPECT_THROW(call(4, 2, 128, kv), Error);  // cache head_dim differs
  EXPECT_THROW(call(4, 1, 64, kv), Error);   // cache n_kv_heads differs
  EXPECT_THROW(call(5, 2, 64, kv), Error);   // n_heads not a multiple of n_kv_heads
  PagedKvView bad = kv;
  bad.block_size = 0;
  EXPECT_THROW(call(4, 2, 64, bad), Error);
  bad = kv;
  bad.block_tables = nullptr;
  EXPECT_THROW(call(4, 2, 64, bad), Error);
  EXPECT_THROW(launch_rope_store_kv(p, p, p, -1, 4, 2, 64, ints.data(), ints.data(), freq.data(),
                                    1.0f, kv, nullptr),
               Error);
}

// ---- Element-wise and embedding -----------------------------------------------------------------

TEST(CudaActivation, SwigluMatchesCpu) {
  std::mt19937 rng(31);
  for (int64_t n : {1, 7, 4096, 14337}) {
    const auto gate = random_values<bf16>(n, rng, -6.0f, 6.0f);
    const auto up = random_values<bf16>(n, rng, -2.0f, 2.0f);
    std::vector<double> ref(n);
    for (int64_t i = 0; i < n; ++i) {
      const double g = to_f32(gate[i]);
      ref[i] = g / (1.0 + std::exp(-g)) * to_f32(up[i]);
    }
    DeviceBuffer<bf16> d_gate(gate), d_up(up), d_out(n);
    d_out.poison();
    launch_swiglu(nv(d_gate), nv(d_up), nv(d_out), n, nullptr);
    sync();
    EXPECT_TRUE(all_close(download_f32(d_out), ref, 1e-4, BF16_RTOL)) << "n " << n;
    // Unaligned views (scalar path): elements 1 .. n-1.
    if (n > 1) {
      d_out.poison();
      launch_swiglu(nv(d_gate) + 1, nv(d_up) + 1, nv(d_out) + 1, n - 1, nullptr);
      sync();
      const auto got = download_f32(d_out);
      EXPECT_TRUE(all_close(std::vector<float>(got.begin() + 1, got.end()),
                            std::vector<double>(ref.begin() + 1, ref.end()), 1e-4, BF16_RTOL))
          << "unaligned n " << n;
    }
    // In place (out aliases gate).
    launch_swiglu(nv(d_gate), nv(d_up), nv(d_gate), n, nullptr);
    sync();
    EXPECT_TRUE(all_close(download_f32(d_gate), ref, 1e-4, BF16_RTOL)) << "in place n " << n;
  }
}

TEST(CudaActivation, AddMatchesCpuBitForBit) {
  std::mt19937 rng(32);
  for (int64_t n : {1, 7, 4096, 14337}) {
    const auto x = random_values<bf16>(n, rng, -3.0f, 3.0f);
    const auto y = random_values<bf16>(n, rng, -3.0f, 3.0f);
    std::vector<double> ref(n);
    for (int64_t i = 0; i < n; ++i) ref[i] = bf16_round(to_f32(x[i]) + to_f32(y[i]));
    DeviceBuffer<bf16> d_x(x), d_y(y);
    launch_add(nv(d_x), nv(d_y), n, nullptr);
    sync();
    EXPECT_TRUE(all_close(download_f32(d_x), ref, 0.0, 0.0)) << "n " << n;
  }
}

TEST(CudaActivation, ConvertToF32IsExact) {
  std::mt19937 rng(33);
  for (int64_t n : {1, 7, 4096, 14337}) {
    const auto x = random_values<bf16>(n, rng, -100.0f, 100.0f);
    std::vector<double> ref(n);
    for (int64_t i = 0; i < n; ++i) ref[i] = to_f32(x[i]);
    DeviceBuffer<bf16> d_x(x);
    DeviceBuffer<float> d_out(n);
    d_out.poison();
    launch_convert_to_f32(nv(d_x), d_out.data(), n, nullptr);
    sync();
    EXPECT_TRUE(all_close(d_out.download(), ref, 0.0, 0.0)) << "n " << n;
    if (n > 1) {  // unaligned (scalar path)
      d_out.poison();
      launch_convert_to_f32(nv(d_x) + 1, d_out.data() + 1, n - 1, nullptr);
      sync();
      const auto got = d_out.download();
      EXPECT_TRUE(all_close(std::vector<float>(got.begin() + 1, got.end()),
                            std::vector<double>(ref.begin() + 1, ref.end()), 0.0, 0.0))
          << "unaligned n " << n;
    }
  }
}

TEST(CudaActivation, EmbeddingGathersRowsAndZeroesBadIds) {
  std::mt19937 rng(34);
  constexpr int VOCAB = 1000;
  for (int width : {8, 24, 4096}) {
    const auto table = random_values<bf16>(static_cast<size_t>(VOCAB) * width, rng);
    const std::vector<int32_t> ids = {0, 999, 17, -1, 1000, 500, 17, 123456, 3};
    const int n = static_cast<int>(ids.size());
    DeviceBuffer<bf16> d_table(table), d_out(static_cast<size_t>(n) * width);
    DeviceBuffer<int32_t> d_ids(ids);
    d_out.poison();
    launch_embedding(nv(d_table), d_ids.data(), n, width, VOCAB, nv(d_out), nullptr);
    sync();
    const auto got = d_out.download();
    size_t wrong = 0;
    for (int t = 0; t < n; ++t) {
      const bool valid = ids[t] >= 0 && ids[t] < VOCAB;
      for (int i = 0; i < width; ++i) {
        const uint16_t want = valid ? table[static_cast<size_t>(ids[t]) * width + i].bits : 0;
        wrong += got[static_cast<size_t>(t) * width + i].bits != want;
      }
    }
    EXPECT_EQ(wrong, 0u) << "width " << width;
  }
}

TEST(CudaActivation, RejectsBadArguments) {
  DeviceBuffer<bf16> buf(64);
  DeviceBuffer<int32_t> ids(4);
  DeviceBuffer<float> f(64);
  __nv_bfloat16* p = nv(buf);
  EXPECT_THROW(launch_swiglu(p, p, p, -1, nullptr), Error);
  EXPECT_THROW(launch_swiglu(nullptr, p, p, 8, nullptr), Error);
  EXPECT_THROW(launch_add(p, p, -5, nullptr), Error);
  EXPECT_THROW(launch_convert_to_f32(p, nullptr, 8, nullptr), Error);
  EXPECT_THROW(launch_embedding(p, ids.data(), 1, 12, 4, p, nullptr), Error);  // width % 8
  EXPECT_THROW(launch_embedding(p, ids.data(), 1, 8, 0, p, nullptr), Error);   // vocab
  EXPECT_THROW(launch_embedding(p, ids.data(), -1, 8, 4, p, nullptr), Error);
  EXPECT_NO_THROW(launch_swiglu(p, p, p, 0, nullptr));
  sync();
}

}  // namespace
}  // namespace hllm::cuda
