/**
 * A warning label burned into a key image ("AI LESION OVERLAY / NOT FOR CLINICAL USE"), white on black, so the
 * image says what it is even where a viewer shows no header (a screenshot, a print, a viewer that hides the series
 * description). A 5×7 bitmap font of just the letters it needs; no font files. The label goes in a corner where it
 * covers no lesion voxel, or is left out when no corner is free or the image is too small for it.
 */

export const LABEL_LINES = ['AI LESION OVERLAY', 'NOT FOR CLINICAL USE'] as const;

/** 5 columns × 7 rows per glyph, top row first. */
const FONT: Record<string, readonly string[]> = {
  ' ': ['00000', '00000', '00000', '00000', '00000', '00000', '00000'],
  A: ['01110', '10001', '10001', '11111', '10001', '10001', '10001'],
  C: ['01110', '10001', '10000', '10000', '10000', '10001', '01110'],
  E: ['11111', '10000', '10000', '11110', '10000', '10000', '11111'],
  F: ['11111', '10000', '10000', '11110', '10000', '10000', '10000'],
  I: ['01110', '00100', '00100', '00100', '00100', '00100', '01110'],
  L: ['10000', '10000', '10000', '10000', '10000', '10000', '11111'],
  N: ['10001', '11001', '10101', '10011', '10001', '10001', '10001'],
  O: ['01110', '10001', '10001', '10001', '10001', '10001', '01110'],
  R: ['11110', '10001', '10001', '11110', '10100', '10010', '10001'],
  S: ['01111', '10000', '10000', '01110', '00001', '00001', '11110'],
  T: ['11111', '00100', '00100', '00100', '00100', '00100', '00100'],
  U: ['10001', '10001', '10001', '10001', '10001', '10001', '01110'],
  V: ['10001', '10001', '10001', '10001', '10001', '01010', '00100'],
  Y: ['10001', '10001', '01010', '00100', '00100', '00100', '00100'],
};

export interface LabelBox {
  x: number;
  y: number;
  width: number;
  height: number;
  scale: number;
}

/** Size of the label at a scale: 1 px (× scale) of padding round the text, 2 px between lines. */
function labelSize(scale: number): { width: number; height: number } {
  const chars = Math.max(...LABEL_LINES.map((l) => l.length));
  return { width: (chars * 6 + 1) * scale, height: LABEL_LINES.length * 9 * scale };
}

/**
 * Where the label goes on a width×height image: the first corner (top left, bottom left, top right, bottom right)
 * whose box `free` accepts; null when none does or the label does not fit.
 */
export function placeLabel(width: number, height: number, free: (box: LabelBox) => boolean): LabelBox | null {
  const scale = Math.max(1, Math.floor(width / 256));
  const size = labelSize(scale);
  const margin = 2 * scale;
  if (size.width + 2 * margin > width || size.height + 2 * margin > height) return null;
  const xs = [margin, width - margin - size.width];
  const ys = [margin, height - margin - size.height];
  for (const x of xs)
    for (const y of ys) {
      const box = { x, y, width: size.width, height: size.height, scale };
      if (free(box)) return box;
    }
  return null;
}

/** Draws the label into RGB pixels (3 bytes a pixel, row by row): a black box, white letters. */
export function drawLabel(rgb: Uint8Array, width: number, box: LabelBox): void {
  const set = (x: number, y: number, v: number) => rgb.fill(v, (y * width + x) * 3, (y * width + x) * 3 + 3);
  for (let y = box.y; y < box.y + box.height; y++) for (let x = box.x; x < box.x + box.width; x++) set(x, y, 0);
  const s = box.scale;
  LABEL_LINES.forEach((line, li) => {
    const top = box.y + (1 + li * 9) * s;
    for (let ci = 0; ci < line.length; ci++) {
      const glyph = FONT[line[ci] as string];
      if (!glyph) throw new Error(`no glyph for "${line[ci]}"`);
      const left = box.x + (1 + ci * 6) * s;
      for (let gy = 0; gy < 7; gy++)
        for (let gx = 0; gx < 5; gx++)
          if (glyph[gy]?.[gx] === '1') for (let dy = 0; dy < s; dy++) for (let dx = 0; dx < s; dx++) set(left + gx * s + dx, top + gy * s + dy, 255);
    }
  });
}
