// cuda/cast_math.h — F32 / F16 / BF16 bit conversions shared by the host and the GPU.
//
// Provides branch-light, bit-exact conversions between IEEE binary32 (F32), binary16
// (F16) and bfloat16 (BF16), written once for both compilers: nvcc compiles them into
// the cast kernels (cuda/cast_kernels.cu) and the host test checks the very same code
// against independent references. Narrowing rounds to nearest, ties to even;
// overflow gives infinity; subnormals are produced and consumed exactly; a NaN stays
// a NaN of the same sign (quiet bit set, top payload bits kept); widening is exact.
// C++17, no CUDA header needed.
//
//   uint16_t h = shardload::cuda::F32BitsToF16Bits(0x3F800000u);   // 1.0f → 0x3C00
//   uint32_t f = shardload::cuda::Bf16BitsToF32Bits(0x4049u);        // 3.140625f
#ifndef SHARDLOAD_CUDA_CAST_MATH_H_
#define SHARDLOAD_CUDA_CAST_MATH_H_

#include <cstdint>

#if defined(__CUDACC__)
#define SL_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define SL_HOST_DEVICE inline
#endif

namespace shardload::cuda {

// F32BitsToBf16Bits: binary32 → bfloat16, round to nearest even.
SL_HOST_DEVICE uint16_t F32BitsToBf16Bits(uint32_t x) {
  if ((x & 0x7FFFFFFFu) > 0x7F800000u) {
    return static_cast<uint16_t>((x >> 16) | 0x0040u);  // NaN: keep sign, quiet it
  }
  const uint32_t lsb = (x >> 16) & 1u;
  return static_cast<uint16_t>((x + 0x7FFFu + lsb) >> 16);  // carries into inf correctly
}

// Bf16BitsToF32Bits: bfloat16 → binary32, exact.
SL_HOST_DEVICE uint32_t Bf16BitsToF32Bits(uint16_t h) { return static_cast<uint32_t>(h) << 16; }

// F32BitsToF16Bits: binary32 → binary16, round to nearest even, subnormals included.
SL_HOST_DEVICE uint16_t F32BitsToF16Bits(uint32_t x) {
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t abs = x & 0x7FFFFFFFu;
  if (abs > 0x7F800000u) {  // NaN: quiet, keep the top 9 payload bits
    return static_cast<uint16_t>(sign | 0x7E00u | ((abs >> 13) & 0x3FFu));
  }
  if (abs >= 0x47800000u) return static_cast<uint16_t>(sign | 0x7C00u);  // ≥ 2^16 or inf
  if (abs >= 0x38800000u) {  // a normal binary16 (≥ 2^-14) before rounding
    const uint32_t lsb = (abs >> 13) & 1u;
    const uint32_t rounded = abs + 0xFFFu + lsb - 0x38000000u;  // rebias 127 → 15
    return static_cast<uint16_t>(sign | (rounded >> 13));        // carry may reach inf
  }
  const uint32_t exponent = abs >> 23;
  if (exponent < 101) return static_cast<uint16_t>(sign);  // < 2^-26: rounds to zero
  // Subnormal result: value / 2^-24 = mantissa * 2^(exponent - 126 - 23 + 23).
  const uint32_t mantissa = (abs & 0x7FFFFFu) | 0x800000u;
  const uint32_t shift = 126u - exponent;  // 14 .. 25
  uint32_t q = mantissa >> shift;
  const uint32_t rem = mantissa & ((1u << shift) - 1u);
  const uint32_t half = 1u << (shift - 1u);
  if (rem > half || (rem == half && (q & 1u))) ++q;  // may become 0x400, the smallest normal
  return static_cast<uint16_t>(sign | q);
}

// F16BitsToF32Bits: binary16 → binary32, exact (NaN payload kept bit for bit).
SL_HOST_DEVICE uint32_t F16BitsToF32Bits(uint16_t h) {
  const uint32_t sign = (static_cast<uint32_t>(h) & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1Fu;
  uint32_t mantissa = h & 0x3FFu;
  if (exponent == 0x1Fu) return sign | 0x7F800000u | (mantissa << 13);  // inf / NaN
  if (exponent != 0) return sign | ((exponent + 112u) << 23) | (mantissa << 13);
  if (mantissa == 0) return sign;  // ±0
  int e = 113;                     // subnormal: normalise (2^-14 has biased exponent 113)
  while ((mantissa & 0x400u) == 0) {
    mantissa <<= 1;
    --e;
  }
  return sign | (static_cast<uint32_t>(e) << 23) | ((mantissa & 0x3FFu) << 13);
}

// F16BitsToBf16Bits / Bf16BitsToF16Bits: through binary32, which holds both exactly,
// so there is a single rounding.
SL_HOST_DEVICE uint16_t F16BitsToBf16Bits(uint16_t h) {
  return F32BitsToBf16Bits(F16BitsToF32Bits(h));
}
SL_HOST_DEVICE uint16_t Bf16BitsToF16Bits(uint16_t b) {
  return F32BitsToF16Bits(Bf16BitsToF32Bits(b));
}

}  // namespace shardload::cuda

#endif  // SHARDLOAD_CUDA_CAST_MATH_H_
