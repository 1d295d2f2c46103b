// SPDX-License-Identifier: Apache-2.0
// oneDNN (2.x C++ API) u8×s8 matmul with prepacked weights; see onednn_peer.hpp.
#include "onednn_peer.hpp"

#include <omp.h>

#include <deque>
#include <dnnl.hpp>
#include <vector>

#include "qlr/core/aligned.hpp"

namespace qlr_bench {

using dt = dnnl::memory::data_type;
using tag = dnnl::memory::format_tag;

struct OnednnMatmul::State {
  dnnl::engine engine{dnnl::engine::kind::cpu, 0};
  dnnl::stream stream{engine};
  dnnl::memory::desc src, weights_plain, dst;
  dnnl::matmul::primitive_desc pd;
  dnnl::matmul primitive;
  std::vector<dnnl::memory> weights;
  std::deque<qlr::AlignedVector<std::uint8_t>> weight_buffers;  // qlr's kind of memory, as qlr's weights
};

OnednnMatmul::OnednnMatmul(long m, long n, long k, const float* scales) : state_(new State) {
  State& s = *state_;
  s.src = dnnl::memory::desc({m, k}, dt::u8, tag::ab);
  s.weights_plain = dnnl::memory::desc({k, n}, dt::s8, tag::ba);  // W (N×K) row-major is Wᵀ in "ba"
  s.dst = dnnl::memory::desc({m, n}, dt::f32, tag::ab);
  const dnnl::memory::desc weights_any({k, n}, dt::s8, tag::any);  // let oneDNN choose: prepacked
  dnnl::primitive_attr attr;
  attr.set_output_scales(1 << 1, std::vector<float>(scales, scales + n));
  s.pd = dnnl::matmul::primitive_desc(dnnl::matmul::desc(s.src, weights_any, s.dst), attr, s.engine);
  s.primitive = dnnl::matmul(s.pd);
}

OnednnMatmul::~OnednnMatmul() = default;

int OnednnMatmul::add_weights(const std::int8_t* weights) {
  State& s = *state_;
  dnnl::memory plain(s.weights_plain, s.engine, const_cast<std::int8_t*>(weights));
  s.weight_buffers.emplace_back(s.pd.weights_desc().get_size());
  dnnl::memory packed(s.pd.weights_desc(), s.engine, s.weight_buffers.back().data());
  dnnl::reorder(plain, packed).execute(s.stream, plain, packed);
  s.stream.wait();
  s.weights.push_back(packed);
  return static_cast<int>(s.weights.size()) - 1;
}

void OnednnMatmul::run(int index, const std::uint8_t* x, float* y, int threads) {
  State& s = *state_;
  omp_set_num_threads(threads);
  dnnl::memory src(s.src, s.engine, const_cast<std::uint8_t*>(x));
  dnnl::memory dst(s.dst, s.engine, y);
  s.primitive.execute(s.stream, {{DNNL_ARG_SRC, src},
                                 {DNNL_ARG_WEIGHTS, s.weights[static_cast<std::size_t>(index)]},
                                 {DNNL_ARG_DST, dst}});
  s.stream.wait();
}

}  // namespace qlr_bench
