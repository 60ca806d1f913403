import { test } from 'node:test';
import assert from 'node:assert/strict';
import { resolveLocations, type LocationSearch } from '../../engine/context/answer-locations.js';

function workspace(files: Record<string, string>, attended: Record<string, number> = {}): LocationSearch {
  return {
    paths: () => Object.keys(files),
    lines: (path) => files[path].split('\n'),
    weight: (path, line) => attended[`${path}:${line}`] ?? 0,
  };
}

const files = {
  'pkg/a.py': 'import os\n\ndef parse_args(argv=None):\n    return argv\n\nclass Loader:\n    pass\n',
  'pkg/b.py': 'from a import parse_args\n\ndef main():\n    args = parse_args()\n    return args\n',
  'pkg/c.py': 'def main():\n    args = parse_args()\n',
};

test('a copied definition line resolves to its file and 1-based line', () => {
  assert.deepEqual(resolveLocations('def parse_args(argv=None):', workspace(files)), [{ path: 'pkg/a.py', line: 3, text: 'def parse_args(argv=None):' }]);
});

test('leading whitespace on either side is ignored', () => {
  assert.deepEqual(
    resolveLocations('  class Loader:  ', workspace(files)).map((l) => `${l.path}:${l.line}`),
    ['pkg/a.py:6'],
  );
});

test('a line that occurs twice goes to the occurrence the answer attended to', () => {
  const attendedC = workspace(files, { 'pkg/c.py:2': 0.4, 'pkg/b.py:4': 0.1 });
  assert.deepEqual(
    resolveLocations('args = parse_args()', attendedC).map((l) => `${l.path}:${l.line}`),
    ['pkg/c.py:2'],
  );
  // with no attention the first in context order
  assert.deepEqual(
    resolveLocations('args = parse_args()', workspace(files)).map((l) => `${l.path}:${l.line}`),
    ['pkg/b.py:4'],
  );
});

test('several answer lines give several places in answer order, without repeats', () => {
  const answer = 'from a import parse_args\nargs = parse_args()\nargs = parse_args()';
  assert.deepEqual(
    resolveLocations(answer, workspace(files)).map((l) => `${l.path}:${l.line}`),
    ['pkg/b.py:1', 'pkg/b.py:4'],
  );
});

test('an answer cut short resolves when it starts exactly one line', () => {
  assert.deepEqual(
    resolveLocations('def parse_args(ar', workspace(files)).map((l) => `${l.path}:${l.line}`),
    ['pkg/a.py:3'],
  );
  // too short to point anywhere
  assert.deepEqual(resolveLocations('def ma', workspace(files)), []);
});

test('a not-found answer and an answer that copies no line resolve to nothing', () => {
  assert.deepEqual(resolveLocations('`frobnicate` is not in the workspace.', workspace(files)), []);
  assert.deepEqual(resolveLocations('def frobnicate(x):', workspace(files)), []);
  assert.deepEqual(resolveLocations('', workspace(files)), []);
});

test('an answer that slips after copying the start of a line resolves to the line sharing the longest start', () => {
  assert.deepEqual(
    resolveLocations('def parse_args(argv, flags):', workspace(files)).map((l) => `${l.path}:${l.line}`),
    ['pkg/a.py:3'],
  );
  // a shared start shorter than 12 characters, or than 60% of the answer line, points nowhere
  assert.deepEqual(resolveLocations('def parse_x(y):', workspace(files)), []);
  assert.deepEqual(resolveLocations('def parse_args_from_the_environment(env):', workspace(files)), []);
});
