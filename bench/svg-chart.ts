// A small SVG line chart (log₂ x axis, linear or log₁₀ y) for benchmark reports:
// self-contained files that render on GitHub without a plotting dependency.

export interface ChartSeries {
  name: string;
  points: [number, number][];
  /** Palette index (default: the series' position), so related series can share a color. */
  color?: number;
  /** Dashed line: the second variant of a color (fp16 beside fp32, say). */
  dashed?: boolean;
}

export interface ChartSpec {
  title: string;
  xLabel: string;
  yLabel: string;
  series: ChartSeries[];
  logY?: boolean;
}

const COLORS = ['#d1495b', '#2e86ab', '#66a182', '#edae49', '#8e6c8a'];

function escape(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

function compact(n: number): string {
  if (n >= 1 << 20 && n % (1 << 20) === 0) return `${n / (1 << 20)}M`;
  if (n >= 1024 && n % 1024 === 0) return `${n / 1024}K`;
  return n >= 100 ? n.toFixed(0) : n >= 10 ? n.toFixed(1) : n.toPrecision(2);
}

export function lineChart(spec: ChartSpec): string {
  const width = 720;
  const height = 420;
  const margin = { left: 70, right: 170, top: 40, bottom: 55 };
  const points = spec.series.flatMap((s) => s.points);
  const xs = points.map(([x]) => x);
  const ys = points.map(([, y]) => y).filter((y) => y > 0);
  const logY = spec.logY ?? (ys.length > 0 && Math.max(...ys) / Math.min(...ys) > 30);
  const [x0, x1] = xs.length ? [Math.log2(Math.min(...xs)), Math.log2(Math.max(...xs))] : [0, 1];
  const yMax = ys.length ? Math.max(...ys) : 1;
  const yMin = logY ? Math.min(...ys) : 0;
  const fx = (x: number) => margin.left + ((Math.log2(x) - x0) / Math.max(1e-9, x1 - x0)) * (width - margin.left - margin.right);
  const ty = (y: number) => (logY ? Math.log10(y) : y);
  const [t0, t1] = logY ? [Math.floor(Math.log10(yMin)), Math.ceil(Math.log10(yMax))] : [0, yMax * 1.1];
  const fy = (y: number) => height - margin.bottom - ((ty(y) - t0) / Math.max(1e-9, t1 - t0)) * (height - margin.top - margin.bottom);
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" font-size="12">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="${width / 2}" y="22" text-anchor="middle" font-size="15">${escape(spec.title)}</text>`,
    `<line x1="${margin.left}" y1="${height - margin.bottom}" x2="${width - margin.right}" y2="${height - margin.bottom}" stroke="#333"/>`,
    `<line x1="${margin.left}" y1="${margin.top}" x2="${margin.left}" y2="${height - margin.bottom}" stroke="#333"/>`,
    `<text x="${(margin.left + width - margin.right) / 2}" y="${height - 12}" text-anchor="middle">${escape(spec.xLabel)}</text>`,
    `<text transform="translate(16 ${(margin.top + height - margin.bottom) / 2}) rotate(-90)" text-anchor="middle">${escape(spec.yLabel)}${logY ? ' (log)' : ''}</text>`,
  ];
  for (const x of [...new Set(xs)].sort((a, b) => a - b)) {
    out.push(`<text x="${fx(x)}" y="${height - margin.bottom + 18}" text-anchor="middle">${compact(x)}</text>`);
  }
  const ticks = logY ? Array.from({ length: t1 - t0 + 1 }, (_, i) => 10 ** (t0 + i)) : Array.from({ length: 6 }, (_, i) => (t1 * i) / 5);
  for (const y of ticks) {
    out.push(`<line x1="${margin.left}" y1="${fy(y)}" x2="${width - margin.right}" y2="${fy(y)}" stroke="#eee"/>`);
    out.push(`<text x="${margin.left - 6}" y="${fy(y) + 4}" text-anchor="end">${compact(y)}</text>`);
  }
  spec.series.forEach((series, i) => {
    const color = COLORS[(series.color ?? i) % COLORS.length];
    const dash = series.dashed ? ' stroke-dasharray="6 4"' : '';
    const pts = series.points.filter(([, y]) => y > 0 || !logY).sort((a, b) => a[0] - b[0]);
    if (pts.length > 1)
      out.push(`<polyline fill="none" stroke="${color}" stroke-width="2"${dash} points="${pts.map(([x, y]) => `${fx(x).toFixed(1)},${fy(y).toFixed(1)}`).join(' ')}"/>`);
    for (const [x, y] of pts)
      out.push(`<circle cx="${fx(x).toFixed(1)}" cy="${fy(y).toFixed(1)}" r="3.5" fill="${series.dashed ? 'white' : color}" stroke="${color}" stroke-width="1.5"/>`);
    const ly = margin.top + 10 + i * 20;
    out.push(
      `<line x1="${width - margin.right + 15}" y1="${ly - 7}" x2="${width - margin.right + 29}" y2="${ly - 7}" stroke="${color}" stroke-width="3"${series.dashed ? ' stroke-dasharray="4 2"' : ''}/>`,
    );
    out.push(`<text x="${width - margin.right + 35}" y="${ly - 3}">${escape(series.name)}</text>`);
  });
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}
