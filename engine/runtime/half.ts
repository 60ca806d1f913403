// IEEE 754 half-precision bits from float32 values, for tensors stored as float16
// on an execution device (onnxruntime-node takes 'float16' tensors as Uint16Array).

/** Half bits of a float32 given as its bits, rounded to nearest even: subnormals, overflow to ±inf, NaN kept NaN. */
export function halfBits(x: number): number {
  const sign = (x >>> 16) & 0x8000;
  const exponent = (x >>> 23) & 0xff;
  const mantissa = x & 0x7fffff;
  if (exponent === 0xff) return sign | 0x7c00 | (mantissa !== 0 ? 0x200 | (mantissa >>> 13) : 0);
  const halfExponent = exponent - 112;
  if (halfExponent >= 0x1f) return sign | 0x7c00;
  if (halfExponent <= 0) {
    // Subnormal half (or zero): value = m · 2^-24 with m = significand >> shift.
    if (halfExponent < -10) return sign;
    const significand = mantissa | 0x800000;
    const shift = 14 - halfExponent;
    const kept = significand >>> shift;
    const rest = significand - kept * 2 ** shift;
    const halfway = 2 ** (shift - 1);
    return sign | (rest > halfway || (rest === halfway && kept & 1) ? kept + 1 : kept);
  }
  const half = (halfExponent << 10) | (mantissa >>> 13);
  const rest = mantissa & 0x1fff;
  // A carry out of the mantissa moves into the exponent (up to +inf), as it should.
  return sign | (rest > 0x1000 || (rest === 0x1000 && half & 1) ? half + 1 : half);
}

/** The float16 bit patterns of `data` (about 10 ns a value: a 9B model's weights convert at load time). */
export function toHalfBits(data: Float32Array): Uint16Array {
  const bits = new Uint32Array(data.buffer, data.byteOffset, data.length);
  const out = new Uint16Array(data.length);
  for (let i = 0; i < bits.length; i++) {
    const x = bits[i];
    const exponent = (x >>> 23) & 0xff;
    // Float exponents 113 … 142 are the half's normal range; the rest take the exact path.
    if (exponent < 113 || exponent > 142) {
      out[i] = halfBits(x);
      continue;
    }
    // Round the magnitude to nearest even at bit 13, then rebias the exponent (127 → 15).
    const magnitude = x & 0x7fffffff;
    out[i] = ((x >>> 16) & 0x8000) | (((magnitude + 0xfff + ((magnitude >>> 13) & 1)) >>> 13) - (112 << 10));
  }
  return out;
}
