/* IEEE binary16 <-> binary32 conversions.
 *
 * Where the compiler targets F16C (the AVX2 build of the loops), the hardware instructions;
 * elsewhere the portable bit manipulations of PyTorch's c10::Half (from the fp16 library):
 * round-to-nearest-even, subnormals kept. Both give the same bits for every input: for NaN the
 * portable version is adjusted to do what the hardware does (quiet the NaN, keep the sign and
 * the top 10 payload bits), so results never depend on the CPU. torch itself uses both (F16C
 * in its vectorised loops, the canonical 0x7E00 in scalar code); a NaN's payload is the only
 * thing on which they differ. The portable code relies on IEEE float arithmetic in
 * round-to-nearest with subnormals enabled, which is why the build never uses -ffast-math.
 */
#ifndef GC_HALF_H
#define GC_HALF_H

#include <stdint.h>
#include <string.h>

typedef uint16_t gc_half;

#if defined(__F16C__)
#include <immintrin.h>

static inline float gc_half_to_float(gc_half h)
{
    return _cvtsh_ss(h);
}

static inline gc_half gc_float_to_half(float f)
{
    return (gc_half)_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT);
}

#else

static inline float gc_bits_to_float(uint32_t w)
{
    float f;
    memcpy(&f, &w, sizeof f);
    return f;
}

static inline uint32_t gc_float_to_bits(float f)
{
    uint32_t w;
    memcpy(&w, &f, sizeof w);
    return w;
}

static inline float gc_half_to_float(gc_half h)
{
    const uint32_t w = (uint32_t)h << 16;
    const uint32_t sign = w & UINT32_C(0x80000000);
    const uint32_t two_w = w + w;

    /* Normal numbers: shift the exponent and mantissa into place, then rebias by scaling. */
    const uint32_t exp_offset = UINT32_C(0xE0) << 23;
    const float normalized = gc_bits_to_float((two_w >> 4) + exp_offset) * 0x1.0p-112f;

    /* Subnormals: place the mantissa under a magic exponent and subtract the bias. */
    const uint32_t magic_mask = UINT32_C(126) << 23;
    const float denormalized = gc_bits_to_float((two_w >> 17) | magic_mask) - 0.5f;

    const uint32_t denormalized_cutoff = UINT32_C(1) << 27;
    const uint32_t result = sign | (two_w < denormalized_cutoff ? gc_float_to_bits(denormalized)
                                                                : gc_float_to_bits(normalized));
    return gc_bits_to_float(result);
}

static inline gc_half gc_float_to_half(float f)
{
    /* Scaling up then down rounds the mantissa to 10 bits (nearest-even) and saturates
     * too-large values to infinity, using the FPU's own rounding. */
    float base = (__builtin_fabsf(f) * 0x1.0p+112f) * 0x1.0p-110f;

    const uint32_t w = gc_float_to_bits(f);
    const uint32_t shl1_w = w + w;
    const uint32_t sign = w & UINT32_C(0x80000000);
    uint32_t bias = shl1_w & UINT32_C(0xFF000000);
    if (bias < UINT32_C(0x71000000))
        bias = UINT32_C(0x71000000);

    base = gc_bits_to_float((bias >> 1) + UINT32_C(0x07800000)) + base;
    const uint32_t bits = gc_float_to_bits(base);
    const uint32_t exp_bits = (bits >> 13) & UINT32_C(0x00007C00);
    const uint32_t mantissa_bits = bits & UINT32_C(0x00000FFF);
    const uint32_t nonsign = exp_bits + mantissa_bits;
    const uint32_t nan = UINT32_C(0x7E00) | ((w >> 13) & UINT32_C(0x03FF));
    return (gc_half)((sign >> 16) | (shl1_w > UINT32_C(0xFF000000) ? nan : nonsign));
}

#endif /* __F16C__ */

#endif /* GC_HALF_H */
