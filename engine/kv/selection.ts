// Host-side parts of InfLLM-V2 block selection: which compressed keys each query
// may see, the padding that turns the pooled scores into one row per block, and
// the union of selected blocks that the attention step gathers.

/** Compression level: window and stride in tokens (fine 32/16, coarse 128/64 in SALA). */
export interface Level {
  window: number;
  stride: number;
}

export function compressedCount(length: number, level: Level): number {
  return length < level.window ? 0 : Math.floor((length - level.window) / level.stride) + 1;
}

/**
 * How many compressed keys of `level` query position t may see: a window must lie
 * fully in the past (stride·c + window − 1 ≤ t). A one-shot prefill of
 * `promptLength` tokens follows the kernel's bottom-right rule instead, which for
 * window = 2·stride reads  c < (t+1)//s − 1 + n − trunc((L − s + 1)/s)  and sees
 * one key fewer when L ≡ s − 1 (mod s). Decode sees every key.
 */
export function visibleCount(position: number, level: Level, available: number, promptLength?: number): number {
  const { window, stride } = level;
  let count = Math.floor((position - window + 1) / stride) + 1;
  if (promptLength !== undefined) {
    count += compressedCount(promptLength, level) - Math.trunc((promptLength - stride + 1) / stride);
  }
  return Math.max(0, Math.min(available, count));
}

/**
 * Pads for the [Hk, T, n1] score rows so that a max-pool of kernel p+1, stride p
 * yields exactly one score per block (p = block_size / kernel_stride): one −inf in
 * front (the kernel's padding 1) and −inf behind up to p·blocks + 1. Windows that
 * reach past the last compressed key therefore pool −inf, as in the kernel.
 * Returns ONNX Pad's [begins…, ends…] for a rank-3 tensor.
 */
export function poolPads(fineCount: number, blocks: number, poolStride: number): number[] {
  return [0, 0, 1, 0, 0, poolStride * blocks - fineCount];
}

/**
 * For each KV head, the blocks any of its queries selected (ascending), padded
 * with −1 to a common length U, and which of them each query may attend to:
 * mask [Hk, T, U]. Heads attend only to their own blocks, so the cost follows
 * one head's selection, not the union over heads.
 */
export function blocksPerHead(selected: BigInt64Array, kvHeads: number, queries: number, k: number): { blockIds: number[][]; width: number; mask: Uint8Array } {
  const blockIds: number[][] = [];
  for (let h = 0; h < kvHeads; h++) {
    const seen = new Set<number>();
    for (let i = h * queries * k; i < (h + 1) * queries * k; i++) if (selected[i] >= 0n) seen.add(Number(selected[i]));
    blockIds.push([...seen].sort((a, b) => a - b));
  }
  const width = Math.max(1, ...blockIds.map((ids) => ids.length));
  const mask = new Uint8Array(kvHeads * queries * width);
  for (let h = 0; h < kvHeads; h++) {
    const column = new Map(blockIds[h].map((b, i) => [b, i]));
    for (let t = 0; t < queries; t++) {
      const row = h * queries + t;
      for (let j = 0; j < k; j++) {
        const id = selected[row * k + j];
        if (id >= 0n) mask[row * width + (column.get(Number(id)) ?? 0)] = 1;
      }
    }
  }
  return { blockIds, width, mask };
}
