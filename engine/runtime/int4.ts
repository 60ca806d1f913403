// 4-bit block quantization of a weight matrix in the layout of onnxruntime's
// MatMulNBits (com.microsoft): an HF [out, in] matrix keeps its layout, each row cut
// into blocks of `blockSize` along the input axis, each block with an fp32 scale and a
// 4-bit zero point; codes and zero points packed two per byte, low nibble first.
//   w ≈ (code − zero) · scale
// Asymmetric, with 0 inside every block's range (so zero weights stay exact), as
// onnxruntime's own quantizer does it.

export const INT4_BLOCK_SIZE = 32;

export interface Int4Matrix {
  rows: number;
  cols: number;
  blockSize: number;
  /** [rows, blocksPerRow, blockSize / 2] */
  codes: Uint8Array;
  /** [rows · blocksPerRow] */
  scales: Float32Array;
  /** [rows · ceil(blocksPerRow / 2)] */
  zeros: Uint8Array;
}

export function blocksPerRow(cols: number, blockSize = INT4_BLOCK_SIZE): number {
  return Math.ceil(cols / blockSize);
}

export function quantizeInt4(data: Float32Array, rows: number, cols: number, blockSize = INT4_BLOCK_SIZE): Int4Matrix {
  if (data.length !== rows * cols) throw new RangeError(`int4: ${data.length} values for a ${rows} × ${cols} matrix`);
  if (blockSize < 16 || (blockSize & (blockSize - 1)) !== 0) throw new RangeError(`int4: block size ${blockSize} must be a power of two ≥ 16`);
  const blocks = blocksPerRow(cols, blockSize);
  const zeroStride = Math.ceil(blocks / 2);
  const codes = new Uint8Array(rows * blocks * (blockSize / 2));
  const scales = new Float32Array(rows * blocks);
  const zeros = new Uint8Array(rows * zeroStride);
  for (let r = 0; r < rows; r++) {
    for (let b = 0; b < blocks; b++) {
      const from = r * cols + b * blockSize;
      const to = r * cols + Math.min(cols, (b + 1) * blockSize);
      let min = 0;
      let max = 0;
      for (let i = from; i < to; i++) {
        if (data[i] < min) min = data[i];
        if (data[i] > max) max = data[i];
      }
      const scale = max > min ? (max - min) / 15 : 1;
      const zero = Math.min(15, Math.max(0, Math.round(-min / scale)));
      scales[r * blocks + b] = scale;
      zeros[r * zeroStride + (b >> 1)] |= zero << ((b & 1) * 4);
      const base = (r * blocks + b) * (blockSize / 2);
      // Padding past the row's end quantizes 0 (code = zero).
      for (let k = 0; k < blockSize; k++) {
        const value = from + k < to ? data[from + k] : 0;
        const code = Math.min(15, Math.max(0, Math.round(value / scale) + zero));
        codes[base + (k >> 1)] |= code << ((k & 1) * 4);
      }
    }
  }
  return { rows, cols, blockSize, codes, scales, zeros };
}

/** The fp32 matrix the device multiplies by (for tests and error reports). */
export function dequantizeInt4(m: Int4Matrix): Float32Array {
  const { rows, cols, blockSize } = m;
  const blocks = blocksPerRow(cols, blockSize);
  const zeroStride = Math.ceil(blocks / 2);
  const out = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      const b = Math.floor(c / blockSize);
      const k = c % blockSize;
      const code = (m.codes[(r * blocks + b) * (blockSize / 2) + (k >> 1)] >> ((k & 1) * 4)) & 15;
      const zero = (m.zeros[r * zeroStride + (b >> 1)] >> ((b & 1) * 4)) & 15;
      out[r * cols + c] = (code - zero) * m.scales[r * blocks + b];
    }
  }
  return out;
}
