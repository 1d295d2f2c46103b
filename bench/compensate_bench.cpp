// SPDX-License-Identifier: Apache-2.0
// Calibration-based compression of one layer from a precomputed covariance, in seconds per
// run, beside the Eigen solver each step cannot avoid (the reference cost):
//   gptq/qlr/<int4|int3>-asym-g128/N:<n>/K:<k>/threads:<t>   gptq_quantize: damping, the
//                                                            Cholesky factors, error feedback
//   gptq/qlr/plan/K:<k>/threads:1                            Gptq's constructor alone (the
//                                                            O(K³) Hessian part of the above)
//   gptq/eigen_reference/llt/K:<k>/threads:1                 Eigen::LLT of the damped H
//   eora/qlr/eigenspace/K:<k>/threads:1                      Eigenspace: C = Q·Λ·Qᵀ
//   eora/qlr/<exact|randomized>/r:16/N:<n>/K:<k>/threads:1   eora given the eigenspace:
//                                                            projection ΔW·Q·Λ^½ + top-r SVD
//   eora/eigen_reference/self_adjoint_eigen/K:<k>/threads:1  Eigen::SelfAdjointEigenSolver of C
//   svd/qlr/<exact|randomized>/r:16/N:<n>/K:<k>/threads:1    plain-SVD compensation (baseline)
// EoRA's total for one layer is eigenspace + one projection case. The covariance comes from
// 2·K correlated Gaussian inputs and is built once per size, outside every timing.
// Eigen's solvers and products run on the calling thread (no OpenMP), so the steps made of
// them are registered at one thread only; GPTQ's error feedback runs on qlr's threads.
#include <cmath>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include <Eigen/Cholesky>
#include <Eigen/Eigenvalues>
#include <benchmark/benchmark.h>

#include "bench_support.hpp"
#include "qlr/compensate/calibration.hpp"
#include "qlr/compensate/eora.hpp"
#include "qlr/compensate/gptq.hpp"
#include "qlr/core/matrix.hpp"
#include "qlr/core/parallel.hpp"
#include "qlr/core/random.hpp"
#include "qlr/quant/dequantize.hpp"
#include "qlr/quant/int_group.hpp"
#include "qlr/quant/spec.hpp"

namespace {

using qlr::index_t;
using qlr::Matrix;
using qlr::MatrixD;
namespace compensate = qlr::compensate;
namespace quant = qlr::quant;

constexpr index_t rank = 16;
constexpr index_t shared_factors = 8;  // common directions that correlate the input channels

/// Σ x·xᵀ of 2·K inputs x = diag(s)·g + Fᵀ·z: channel scales s log-normal (a few loud
/// channels, as in LLM activations) and 8 shared factors. The independent part makes C full
/// rank; inputs are drawn and added 256 rows at a time, so memory stays O(K²).
compensate::Covariance correlated_covariance(index_t k) {
  const Eigen::VectorXd scale = qlr::gaussian_matrix(1, k, 1).row(0).transpose().unaryExpr(
      [](double v) { return std::exp(0.5 * v); });
  const MatrixD factors = 0.5 * qlr::gaussian_matrix(shared_factors, k, 2);
  compensate::Covariance cov(k);
  for (index_t row = 0, block = 0; row < 2 * k; row += 256, ++block) {
    const index_t rows = std::min<index_t>(256, 2 * k - row);
    const auto seed = 100 + 2 * static_cast<std::uint64_t>(block);
    const MatrixD x = qlr::gaussian_matrix(rows, k, seed) * scale.asDiagonal() +
                      qlr::gaussian_matrix(rows, shared_factors, seed + 1) * factors;
    cov.add(x.cast<float>());
  }
  return cov;
}

/// One size's inputs, made once: the covariance, the weight and a compressed copy of it, the
/// solvers' inputs as Eigen takes them, and the eigenspace (made by the eigenspace case, or
/// here when that case is filtered out: it takes as long as the solver).
struct Setup {
  index_t n, k;
  compensate::Covariance cov;
  Matrix w;                  // N×K, N(0, 0.02²)
  Matrix w_hat;              // RTN INT4 g128 of w: the projection and SVD cost the same for any Ŵ
  Eigen::MatrixXd c;         // Σ x·xᵀ, symmetric, as the eigensolver's input
  Eigen::MatrixXd h_damped;  // 2·C/M + 0.01·mean(diag)·I, as GPTQ's first Cholesky sees it
  std::optional<compensate::Eigenspace> space;

  Setup(index_t rows, index_t cols)
      : n(rows),
        k(cols),
        cov(correlated_covariance(cols)),
        w(qlr_bench::random_matrix(rows, cols, 0.02f, 7)),
        w_hat(quant::dequantize(quant::IntAsym<4>({.group_size = 128}).quantize(w))) {
    c = cov.sum();
    c = 0.5 * (c + c.transpose()).eval();
    h_damped = c * (2.0 / static_cast<double>(cov.samples()));
    h_damped.diagonal().array() += compensate::GptqOptions{}.percdamp * h_damped.diagonal().mean();
  }

