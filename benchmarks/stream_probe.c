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

/* One pass of the read probe: 32 independent sums (explicit lanes, so the compiler keeps them
 * in vector registers without reassociating anything; a single vector accumulator would wait
 * on its own addition's latency, which in L2 is slower than the cache). float32 elements are
 * widened, as gradclip's float32 norm does; float64 rows (W4) are probed on float64, whose
 * bytes take half the conversions and additions. */
#define PROBE_LANES 32
#define DEFINE_SUM_SQUARES(NAME, T)                                                            \
    static double NAME(const T *restrict x, long n)                                            \
    {                                                                                          \
        double acc[PROBE_LANES] = {0.0};                                                       \
        long i = 0;                                                                            \
        for (; i + PROBE_LANES <= n; i += PROBE_LANES)                                         \
            for (int j = 0; j < PROBE_LANES; j++) {                                            \
                const double v = (double)x[i + j];                                             \
                acc[j] += v * v;                                                               \
            }                                                                                  \
        double sum = 0.0;                                                                      \
        for (; i < n; i++)                                                                     \
            sum += (double)x[i] * (double)x[i];                                                \
        for (int j = 0; j < PROBE_LANES; j++)                                                  \
            sum += acc[j];                                                                     \
        return sum;                                                                            \
    }
DEFINE_SUM_SQUARES(sum_squares_f32, float)
DEFINE_SUM_SQUARES(sum_squares_f64, double)

static double sum_squares(const void *x, long lo, long hi, int f64)
{
    return f64 ? sum_squares_f64((const double *)x + lo, hi - lo) : sum_squares_f32((const float *)x + lo, hi - lo);
}

/* c comes from the caller (1.0), so the compiler cannot drop the multiply and the store. */
static void scale(void *x, long lo, long hi, int f64, double c)
{
    if (f64) {
        double *restrict d = x;
#pragma omp simd
        for (long i = lo; i < hi; i++)
            d[i] *= c;
    }
    else {
        float *restrict f = x;
        const float cf = (float)c;
#pragma omp simd
        for (long i = lo; i < hi; i++)
            f[i] *= cf;
    }
}

/* Best pass over the buffer's first nbytes (read: the sum of squares; else x *= c in place),
 * on one thread or split evenly over every core. */
static double best_pass(void *x, long nbytes, int reps, int all_threads, int f64, int read, double c)
{
    const long n = nbytes / (f64 ? 8 : 4);
    double best = 1e30, start = 0.0;
#pragma omp parallel if (all_threads)
    {
        const int threads = omp_get_num_threads(), me = omp_get_thread_num();
        const long chunk = (n + threads - 1) / threads;
        const long lo = me * chunk < n ? me * chunk : n, hi = lo + chunk < n ? lo + chunk : n;
        for (int r = 0; r < reps; r++) {
#pragma omp barrier
#pragma omp master
            start = now_s();
#pragma omp barrier
            double part = 0.0;
            if (read)
                part = sum_squares(x, lo, hi, f64);
            else
                scale(x, lo, hi, f64, c);
#pragma omp barrier
#pragma omp master
            {
                const double t = now_s() - start;
                best = t < best ? t : best;
                probe_sink = part;
            }
        }
    }
    return best;
}

double probe_read_best(const void *x, long nbytes, int reps, int all_threads, int f64)
{
    return best_pass((void *)x, nbytes, reps, all_threads, f64, 1, 1.0);
}

/* nbytes: the bytes updated (each read and written once); c = 1 leaves them as they are. */
double probe_rw_best(void *x, long nbytes, double c, int reps, int all_threads, int f64)
{
    return best_pass(x, nbytes, reps, all_threads, f64, 0, c);
}
