// OpenMPI baseline: times MPI_Allreduce (MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD)
// of float vectors, for comparison with lstash's ring allreduce. Run it with
// scripts/mpi-allreduce. Rank 0 prints one JSON object per size on stdout.
#include <mpi.h>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdio>
#include <iostream>
#include <limits>
#include <numeric>
#include <vector>

namespace {

constexpr int kBadFlags = 2;
constexpr int kMismatch = 1;
// MPI counts are int: 8191 MiB of floats is the most that fits.
constexpr std::size_t kMaxMb =
    static_cast<std::size_t>(std::numeric_limits<int>::max()) / (1024 * 1024 / sizeof(float));
constexpr int kMaxIterations = 1000000;

float fill_value(int rank, std::size_t i) {
  return static_cast<float>(rank) + static_cast<float>(i) * 1e-6f;
}

// Rounded so the JSON stays readable; 0.1 us is far below run-to-run noise.
double round_ms(double ms) { return std::round(ms * 1e4) / 1e4; }

double percentile50(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2.0;
}

// Checks a few indexes (ends, middle, some in between) against the exact sum
// of the fill values; the tolerance allows for any float summation order.
bool verify(const std::vector<float>& out, int ranks, std::size_t mb) {
  const std::size_t n = out.size();
  std::vector<std::size_t> idx = {0, 1, n / 3, n / 2, (2 * n) / 3, n - 2, n - 1};
  for (std::size_t i : idx) {
    if (i >= n) continue;
    double expected = 0.0;
    for (int r = 0; r < ranks; ++r) expected += static_cast<double>(fill_value(r, i));
    const double tol = 1e-5 * ranks * std::max(1.0, std::abs(expected));
    if (!(std::abs(static_cast<double>(out[i]) - expected) <= tol)) {
      std::fprintf(stderr,
                   "lstash-mpi-allreduce: error: verification failed at %zu MiB, index %zu: "
                   "got %.9g, expected %.9g (sum over %d ranks)\n",
                   mb, i, static_cast<double>(out[i]), expected, ranks);
      return false;
    }
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0;
  int ranks = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &ranks);

  std::vector<std::size_t> sizes_mb = {1, 10, 100};
  int iterations = 10;
  int warmup = 2;

  CLI::App app{"OpenMPI MPI_Allreduce baseline (float sum over MPI_COMM_WORLD)",
               "lstash-mpi-allreduce"};
  app.add_option("--mb", sizes_mb, "Vector sizes in MiB of floats, comma-separated")
      ->delimiter(',')
      ->check(CLI::Range(std::size_t{1}, kMaxMb))
      ->capture_default_str();
  app.add_option("--iterations", iterations, "Timed iterations per size")
      ->check(CLI::Range(1, kMaxIterations))
      ->capture_default_str();
  app.add_option("--warmup", warmup, "Untimed iterations per size")
      ->check(CLI::Range(0, kMaxIterations))
      ->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // Every rank parses the same argv, so all leave here together; only
    // rank 0 speaks so the message is not repeated per rank.
    int code = e.get_exit_code();
    if (rank == 0) {
      if (code == 0) {
        app.exit(e);
      } else {
        std::cerr << "lstash-mpi-allreduce: error: " << e.what() << "\n"
                  << "Run with --help for usage.\n";
      }
    }
    MPI_Finalize();
    return code == 0 ? 0 : kBadFlags;
  }

  int status = 0;
  for (std::size_t mb : sizes_mb) {
    const std::size_t n = mb * 1024 * 1024 / sizeof(float);
    const int count = static_cast<int>(n);
    std::vector<float> in(n);
    std::vector<float> out(n);
    for (std::size_t i = 0; i < n; ++i) in[i] = fill_value(rank, i);

    MPI_Barrier(MPI_COMM_WORLD);
    for (int w = 0; w < warmup; ++w) {
      MPI_Allreduce(in.data(), out.data(), count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    }

    std::vector<double> local_ms(static_cast<std::size_t>(iterations));
    for (int it = 0; it < iterations; ++it) {
      MPI_Barrier(MPI_COMM_WORLD);
      const double t0 = MPI_Wtime();
      MPI_Allreduce(in.data(), out.data(), count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
      const double t1 = MPI_Wtime();
      local_ms[static_cast<std::size_t>(it)] = (t1 - t0) * 1e3;
    }
    // An iteration lasts until its slowest rank finishes; reduced once after
    // the loop so the reduction does not disturb the timed region.
    std::vector<double> max_ms(local_ms.size());
    MPI_Reduce(local_ms.data(), max_ms.data(), iterations, MPI_DOUBLE, MPI_MAX, 0, MPI_COMM_WORLD);

    int ok = 1;
    if (rank == 0) {
      ok = verify(out, ranks, mb) ? 1 : 0;
      if (ok) {
        const double mean = std::accumulate(max_ms.begin(), max_ms.end(), 0.0) / iterations;
        nlohmann::ordered_json j;
        j["baseline"] = "openmpi";
        j["ranks"] = ranks;
        j["mb"] = mb;
        j["iterations"] = iterations;
        j["p50_ms"] = round_ms(percentile50(max_ms));
        j["mean_ms"] = round_ms(mean);
        j["min_ms"] = round_ms(*std::min_element(max_ms.begin(), max_ms.end()));
        j["max_ms"] = round_ms(*std::max_element(max_ms.begin(), max_ms.end()));
        std::cout << j.dump() << std::endl;
      }
    }
    // Share rank 0's verdict so every rank exits with the same status.
    MPI_Bcast(&ok, 1, MPI_INT, 0, MPI_COMM_WORLD);
    if (!ok) {
      status = kMismatch;
      break;
    }
  }

  MPI_Finalize();
  return status;
}