  const compensate::Eigenspace& eigenspace() {
    if (!space) space.emplace(cov);
    return *space;
  }
};

/// The setup of size N×K; only the last one is kept, so memory stays at one size's.
Setup& setup(index_t n, index_t k) {
  static std::unique_ptr<Setup> kept;
  if (kept == nullptr || kept->n != n || kept->k != k) {
    kept.reset();  // free the old size before building the new one
    kept = std::make_unique<Setup>(n, k);
  }
  return *kept;
}

void bench_gptq(benchmark::State& state, index_t n, index_t k, int threads, int bits) {
  qlr::set_num_threads(threads);
  Setup& s = setup(n, k);
  const quant::QuantSpec spec{
      .bits = bits, .encoding = qlr::Encoding::int_asym, .options = {.group_size = 128}};
  for (auto _ : state) benchmark::DoNotOptimize(compensate::gptq_quantize(s.w, s.cov, spec));
}

void bench_gptq_plan(benchmark::State& state, index_t n, index_t k) {
  qlr::set_num_threads(1);
  Setup& s = setup(n, k);
  for (auto _ : state) {
    const compensate::GptqAsym<4> policy(s.cov, {.group_size = 128});
    benchmark::DoNotOptimize(&policy);
  }
}

void bench_eigen_llt(benchmark::State& state, index_t n, index_t k) {
  qlr::set_num_threads(1);
  Setup& s = setup(n, k);
  for (auto _ : state) {
    const Eigen::LLT<Eigen::MatrixXd> llt(s.h_damped);
    if (llt.info() != Eigen::Success) state.SkipWithError("damped H is not positive definite");
    benchmark::DoNotOptimize(llt.matrixLLT().data());
  }
}

void bench_eigenspace(benchmark::State& state, index_t n, index_t k) {
  qlr::set_num_threads(1);
  Setup& s = setup(n, k);
  for (auto _ : state) {
    compensate::Eigenspace space(s.cov);
    benchmark::DoNotOptimize(space.basis().data());
    s.space.emplace(std::move(space));  // the projection cases reuse it instead of redoing it
  }
}

void bench_eigen_self_adjoint(benchmark::State& state, index_t n, index_t k) {
  qlr::set_num_threads(1);
  Setup& s = setup(n, k);
  for (auto _ : state) {
    const Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> solver(s.c);
    if (solver.info() != Eigen::Success) state.SkipWithError("eigensolver did not converge");
    benchmark::DoNotOptimize(solver.eigenvectors().data());
  }
}

void bench_eora(benchmark::State& state, index_t n, index_t k, compensate::SvdMethod method) {
  qlr::set_num_threads(1);
  Setup& s = setup(n, k);
  const compensate::Eigenspace& space = s.eigenspace();
  for (auto _ : state)
    benchmark::DoNotOptimize(compensate::eora(s.w, s.w_hat, space, rank, {.method = method}));
}

void bench_svd(benchmark::State& state, index_t n, index_t k, compensate::SvdMethod method) {
  qlr::set_num_threads(1);
  Setup& s = setup(n, k);
  for (auto _ : state)
    benchmark::DoNotOptimize(compensate::svd_compensation(s.w, s.w_hat, rank, {.method = method}));
}

std::string dims(index_t n, index_t k, int threads, bool with_n = true) {
  return (with_n ? "/N:" + std::to_string(n) : std::string()) + "/K:" + std::to_string(k) +
         "/threads:" + std::to_string(threads);
}

void register_all() {
  const auto add = [](const std::string& name, index_t k, auto function, auto... args) {
    auto* b = benchmark::RegisterBenchmark(name.c_str(), function, args...);
    b->UseRealTime()->Unit(benchmark::kSecond);
    // One run of a 4096 case takes seconds and varies little: one iteration each.
    if (k >= 2048) b->Iterations(1);
  };
  using compensate::SvdMethod;
  const std::string r = "/r:" + std::to_string(rank);
  // 512 is the smoke size; 4096×4096 is a 7B-class projection.
  for (const index_t size : {512, 4096}) {
    const index_t n = size, k = size;
    for (const int threads : {1, 2}) {
      add("gptq/qlr/int4-asym-g128" + dims(n, k, threads), k, bench_gptq, n, k, threads, 4);
      add("gptq/qlr/int3-asym-g128" + dims(n, k, threads), k, bench_gptq, n, k, threads, 3);
    }
    add("gptq/qlr/plan" + dims(n, k, 1, false), k, bench_gptq_plan, n, k);
    add("gptq/eigen_reference/llt" + dims(n, k, 1, false), k, bench_eigen_llt, n, k);
    add("eora/qlr/eigenspace" + dims(n, k, 1, false), k, bench_eigenspace, n, k);
    add("eora/eigen_reference/self_adjoint_eigen" + dims(n, k, 1, false), k,
        bench_eigen_self_adjoint, n, k);
    add("eora/qlr/exact" + r + dims(n, k, 1), k, bench_eora, n, k, SvdMethod::exact);
    add("eora/qlr/randomized" + r + dims(n, k, 1), k, bench_eora, n, k, SvdMethod::randomized);
    add("svd/qlr/exact" + r + dims(n, k, 1), k, bench_svd, n, k, SvdMethod::exact);
    add("svd/qlr/randomized" + r + dims(n, k, 1), k, bench_svd, n, k, SvdMethod::randomized);
  }
}

}  // namespace

int main(int argc, char** argv) {
  register_all();
  return qlr_bench::run_benchmarks(argc, argv);
}
