/* The memory system's streaming limit, measured by loops written to stream: every core
 * (OpenMP), vectorised, nothing but the traffic. benchmarks/probe.py builds this file with the
 * machine's C compiler (-O3 -march=native -fopenmp) and calls it through ctypes.
 *
 *   probe_read: float32 elements widened to float64, squared and summed (the norm's traffic)
 *   probe_rw:   x *= c in place on float32 (the traffic of scaling and of optimizer state)
 *   probe_read_best, probe_rw_best: the same loops on a cache-sized buffer, timed per pass
 *
 * The reductions use OpenMP's simd reduction, so they vectorise without -ffast-math.
 */
#define _POSIX_C_SOURCE 200809L
#include <omp.h>
#include <stddef.h>
#include <time.h>

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

/* ---- cache-sized buffers: the best single pass, timed inside C ----------------------------
 * A pass over a buffer that fits in the caches takes microseconds, of which a ctypes call and
 * the wake-up of OpenMP's sleeping workers would be most. These run `reps` passes, time each
 * one here, and return the best, on one thread (all_threads = 0) or on every core inside one
 * parallel region (the workers are awake between passes; the barrier that starts a pass is
 * inside its time, as a multi-threaded kernel pays it). probe.py takes the better of the two:
 * at a few hundred kB one core can be faster than two. */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static volatile double probe_sink;

double probe_read_best(const float *x, long n, int reps, int all_threads)
{
    double best = 1e30;
    if (!all_threads) {
        for (int r = 0; r < reps; r++) {
            const double start = now_s();
            double sum = 0.0;
#pragma omp simd reduction(+ : sum)
            for (long i = 0; i < n; i++) {
                const double v = (double)x[i];
                sum += v * v;
            }
            probe_sink = sum;
            const double t = now_s() - start;
            best = t < best ? t : best;
        }
        return best;
    }
    double start = 0.0, sum = 0.0;
#pragma omp parallel
    for (int r = 0; r < reps; r++) {
#pragma omp barrier
#pragma omp master
        {
            sum = 0.0;
            start = now_s();
        }
#pragma omp barrier
#pragma omp for simd reduction(+ : sum) schedule(static)
        for (long i = 0; i < n; i++) {
            const double v = (double)x[i];
            sum += v * v;
        }
#pragma omp master
        {
            const double t = now_s() - start;
            best = t < best ? t : best;
            probe_sink = sum;
        }
    }
    return best;
}

double probe_rw_best(float *x, long n, float c, int reps, int all_threads)
{
    double best = 1e30;
    if (!all_threads) {
        for (int r = 0; r < reps; r++) {
            const double start = now_s();
#pragma omp simd
            for (long i = 0; i < n; i++)
                x[i] *= c;
            const double t = now_s() - start;
            best = t < best ? t : best;
        }
        return best;
    }
    double start = 0.0;
#pragma omp parallel
    for (int r = 0; r < reps; r++) {
#pragma omp barrier
#pragma omp master
        start = now_s();
#pragma omp barrier
#pragma omp for simd schedule(static)
        for (long i = 0; i < n; i++)
            x[i] *= c;
#pragma omp master
        {
            const double t = now_s() - start;
            best = t < best ? t : best;
        }
    }
    return best;
}
