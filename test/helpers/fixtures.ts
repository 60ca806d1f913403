// The reference fixtures the tests run the engine on (test/fixtures/sala-tiny-a/README.md
// says what they hold and how they were produced).
import path from 'node:path';

/** The tiny random MiniCPM-SALA checkpoint with the public modeling code's outputs beside it. */
export const SALA_TINY_A = path.resolve(__dirname, '../fixtures/sala-tiny-a');
