// An answer's overlay on the map's cells: each file's weight goes to its own cell,
// or, where the file was aggregated, to the 'rest' cell of the nearest folder drawn.
// Pure: the view draws it, the SVG export writes it.

import type { AnswerOverlay, MapCell } from '../../engine/vocabulary.js';

export interface Heat {
  /** Weight per cell (leaves only; 0 where the answer read nothing). */
  weight: Float64Array;
  max: number;
  /** The overlay's files by the cell that shows them (a file cell shows its line ranges). */
  files: Map<number, AnswerOverlay['files'][number][]>;
}

export function heatOf(cells: readonly MapCell[], overlay: AnswerOverlay | undefined): Heat {
  const weight = new Float64Array(cells.length);
  const files = new Map<number, AnswerOverlay['files'][number][]>();
  if (overlay === undefined) return { weight, max: 0, files };
  const fileCell = new Map<string, number>();
  const restOf = new Map<string, number>();
  const folderCell = new Map<string, number>();
  cells.forEach((cell, i) => {
    if (cell.kind === 'file') fileCell.set(cell.path, i);
    else if (cell.kind === 'rest') restOf.set(cell.path, i);
    else folderCell.set(cell.path, i);
  });
  for (const file of overlay.files) {
    let at = fileCell.get(file.path);
    // aggregated: the rest cell of the nearest folder shown (or the folder itself)
    for (let folder = parentPath(file.path); at === undefined; folder = parentPath(folder)) {
      at = restOf.get(folder) ?? folderCell.get(folder);
      if (folder === '') break;
    }
    if (at === undefined) continue;
    weight[at] += file.weight;
    files.set(at, [...(files.get(at) ?? []), file]);
  }
  let max = 0;
  for (const w of weight) max = Math.max(max, w);
  return { weight, max, files };
}

function parentPath(path: string): string {
  const slash = path.lastIndexOf('/');
  return slash < 0 ? '' : path.slice(0, slash);
}
