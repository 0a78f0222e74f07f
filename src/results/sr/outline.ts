/**
 * The outline of the largest lesion on one slice of a mask, as SR image coordinates (SCOORD, PS3.3 C.18.6.1.2:
 * column\row with 0\0 at the top left corner of the top left pixel, so pixel (c, r) spans [c, c+1] × [r, r+1]).
 * A pure function of the mask: the same slice always gives the same points.
 *
 * The lesion is the largest 4-connected component of the slice (ties: the one met first in row order); its
 * outline runs along the pixel edges of its outer boundary (holes are inside the outline), clockwise on screen,
 * with a vertex only where it turns, closed (the last point repeats the first, as a closed POLYLINE must).
 */

export interface SliceOutline {
  /** x0, y0, x1, y1, …, x0, y0 (columns and rows, in pixels). */
  points: number[];
  /** Lesion pixels in the component. */
  pixels: number;
  /** Area enclosed by the outline, in pixels (the component plus any holes in it). */
  enclosedPixels: number;
}

/** The largest 4-connected lesion component of slice z and its outline; null when the slice has no lesion. */
export function largestLesionOutline(mask: Uint8Array, size: readonly [number, number, number], z: number): SliceOutline | null {
  const [nx, ny] = size;
  const base = z * nx * ny;
  const inLesion = (x: number, y: number) => x >= 0 && y >= 0 && x < nx && y < ny && mask[base + y * nx + x] !== 0;
  const label = new Int32Array(nx * ny);
  let best = { id: 0, pixels: 0, start: -1 };
  let next = 0;
  const stack: number[] = [];
  for (let p = 0; p < nx * ny; p++) {
    if (label[p] !== 0 || !inLesion(p % nx, Math.floor(p / nx))) continue;
    const id = ++next;
    let pixels = 0;
    label[p] = id;
    stack.push(p);
    while (stack.length > 0) {
      const q = stack.pop() as number;
      pixels++;
      const x = q % nx;
      const y = (q - x) / nx;
      for (const [dx, dy] of [
        [1, 0],
        [-1, 0],
        [0, 1],
        [0, -1],
      ] as const) {
        const u = x + dx;
        const v = y + dy;
        if (inLesion(u, v) && label[v * nx + u] === 0) {
          label[v * nx + u] = id;
          stack.push(v * nx + u);
        }
      }
    }
    // p is the component's first pixel in row order: its top edge lies on the outer boundary.
    if (pixels > best.pixels) best = { id, pixels, start: p };
  }
  if (best.start < 0) return null;
  const inside = (x: number, y: number) => x >= 0 && y >= 0 && x < nx && y < ny && label[y * nx + x] === best.id;

  // Crack following: walk the corners with the component on the right (image y points down).
  const x0 = best.start % nx;
  const y0 = (best.start - x0) / nx;
  let px = x0;
  let py = y0;
  let dx = 1;
  let dy = 0;
  const points: number[] = [px, py];
  /** The pixel in the quadrant (sx, sy) ∈ {−1, 1}² around corner (px, py). */
  const quadrant = (sx: number, sy: number) => inside(px + (sx > 0 ? 0 : -1), py + (sy > 0 ? 0 : -1));
  for (let steps = 0; steps <= 4 * (nx + 1) * (ny + 1); steps++) {
    px += dx;
    py += dy;
    if (px === x0 && py === y0) break;
    const [rx, ry] = [-dy, dx];
    const aheadRight = quadrant(dx + rx, dy + ry);
    const aheadLeft = quadrant(dx - rx, dy - ry);
    let turned = true;
    if (!aheadRight) [dx, dy] = [rx, ry];
    else if (aheadLeft) [dx, dy] = [-rx, -ry];
    else turned = false;
    if (turned) points.push(px, py);
  }
  points.push(x0, y0);
  let twice = 0;
  for (let i = 0; i + 3 < points.length; i += 2)
    twice += (points[i] as number) * (points[i + 3] as number) - (points[i + 2] as number) * (points[i + 1] as number);
  return { points, pixels: best.pixels, enclosedPixels: Math.abs(twice) / 2 };
}
