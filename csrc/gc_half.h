/* IEEE binary16 <-> binary32 conversions in portable C.
 *
 * The same bit manipulations as PyTorch's c10::Half (and the fp16 library it comes from):
 * round-to-nearest-even, subnormals kept, NaN mapped to the canonical quiet NaN 0x7E00 with its
 * sign. Using the identical algorithm makes float16 results bit-identical to torch's, including
 * NaN bit patterns. They rely on IEEE float arithmetic in round-to-nearest with subnormals
 * enabled, which is why the build never uses -ffast-math.
 */
#ifndef GC_HALF_H
#define GC_HALF_H

#include <stdint.h>
#include <string.h>

typedef uint16_t gc_half;

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
    return (gc_half)((sign >> 16) | (shl1_w > UINT32_C(0xFF000000) ? UINT32_C(0x7E00) : nonsign));
}

#endif /* GC_HALF_H */
