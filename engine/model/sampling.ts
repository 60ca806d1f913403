// Next-token selection from logits: greedy, or temperature / top-k / nucleus sampling.
// Runs once per generated token over the whole vocab (up to ~73k): every step is an O(V) pass or an
// O(V)-expected selection, never a sort of the vocab.

export interface SamplingOptions {
  /** 0 = greedy (argmax). */
  temperature: number;
  /** Nucleus mass in (0, 1]; 1 = off. */
  topP: number;
  /** Keep the k most likely tokens; 0 or undefined = off. */
  topK?: number;
  /** Seeds the PRNG so a run can be repeated; Math.random when absent. */
  seed?: number;
}

/** Fills defaults (temperature 0, topP 1, topK 0) and rejects out-of-range options with a RangeError. */
export function validateSampling(o: Partial<SamplingOptions>): SamplingOptions {
  const temperature = o.temperature ?? 0;
  if (!Number.isFinite(temperature) || temperature < 0) {
    throw new RangeError(`temperature must be a finite number ≥ 0 (0 = greedy), got ${temperature}`);
  }
  const topP = o.topP ?? 1;
  if (!(typeof topP === 'number' && topP > 0 && topP <= 1)) {
    throw new RangeError(`topP must be in (0, 1] (1 = off), got ${topP}`);
  }
  const topK = o.topK ?? 0;
  if (!Number.isSafeInteger(topK) || topK < 0) {
    throw new RangeError(`topK must be an integer ≥ 0 (0 = off), got ${topK}`);
  }
  const options: SamplingOptions = { temperature, topP, topK };
  if (o.seed !== undefined) {
    if (!Number.isSafeInteger(o.seed)) throw new RangeError(`seed must be an integer, got ${o.seed}`);
    options.seed = o.seed;
  }
  return options;
}

/** Index of the largest logit, the lowest index among ties. Throws on NaN or empty logits. */
export function argmax(logits: Float32Array): number {
  if (logits.length === 0) throw new RangeError('argmax: logits are empty');
  let best = 0;
  let bestValue = -Infinity;
  for (let i = 0; i < logits.length; i++) {
    const value = logits[i];
    if (Number.isNaN(value)) throw new Error(`logits contain NaN (at index ${i}): the model produced invalid output`);
    if (value > bestValue) {
      bestValue = value;
      best = i;
    }
  }
  return best;
}

/** A nucleus, as a cut through the weights: every weight above `cutoff` is in, and so are the first
 * `tiesKept` weights equal to it in id order (lower ids win ties). */
interface Cut {
  cutoff: number;
  tiesKept: number;
}
const NO_CUT: Cut = { cutoff: -Infinity, tiesKept: 0 };

export class Sampler {
  private readonly options: SamplingOptions;
  private readonly random: () => number;
  /** Scratch buffers reused across calls (resized when the vocab changes). */
  private weights = new Float64Array(0);
  private weightScratch = new Float64Array(0);
  private logitScratch = new Float32Array(0);

  constructor(options: SamplingOptions) {
    this.options = validateSampling(options);
    this.random = this.options.seed === undefined ? Math.random : seededRandom(this.options.seed);
  }

  /**
   * Picks the next id from fp32 logits (length V). Greedy when temperature is 0. Otherwise
   * softmax(logits / T) in float64 with max-subtraction, restricted to the top-k tokens, then to the
   * nucleus: the smallest most-likely set whose mass is ≥ topP of what top-k kept (at least one
   * token). Ties in likelihood go to the lower id. Tokens at +Infinity take all the mass.
   * O(V) expected: selection, never a sort of the vocab.
   */
  next(logits: Float32Array): number {
    const best = argmax(logits);
    const { temperature, topP } = this.options;
    const topK = this.options.topK ?? 0;
    const maxLogit = logits[best];
    if (temperature === 0 || maxLogit === Infinity) return best;
    if (maxLogit === -Infinity) throw new Error('every logit is -Infinity: no token can be sampled');

    // ids[n] is the token whose weight is weights[n]; null means the whole vocab, ids[n] = n.
    let ids: Int32Array | null = null;
    let weights: Float64Array;
    if (topK > 0 && topK < logits.length) {
      ids = this.topKIds(logits, topK);
      weights = new Float64Array(ids.length);
      for (let n = 0; n < ids.length; n++) weights[n] = Math.exp((logits[ids[n]] - maxLogit) / temperature);
    } else {
      weights = this.scaledWeights(logits, maxLogit, temperature);
    }
    const cut = topP < 1 ? this.nucleusCut(weights, topP * sum(weights)) : NO_CUT;
    return this.draw(ids, weights, cut);
  }

  /** exp((logit − max) / T) for every token: unnormalised softmax, the top token at 1. */
  private scaledWeights(logits: Float32Array, maxLogit: number, temperature: number): Float64Array {
    if (this.weights.length !== logits.length) this.weights = new Float64Array(logits.length);
    const weights = this.weights;
    for (let i = 0; i < logits.length; i++) weights[i] = Math.exp((logits[i] - maxLogit) / temperature);
    return weights;
  }

