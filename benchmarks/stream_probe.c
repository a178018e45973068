/* The memory system's streaming limit, measured by loops written to stream: every core
 * (OpenMP), vectorised, nothing but the traffic. benchmarks/probe.py builds this file with the
 * machine's C compiler (-O3 -march=native -fopenmp) and calls it through ctypes.
 *
 *   probe_read: float32 elements widened to float64, squared and summed (the norm's traffic)
 *   probe_rw:   x *= c in place on float32 (the traffic of scaling and of optimizer state)
 *
 * The reductions use OpenMP's simd reduction, so they vectorise without -ffast-math.
 */
#include <omp.h>
#include <stddef.h>

double probe_read(const float *x, long n)
{
    double sum = 0.0;
#pragma omp parallel for simd reduction(+ : sum) schedule(static)
    for (long i = 0; i < n; i++) {
        const double v = (double)x[i];
        sum += v * v;
    }
    return sum;
}

void probe_rw(float *x, long n, float c)
{
#pragma omp parallel for simd schedule(static)
    for (long i = 0; i < n; i++)
        x[i] *= c;
}

int probe_threads(void)
{
    int threads = 1;
#pragma omp parallel
    {
#pragma omp single
        threads = omp_get_num_threads();
    }
    return threads;
}
