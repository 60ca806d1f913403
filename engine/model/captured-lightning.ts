// The decode step's Lightning layers as CUDA graphs. A Lightning layer is about seventy
// nodes after onnxruntime's optimizations, and on a GPU their launches, not their
// arithmetic, were the step's cost: on an H200 the 9B shape's one-token layer took 0.56 ms
// as a session run and 0.27 ms replayed (docs/benchmarks/gpu-step-cuda.json). Captured once, a layer
// replays in one launch. A CUDA graph replays fixed addresses, so everything a layer
// reads and writes lives in buffers kept here: its input row, its output row, the step's
// position, and two state buffers per layer that swap roles each step (the state read
// by step t is the one written by step t − 1). Graph ids: 1 + 2·layer + parity.
//
// onnxruntime keeps a captured graph for the session's life, so the buffers are the
// model's, made once and reused by every decoder after it: one decoder at a time holds
// them (acquire/yield); another decoder meanwhile runs its layers uncaptured.
import type * as ort from 'onnxruntime-node';
import type { DeviceTensors } from '../runtime/device-tensors.js';
import type { GraphSession } from '../runtime/session.js';

export class CapturedLightning {
  private readonly inputs = new Map<number, ort.Tensor>();
  private readonly outputs = new Map<number, ort.Tensor>();
  private readonly states = new Map<number, [ort.Tensor, ort.Tensor]>();
  private readonly owned = new Set<ort.Tensor>();
  private position?: ort.Tensor;
  private parity = 0;
  private holder?: object;
  /** Why capture was turned off for the model's life (a failed run), if it was. */
  failure?: string;

  constructor(
    private readonly session: GraphSession,
    private readonly tensors: DeviceTensors,
    private readonly hiddenSize: number,
    private readonly stateDims: readonly number[],
  ) {}

  /** Takes the buffers for `decoder`; false while another decoder holds them, or once capture failed. */
  acquire(decoder: object): boolean {
    if (this.failure !== undefined) return false;
    this.holder ??= decoder;
    return this.holder === decoder;
  }

  /** Whether runs still go through the captured graphs. */
  get usable(): boolean {
    return this.failure === undefined;
  }

  /**
   * Turns capture off after a failed run: the layer's inputs (row and state) are intact,
   * so the caller runs it again uncaptured, and every step after runs uncaptured.
   */
  disable(err: unknown): void {
    if (this.failure !== undefined) return;
    this.failure = (err instanceof Error ? err.message : String(err)).split('\n')[0];
    process.stderr.write(`panorama: CUDA graphs turned off (${this.failure}); decoding without them (PANORAMA_CUDA_GRAPH=0 skips them from the start)\n`);
  }

  /** Gives the buffers up (the decoder has copied its states out of them). */
  yield(decoder: object): void {
    if (this.holder === decoder) this.holder = undefined;
  }

  /** Whether `tensor` is one of the buffers kept here (never released by the caller). */
  owns(tensor: ort.Tensor | undefined): boolean {
    return tensor !== undefined && this.owned.has(tensor);
  }

  private async buffer(dims: readonly number[]): Promise<ort.Tensor> {
    const tensor = await this.tensors.zeros(dims);
    this.owned.add(tensor);
    return tensor;
  }

  /** Writes the position of the token this step feeds ([1] float32, host). */
  async begin(position: ort.Tensor): Promise<void> {
    this.position ??= await this.buffer([1]);
    await this.tensors.copyInto(position, this.position);
  }

  /** Ends the step: the states written become the states read. */
  end(): void {
    this.parity ^= 1;
  }

  /**
   * One layer over the step's row `x`, from `state`. Returns its output row and new state
   * (both buffers kept here); copies x and state into place first when they are not.
   */
  async run(layer: number, weights: Record<string, ort.Tensor>, x: ort.Tensor, state: ort.Tensor): Promise<{ x: ort.Tensor; state: ort.Tensor }> {
    // A row written by the previous Lightning layer is already a fixed buffer; embed and sparse rows are new each step.
    let input = x;
    if (!this.owns(x)) {
      if (!this.inputs.has(layer)) this.inputs.set(layer, await this.buffer([1, this.hiddenSize]));
      input = this.inputs.get(layer)!;
      await this.tensors.copyInto(x, input);
    }
    if (!this.outputs.has(layer)) this.outputs.set(layer, await this.buffer([1, this.hiddenSize]));
    if (!this.states.has(layer)) this.states.set(layer, [await this.buffer(this.stateDims), await this.buffer(this.stateDims)]);
    const pair = this.states.get(layer)!;
    const read = pair[this.parity];
    const write = pair[1 - this.parity];
    // After a prefill the layer's state is a tensor of its own: it moves into the buffer this step reads.
    if (state !== read) await this.tensors.copyInto(state, read);
    const out = await this.session.run(
      { ...weights, x: input, state: read, positions: this.position! },
      { x_out: this.outputs.get(layer)!, state_out: write },
      1 + 2 * layer + this.parity,
    );
    return { x: out.x_out, state: out.state_out };
  }

  /** Frees the buffers (with the model: the captured graphs point at them). */
  release(): void {
    for (const tensor of this.owned) tensor.dispose();
    this.owned.clear();
    this.inputs.clear();
    this.outputs.clear();
    this.states.clear();
    this.position = undefined;
  }
}
