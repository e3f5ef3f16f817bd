import assert from 'node:assert/strict';
import { test } from 'node:test';
import { contentRange, OciError, parseRange, unsatisfiedContentRange } from '../src/index.ts';

test('no header -> no range', () => {
  assert.equal(parseRange(undefined, 100), undefined);
});

test('single ranges', () => {
  assert.deepEqual(parseRange('bytes=0-99', 100), { start: 0, end: 99 });
  assert.deepEqual(parseRange('bytes=10-19', 100), { start: 10, end: 19 });
  assert.deepEqual(parseRange('bytes=5-5', 100), { start: 5, end: 5 });
  assert.deepEqual(parseRange('bytes=10-', 100), { start: 10, end: 99 });
  assert.deepEqual(parseRange('bytes=99-', 100), { start: 99, end: 99 });
  assert.deepEqual(parseRange('bytes=-10', 100), { start: 90, end: 99 });
  assert.deepEqual(parseRange('bytes=-1000', 100), { start: 0, end: 99 });
  assert.deepEqual(parseRange('bytes=50-1000', 100), { start: 50, end: 99 });
  assert.deepEqual(parseRange('bytes=0-99999999999999999999', 100), { start: 0, end: 99 });
  assert.deepEqual(parseRange(' Bytes = 1 - 2 ', 100), { start: 1, end: 2 });
});

function is416(e: unknown): boolean {
  return e instanceof OciError && e.code === 'RANGE_INVALID' && e.status === 416;
}

test('invalid, multi-range and unsatisfiable -> RANGE_INVALID 416', () => {
  const bad: [string, number][] = [
    ['', 100],
    ['bytes', 100],
    ['bytes=', 100],
    ['bytes=-', 100],
    ['bytes=a-b', 100],
    ['bytes=1-2-3', 100],
    ['bytes=-1-2', 100],
    ['bytes=1.5-2', 100],
    ['items=0-1', 100],
    ['0-1', 100],
    ['bytes=0-1,5-6', 100],
    ['bytes=0-1, 5-6', 100],
    ['bytes=5-4', 100],
    ['bytes=100-', 100],
    ['bytes=100-200', 100],
    ['bytes=-0', 100],
    ['bytes=0-', 0],
    ['bytes=-5', 0],
  ];
  for (const [h, size] of bad) assert.throws(() => parseRange(h, size), is416, `${h} / ${size}`);
});

test('416 detail carries the header and size', () => {
  try {
    parseRange('bytes=200-', 100);
    assert.fail('expected throw');
  } catch (e) {
    assert.ok(is416(e));
    assert.deepEqual((e as OciError).detail, { range: 'bytes=200-', size: 100 });
  }
});

test('Content-Range formatting', () => {
  assert.equal(contentRange({ start: 0, end: 99 }, 100), 'bytes 0-99/100');
  assert.equal(contentRange(parseRange('bytes=-10', 100)!, 100), 'bytes 90-99/100');
  assert.equal(unsatisfiedContentRange(100), 'bytes */100');
});

test('a bad size is a programming error (TypeError)', () => {
  assert.throws(() => parseRange('bytes=0-1', -1), TypeError);
  assert.throws(() => parseRange('bytes=0-1', 1.5), TypeError);
});
