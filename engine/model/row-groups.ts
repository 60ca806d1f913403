// How the rows of a prefill chunk attend in the resident decoder's sparse layers: in
// groups whose blocks fit the pool and whose attention fits the score budget, each group
// in the cheaper of two forms, and the feeds of each form. These loops see every block
// id a chunk selected (kv heads × rows × k: two million per 2,048 tokens of the 9B), so
// they run over typed arrays, with no Set, Map or BigInt per id.

/** A chunk's selection: rows from position `first`, each head's k block ids per row ([Hk, rows, k], −1 for none); none when dense. */
export interface ChunkSelection {
  first: number;
  rows: number;
  k: number;
  selected?: Int32Array;
}

/** Rows [from, to) of a chunk attending in one call: their blocks per head (ascending), and in which form. */
export interface RowGroup {
  from: number;
  to: number;
  blocks: number[][];
  perQuery: boolean;
}

export type RowAttention = 'auto' | 'union' | 'per-row';

export interface RowGroupLimits {
  kvHeads: number;
  heads: number;
  blockSize: number;
  headDim: number;
  /** Blocks a group may place (the pool's slots; Infinity with every block resident). */
  capacity: number;
  /** Bytes the largest tensor of one attention call may take. */
  attentionBytes: number;
  rowAttention: RowAttention;
}

/** The ids of an int64 selection as int32 (block ids are far below 2³¹), read as the low words of each value. */
export function selectedIds(selected: BigInt64Array): Int32Array {
  const words = new Int32Array(selected.buffer, selected.byteOffset, selected.length * 2);
  const ids = new Int32Array(selected.length);
  for (let i = 0; i < ids.length; i++) ids[i] = words[2 * i]; // little-endian: the low word first
  return ids;
}

/**
 * A chunk's rows in groups, each as long as it can be: a group's blocks (the union of
 * its rows' selections) must fit the pool, and its attention the score budget, in the
 * cheaper of the two forms — over the union with a mask (scores for every row × union
 * key) or each row over its own k blocks (k blocks gathered per row).
 */
export function rowGroups(chunk: ChunkSelection, limits: RowGroupLimits): RowGroup[] {
  const { kvHeads: Hk, heads: H, blockSize: B, headDim, capacity, attentionBytes, rowAttention } = limits;
  const { first, rows, k, selected } = chunk;
  // Bytes of the largest tensors of one call, per form: the scores, and the per-row gathered keys.
  const unionBytes = (groupRows: number, width: number) => H * groupRows * width * B * 4;
  const perQueryBytes = (groupRows: number) => Math.max(H, Hk * headDim) * groupRows * k * B * 4;
  const groups: RowGroup[] = [];
  let from = 0;
  if (!selected) {
    // Dense: row t attends to every block up to its own.
    const every = (to: number) => Array.from({ length: Math.floor((first + to - 1) / B) + 1 }, (_, b) => b);
    for (let t = 1; t < rows; t++) {
      if (unionBytes(t + 1 - from, Math.floor((first + t) / B) + 1) > attentionBytes) {
        groups.push({ from, to: t, blocks: Array.from({ length: Hk }, () => every(t)), perQuery: false });
        from = t;
      }
    }
    groups.push({ from, to: rows, blocks: Array.from({ length: Hk }, () => every(rows)), perQuery: false });
    return groups;
  }
  const span = maxId(selected) + 1;
  // inGroup[h·span + b] === group: block b is in head h's union; inRow, the same for one try of a row.
  const inGroup = new Int32Array(Hk * span);
  const inRow = new Int32Array(Hk * span);
  let group = 1;
  let attempt = 0;
  let members: number[][] = Array.from({ length: Hk }, () => []);
  const fresh = Array.from({ length: Hk }, () => new Int32Array(k));
  const freshCount = new Int32Array(Hk);
  const close = (to: number): void => {
    const blocks = members.map((list) => list.sort((a, b) => a - b));
    const width = Math.max(1, ...blocks.map((list) => list.length));
    // Work of each form: score entries plus gathered key floats.
    const unionWork = H * (to - from) * width * B + Hk * width * B * headDim;
    const perQueryWork = H * (to - from) * k * B + Hk * (to - from) * k * B * headDim;
    const unionFits = rowAttention !== 'per-row' && unionBytes(to - from, width) <= attentionBytes;
    const perRowFits = rowAttention !== 'union' && perQueryBytes(to - from) <= attentionBytes;
    const perQuery = rowAttention === 'per-row' || (rowAttention === 'auto' && (!unionFits || (perRowFits && perQueryWork < unionWork)));
    groups.push({ from, to, blocks, perQuery });
    from = to;
    group++;
    members = Array.from({ length: Hk }, () => []);
  };
  for (let t = 0; t < rows; t++) {
    attempt++;
    let width = 1;
    for (let h = 0; h < Hk; h++) {
      const base = h * span;
      let count = 0;
      for (let j = (h * rows + t) * k; j < (h * rows + t + 1) * k; j++) {
        const block = selected[j];
        if (block < 0 || inGroup[base + block] === group || inRow[base + block] === attempt) continue;
        inRow[base + block] = attempt;
        fresh[h][count++] = block;
      }
      freshCount[h] = count;
      width = Math.max(width, members[h].length + count);
    }
    const groupRows = t + 1 - from;
    const fits =
      width <= capacity &&
      ((rowAttention !== 'per-row' && unionBytes(groupRows, width) <= attentionBytes) || (rowAttention !== 'union' && perQueryBytes(groupRows) <= attentionBytes));
    if (t > from && !fits) {
      close(t);
      t--;
      continue;
    }
    if (width > capacity) throw new RangeError(`one query selected ${width} blocks; the pool holds ${capacity}`);
    for (let h = 0; h < Hk; h++) {
      for (let i = 0; i < freshCount[h]; i++) {
        inGroup[h * span + fresh[h][i]] = group;
        members[h].push(fresh[h][i]);
      }
    }
  }
  close(rows);
  return groups;
}

