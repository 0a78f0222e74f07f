import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { axisTiles, runTiled, type TileSpec, tileCount } from '../../src/inference/tiling.js';

const spec: TileSpec = { patch: [32, 96, 96], overlap: [8, 16, 16], multipleOf: 8 };

function randomVolume(n: number, seed = 1): Float32Array {
  const v = new Float32Array(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    v[i] = (x >>> 0) / 4294967296;
  }
  return v;
}

describe('tiling', () => {
  it('plans tiles along an axis: fits, exact multiples, and a last tile moved back to the edge', () => {
    assert.deepEqual(axisTiles(20, 32, 8, 8), { starts: [0], length: 20, padded: 24 });
    assert.deepEqual(axisTiles(32, 32, 8, 8), { starts: [0], length: 32, padded: 32 });
    assert.deepEqual(axisTiles(56, 32, 8, 8), { starts: [0, 24], length: 32, padded: 32 });
    assert.deepEqual(axisTiles(57, 32, 8, 8), { starts: [0, 24, 25], length: 32, padded: 32 });
    assert.deepEqual(axisTiles(300, 96, 16, 8).starts, [0, 80, 160, 204]);
    assert.equal(tileCount([300, 200, 120], spec), 4 * 3 * 5);
  });

  it('an identity model reproduces its input exactly across tile seams and padding', async () => {
    for (const size of [
      [150, 101, 45],
      [96, 96, 32],
      [17, 200, 9],
    ] as [number, number, number][]) {
      const vol = randomVolume(size[0] * size[1] * size[2], size[0]);
      const seen: number[][] = [];
      const out = await runTiled(vol, size, spec, async (input, dims) => {
        seen.push(dims);
        for (const d of dims) assert.equal(d % 8, 0, `tile dims ${dims} are multiples of 8`);
        assert.ok(dims[0] <= 32 && dims[1] <= 96 && dims[2] <= 96);
        return Float32Array.from(input);
      });
      assert.equal(seen.length, tileCount(size, spec));
      assert.equal(out.length, vol.length);
      for (let i = 0; i < vol.length; i++) if (out[i] !== vol[i]) assert.fail(`voxel ${i} of ${size}: ${out[i]} != ${vol[i]}`);
    }
  });

  it('averages overlapping tiles: a model that returns its tile number gives the mean of the covering tiles', async () => {
    const size: [number, number, number] = [60, 4, 4];
    const s: TileSpec = { patch: [8, 8, 32], overlap: [0, 0, 8], multipleOf: 4 };
    let tile = 0;
    const out = await runTiled(new Float32Array(60 * 16), size, s, async (input) => {
      tile++;
      return new Float32Array(input.length).fill(tile);
    });
    // x tiles start at 0 and 24 (60 − 32 = 28 → starts 0, 24, 28): x 0..23 tile 1; 24..27 tiles 1, 2; 28..31 tiles 1, 2, 3;
    // 32..55 tiles 2, 3; 56..59 tile 3.
    assert.deepEqual(axisTiles(60, 32, 8, 4).starts, [0, 24, 28]);
    const at = (x: number) => out[x] as number;
    assert.equal(at(0), 1);
    assert.equal(at(25), 1.5);
    assert.equal(at(30), 2);
    assert.equal(at(40), 2.5);
    assert.equal(at(59), 3);
  });

  it('pads with the pad value and rejects a model output of the wrong size', async () => {
    const size: [number, number, number] = [5, 5, 5];
    await runTiled(new Float32Array(125).fill(0.5), size, { patch: [8, 8, 8], overlap: [0, 0, 0], multipleOf: 8, padValue: -1 }, async (input, dims) => {
      assert.deepEqual(dims, [8, 8, 8]);
      assert.equal(input[0], 0.5);
      assert.equal(input[7], -1);
      return input;
    });
    await assert.rejects(
      runTiled(new Float32Array(125), size, spec, async () => new Float32Array(3)),
      /returned 3 values/,
    );
  });

  it('reports progress per tile', async () => {
    const calls: string[] = [];
    await runTiled(
      new Float32Array(100 * 100 * 40),
      [100, 100, 40],
      spec,
      async (x) => x,
      (d, t) => calls.push(`${d}/${t}`),
    );
    assert.deepEqual(calls, ['1/8', '2/8', '3/8', '4/8', '5/8', '6/8', '7/8', '8/8']);
  });
});