  /** Draws among the weights the cut keeps, in proportion to them: one pass for the kept mass, one to
   * find where the random target falls. */
  private draw(ids: Int32Array | null, weights: Float64Array, { cutoff, tiesKept }: Cut): number {
    let keptMass = 0;
    let ties = 0;
    for (let n = 0; n < weights.length; n++) {
      const weight = weights[n];
      if (weight > cutoff || (weight === cutoff && ties++ < tiesKept)) keptMass += weight;
    }
    const target = this.random() * keptMass;
    let cumulative = 0;
    let lastDrawable = 0;
    ties = 0;
    for (let n = 0; n < weights.length; n++) {
      const weight = weights[n];
      if (!(weight > cutoff || (weight === cutoff && ties++ < tiesKept)) || weight === 0) continue;
      cumulative += weight;
      lastDrawable = n;
      if (target < cumulative) return ids ? ids[n] : n;
    }
    return ids ? ids[lastDrawable] : lastDrawable; // rounding left target at the kept mass
  }

  /**
   * The nucleus as a cut: the largest weights whose sum first reaches nucleusMass. A quickselect that
   * carries mass: partition around a pivot, keep the side where the boundary lies. O(n) expected.
   */
  private nucleusCut(weights: Float64Array, nucleusMass: number): Cut {
    if (this.weightScratch.length < weights.length) this.weightScratch = new Float64Array(weights.length);
    const values = this.weightScratch;
    values.set(weights);
    let lo = 0;
    let hi = weights.length; // the boundary lies in values[lo, hi)
    let needed = nucleusMass; // mass still missing after everything above values[lo, hi)
    while (lo < hi) {
      const pivot = medianOfThree(values[lo], values[(lo + hi - 1) >>> 1], values[hi - 1]);
      // Three-way partition of [lo, hi) into > pivot [lo, gt), == pivot [gt, lt), < pivot [lt, hi).
      let gt = lo;
      let lt = hi;
      let massAbove = 0;
      for (let n = lo; n < lt;) {
        const value = values[n];
        if (value > pivot) {
          values[n] = values[gt];
          values[gt++] = value;
          massAbove += value;
          n++;
        } else if (value < pivot) {
          values[n] = values[--lt];
          values[lt] = value;
        } else {
          n++;
        }
      }
      const equalCount = lt - gt;
      if (massAbove >= needed) {
        hi = gt;
      } else if (massAbove + equalCount * pivot >= needed) {
        const tiesKept = Math.min(equalCount, Math.max(1, Math.ceil((needed - massAbove) / pivot)));
        return { cutoff: pivot, tiesKept };
      } else {
        needed -= massAbove + equalCount * pivot;
        lo = lt;
      }
    }
    return NO_CUT; // rounding: the boundary fell past the last weight, so keep them all
  }

  /** Ids of the k largest logits (ties: lower ids), in id order, by selection rather than a sort. */
  private topKIds(logits: Float32Array, k: number): Int32Array {
    if (this.logitScratch.length !== logits.length) this.logitScratch = new Float32Array(logits.length);
    this.logitScratch.set(logits);
    const kth = kthLargest(this.logitScratch, k);
    let above = 0;
    for (let i = 0; i < logits.length; i++) if (logits[i] > kth) above++;
    const ids = new Int32Array(k);
    let count = 0;
    let tiesLeft = k - above;
    for (let i = 0; i < logits.length && count < k; i++) {
      if (logits[i] > kth || (logits[i] === kth && tiesLeft-- > 0)) ids[count++] = i;
    }
    return ids;
  }
}

function sum(values: Float64Array): number {
  let total = 0;
  for (let i = 0; i < values.length; i++) total += values[i];
  return total;
}

/** The k-th largest value (k ≥ 1) by Hoare quickselect; reorders `values`. O(V) expected. */
function kthLargest(values: Float32Array, k: number): number {
  const target = k - 1;
  let lo = 0;
  let hi = values.length - 1;
  while (lo < hi) {
    const pivot = medianOfThree(values[lo], values[(lo + hi) >>> 1], values[hi]);
    let i = lo;
    let j = hi;
    while (i <= j) {
      while (values[i] > pivot) i++;
      while (values[j] < pivot) j--;
      if (i <= j) {
        const swap = values[i];
        values[i] = values[j];
        values[j] = swap;
        i++;
        j--;
      }
    }
    // Now values[lo..j] ≥ pivot ≥ values[i..hi], and anything strictly between equals the pivot.
    if (target <= j) hi = j;
    else if (target >= i) lo = i;
    else return values[target];
  }
  return values[target];
}

function medianOfThree(a: number, b: number, c: number): number {
  return Math.max(Math.min(a, b), Math.min(Math.max(a, b), c));
}

/** mulberry32, two draws per double for 53 random bits. Seeds differing in the high 32 bits differ too. */
function seededRandom(seed: number): () => number {
  let state = ((seed >>> 0) ^ Math.imul(Math.floor(seed / 2 ** 32) >>> 0, 0x9e3779b9)) >>> 0;
  const next32 = (): number => {
    state = (state + 0x6d2b79f5) | 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  };
  return () => ((next32() >>> 5) * 2 ** 26 + (next32() >>> 6)) / 2 ** 53;
}