/** Rows [from, to) of a chunk attending in one call with the selection on the device, over every block (union) or per row. */
export interface SelectedRowGroup {
  from: number;
  to: number;
  perQuery: boolean;
}

/**
 * A chunk's rows in groups when every block is on the device and the selection stays there
 * (the 'selected-…' forms of row-attend-graphs.ts): no id is seen here, only the widest
 * head's union of the chunk's selections (`unionWidth` blocks of the chunk's `blocks`, from
 * the selection graph), an upper bound of any group's. The form follows from the work of a
 * row — scores over the union plus its mask over every block, or each row's k blocks
 * gathered (scores plus gathered key floats) — and the groups are as long as the score
 * budget allows.
 */
export function selectedRowGroups(rows: number, blocks: number, k: number, limits: RowGroupLimits, unionWidth = blocks): SelectedRowGroup[] {
  const { kvHeads: Hk, heads: H, blockSize: B, headDim, attentionBytes, rowAttention } = limits;
  const width = Math.max(1, Math.min(blocks, unionWidth));
  const unionRowWork = H * width * B + Hk * blocks;
  const perRowWork = H * k * B + Hk * k * B * headDim;
  const perQuery = rowAttention === 'per-row' || (rowAttention === 'auto' && perRowWork < unionRowWork);
  // Bytes of one row's largest tensor: its scores over the union, or its gathered keys.
  const rowBytes = perQuery ? Math.max(H, Hk * headDim) * k * B * 4 : Math.max(H * width * B, Hk * blocks) * 4;
  const perCall = Math.max(1, Math.floor(attentionBytes / rowBytes));
  const groups: SelectedRowGroup[] = [];
  for (let from = 0; from < rows; from += perCall) groups.push({ from, to: Math.min(rows, from + perCall), perQuery });
  return groups;
}

/** Feeds of the union form: the group's blocks [Hk, U] with their slots, and which of them each row selected [Hk, R, U]. */
export function unionFeeds(chunk: ChunkSelection, group: RowGroup, slots: readonly Int32Array[]) {
  const Hk = group.blocks.length;
  const { rows, k, selected } = chunk;
  const R = group.to - group.from;
  const width = Math.max(1, ...group.blocks.map((list) => list.length));
  const blockIds = new Int32Array(Hk * width).fill(-1);
  const slotIds = new Int32Array(Hk * width); // padding reads slot 0, masked
  const mask = new Uint8Array(Hk * R * width);
  const column = new Int32Array(spanOf(group));
  for (let h = 0; h < Hk; h++) {
    const list = group.blocks[h];
    list.forEach((block, i) => {
      blockIds[h * width + i] = block;
      slotIds[h * width + i] = slots[h][i];
      column[block] = i; // read below only for this head's blocks
    });
    for (let t = 0; t < R; t++) {
      const row = (h * R + t) * width;
      if (!selected) {
        mask.fill(1, row, row + list.length);
        continue;
      }
      const from = (h * rows + group.from + t) * k;
      for (let j = from; j < from + k; j++) if (selected[j] >= 0) mask[row + column[selected[j]]] = 1;
    }
  }
  return { width, blockIds, slotIds, mask };
}

/** Feeds of the per-row form: each row's own k blocks and slots [Hk, R, k] (block −1 and slot 0: none). */
export function perQueryFeeds(chunk: ChunkSelection, group: RowGroup, slots: readonly Int32Array[]) {
  const Hk = group.blocks.length;
  const { rows, k, selected } = chunk;
  const R = group.to - group.from;
  const blockIds = new Int32Array(Hk * R * k).fill(-1);
  const slotIds = new Int32Array(Hk * R * k); // padding reads slot 0, masked
  const column = new Int32Array(spanOf(group));
  for (let h = 0; h < Hk; h++) {
    group.blocks[h].forEach((block, i) => (column[block] = i));
    for (let t = 0; t < R; t++) {
      const from = (h * rows + group.from + t) * k;
      const at = (h * R + t) * k;
      for (let j = 0; j < k; j++) {
        const block = selected![from + j];
        if (block < 0) continue;
        blockIds[at + j] = block;
        slotIds[at + j] = slots[h][column[block]];
      }
    }
  }
  return { blockIds, slotIds };
}

function maxId(ids: Int32Array): number {
  let most = -1;
  for (let i = 0; i < ids.length; i++) if (ids[i] > most) most = ids[i];
  return most;
}

function spanOf(group: RowGroup): number {
  let most = -1;
  for (const list of group.blocks) for (const block of list) most = Math.max(most, block);
  return most + 1;
}
