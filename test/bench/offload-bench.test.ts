// A smoke test of bench:offload on the CPU, run as the CLI it is, in fp32 only (a few
// seconds): the offload path (host store, block-pool bookkeeping, batched miss
// uploads) and its comparison points keep running and report sane figures. The same
// run with fp16 beside it, which takes minutes, is `npm run bench:offload:check`.
import { test } from 'node:test';
import { checkQuickOffload, runQuickOffload } from '../../bench/offload-check.js';

test(
  "bench:offload --device cpu --quick in fp32: decode and prefill rows for dense, sparse on-device and sparse offloaded (and the host path's prefill), the resident graphs equal to the host path",
  { timeout: 120_000 },
  async () => {
    checkQuickOffload(await runQuickOffload(['fp32']), ['fp32']);
  },
);
