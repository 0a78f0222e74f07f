/**
 * Deterministic synthetic chest CT ("phantom") with known lesions, for tests, demos and benchmarks.
 *
 * Same seed (and options) → byte-identical volume and masks. The seed drives three independent random streams:
 * anatomy (body/lung size, vessel tree), lesions, and noise; so one seed is one "patient" whatever the kind.
 *
 * Coordinates are DICOM patient coordinates (LPS, mm): +x = patient's left, +y = posterior, +z = head.
 * Geometry (see phantomGeometry): axial, direction identity, voxel (i, j, k) at
 *   x = -(nx-1)·sx/2 + i·sx,  y = -(ny-1)·sy/2 + j·sy,  z = -(nz-1)·sz + k·sz,
 * i.e. x and y centred on 0, the top slice (k = nz-1, the head end) at z = 0, the volume centre at
 * (0, 0, -(nz-1)·sz/2). Image rows run anterior → posterior, columns patient right → left (radiological view).
 *
 * Anatomy is laid out relative to the field of view: in-plane it scales with min(nx·sx, ny·sy) (a 358 mm field,
 * the default 128 × 2.8 mm, is an adult of ≈ 32 × 24 cm), along z the lungs fill ≈ 82 % of nz·sz. Lesion sizes
 * scale the same way in-plane (so they are the adult sizes named below at a 358 mm field).
 *
 * Tissues (HU before noise): air −1000; subcutaneous fat −100; muscle / mediastinum / heart / vessels 40;
 * lung −890…−820 (denser posteriorly); ribs 700; vertebral body 300 with 700 cortex; sternum 450.
 * Lesions (only inside the lungs; lesionMask ⊆ lungMask):
 *   covid           3–8 bilateral, peripheral/subpleural ground-glass opacities (−600…−450, soft edges), some
 *                   crazy paving (GGO + reticular grid), some consolidation (−60…20, with a GGO halo) — positive;
 *   lobar-pneumonia one lower lobe (or the right upper lobe) consolidated, homogeneous ≈ 0 HU, air bronchograms;
 *   nodule          1–3 solid round nodules (≈ 30 HU, 5–20 mm), sometimes one lobulated mass of 30–50 mm;
 *   old-lesion      small calcified nodules (≈ 450 HU, 4–8 mm) and/or thin fibrotic strands (≈ −20 HU);
 *   healthy         none.
 * Noise: Gaussian (white, clipped at ±5σ), σ = 15 HU by default, everywhere.
 */
import type { Geometry, HuVolume } from '../imaging/volume.js';
import { patientToVoxel } from '../imaging/volume.js';
import { Rng } from './prng.js';

export type Vec3 = [number, number, number];
export type PhantomKind = 'covid' | 'lobar-pneumonia' | 'nodule' | 'old-lesion' | 'healthy';
export const PHANTOM_KINDS: readonly PhantomKind[] = ['covid', 'lobar-pneumonia', 'nodule', 'old-lesion', 'healthy'];
export type LesionType = 'ggo' | 'crazy-paving' | 'consolidation' | 'lobar-consolidation' | 'nodule' | 'mass' | 'calcified-nodule' | 'fibrotic-strand';

export interface PhantomLesion {
  type: LesionType;
  /** Centroid (mm, patient coordinates) of the voxels this lesion marked in lesionMask. */
  centerMm: Vec3;
  /** Radius (mm) of the sphere with the volume of the voxels this lesion marked. */
  radiusMm: number;
  /** 'right' is x < 0 (LPS), 'left' x > 0. */
  lung: 'left' | 'right';
  /** Voxels this lesion marked (voxels shared by overlapping lesions count for each). */
  voxels: number;
  volumeMl: number;
}

export interface PhantomOptions {
  seed: number;
  /** [nx, ny, nz]; default [128, 128, 64]. */
  size?: Vec3;
  /** mm [sx, sy, sz]; default [2.8, 2.8, 5]. */
  spacing?: Vec3;
  kind: PhantomKind;
  /** Noise σ in HU; default 15. 0 gives a noise-free volume. */
  noiseSigma?: number;
}

export interface Phantom {
  volume: HuVolume;
  /** 1 = lung parenchyma (vessels, small airways and lesions inside the lungs included); trachea and main bronchi are 0. Same indexing as volume.data. */
  lungMask: Uint8Array;
  /** 1 = voxel of any lesion (COVID-19-like or not). Always inside lungMask. */
  lesionMask: Uint8Array;
  lesions: PhantomLesion[];
  /** The layout used (mm), for tests that need to find a tissue. */
  anatomy: ChestAnatomy;
}

export interface LungShape {
  /** −1 = right lung (x < 0), +1 = left lung. */
  side: -1 | 1;
  /** Apex-taper ellipse (mm): centre and semi-axes at full width. */
  cx: number;
  cy: number;
  ax: number;
  ay: number;
  /** Diaphragm dome height above zBase (mm) and the in-plane semi-axes of the dome. */
  dome: number;
  domeAx: number;
  domeAy: number;
  /** Hilum (mm): where the main bronchus ends and the vessel trees start. */
  hilum: Vec3;
}

export interface ChestAnatomy {
  /** In-plane size relative to the reference adult (358 mm field of view → 1). */
  scale: number;
  body: { ax: number; ay: number; fat: number };
  /** Pleural cavity: the ellipse inside the ribs (centred on x = y = 0). */
  cavity: { ax: number; ay: number };
  ribs: { thickness: number; pitch: number; slope: number; fraction: number; zMin: number; zMax: number };
  zApex: number;
  zBase: number;
  mediastinumHalfWidth: number;
  right: LungShape;
  left: LungShape;
  heart: { center: Vec3; radii: Vec3 };
  aorta: { cx: number; cy: number; r: number };
  spine: { cy: number; r: number; canalR: number };
  trachea: { cy: number; r: number; wall: number; zCarina: number };
}

const HU_AIR = -1000;
const HU_FAT = -100;
const HU_SOFT = 40;
const HU_BONE = 700;

const DEFAULT_SIZE: Vec3 = [128, 128, 64];
const DEFAULT_SPACING: Vec3 = [2.8, 2.8, 5];

/** The phantom's geometry for a size and spacing (see the module comment). */
export function phantomGeometry(size: Vec3 = DEFAULT_SIZE, spacing: Vec3 = DEFAULT_SPACING): Geometry {
  const [nx, ny, nz] = size;
  const [sx, sy, sz] = spacing;
  return {
    size: [nx, ny, nz],
    spacing: [sx, sy, sz],
    origin: [(-(nx - 1) * sx) / 2, (-(ny - 1) * sy) / 2, -(nz - 1) * sz],
    direction: [1, 0, 0, 0, 1, 0, 0, 0, 1],
  };
}

/** The anatomical layout (mm) for a geometry made by phantomGeometry and a seed. */
export function chestAnatomy(geometry: Geometry, seed: number): ChestAnatomy {
  const rng = new Rng(seed, 1);
  const [nx, ny, nz] = geometry.size;
  const [sx, sy, sz] = geometry.spacing;
  const fov = Math.min(nx * sx, ny * sy);
  const zExtent = nz * sz;
  const zTop = geometry.origin[2] + (nz - 1) * sz;
  const scale = fov / 358;
  const bx = 0.44 * fov * rng.uniform(0.96, 1.04);
  const by = 0.33 * fov * rng.uniform(0.96, 1.04);
  const cavity = { ax: 0.84 * bx, ay: 0.72 * by };
  const zApex = zTop - 0.06 * zExtent;
  const lh = 0.82 * zExtent * rng.uniform(0.97, 1.0);
  const zBase = zApex - lh;
  const spine = { cy: cavity.ay - 0.05 * bx, r: 0.1 * bx, canalR: 0.045 * bx };
  const trachea = { cy: spine.cy - spine.r - 0.11 * by, r: 0.06 * bx, wall: 0.013 * bx, zCarina: zApex - 0.33 * lh };
  const hilumZ = trachea.zCarina - 0.07 * lh;
  const lung = (side: -1 | 1, dome: number): LungShape => ({
    side,
    cx: side * 0.46 * cavity.ax,
    cy: 0.1 * cavity.ay,
    ax: 0.62 * cavity.ax,
    ay: 1.1 * cavity.ay,
    dome,
    domeAx: 0.55 * cavity.ax,
    domeAy: 0.9 * cavity.ay,
    hilum: [side * 0.33 * cavity.ax, trachea.cy - 0.08 * by, hilumZ],
  });
  return {
    scale,
    body: { ax: bx, ay: by, fat: 0.065 * bx },
    cavity,
    ribs: { thickness: 0.055 * bx, pitch: 0.09 * lh, slope: 0.35, fraction: 0.42, zMin: zBase - 0.04 * zExtent, zMax: zApex + 0.04 * zExtent },
    zApex,
    zBase,
    mediastinumHalfWidth: 0.09 * bx,
    right: lung(-1, 0.28 * lh * rng.uniform(0.9, 1.1)),
    left: lung(1, 0.24 * lh * rng.uniform(0.9, 1.1)),
    heart: { center: [0.1 * bx, -0.22 * by, zBase + 0.34 * lh], radii: [0.42 * bx, 0.45 * by, 0.2 * lh] },
    aorta: { cx: 0.17 * bx, cy: spine.cy - 0.9 * spine.r, r: 0.075 * bx },
    spine,
    trachea,
  };
}

/** Mutable state shared by the painters: the arrays and the geometry, unpacked for the hot loops. */
interface Canvas {
  data: Int16Array;
  lung: Uint8Array;
  lesion: Uint8Array;
  nx: number;
  ny: number;
  nz: number;
  sx: number;
  sy: number;
  sz: number;
  ox: number;
  oy: number;
  oz: number;
  /** Partial-volume width (mm) for soft tube edges: the in-plane voxel size. */
  pv: number;
}

/** Running sum of the voxels a lesion marked, to report its centroid and size. */
interface Tally {
  n: number;
  x: number;
  y: number;
  z: number;
}

const newTally = (): Tally => ({ n: 0, x: 0, y: 0, z: 0 });

function clampInt(v: number, lo: number, hi: number): number {
  return Math.min(Math.max(v, lo), hi);
}

/** Per slice and lung side (index k·2 + (side > 0 ? 1 : 0)): lung voxel count and coordinate sums. */
interface LungSlices {
  count: Float64Array;
  sumX: Float64Array;
  sumY: Float64Array;
}

/** Body, chest wall, ribs, lungs, spine, trachea: everything that extrudes along z, painted row span by row span. */
function paintBody(c: Canvas, a: ChestAnatomy): LungSlices {
  const { data, lung, nx, ny, nz, sx, sy, sz, ox, oy, oz } = c;
  const nxy = nx * ny;
  const slices: LungSlices = { count: new Float64Array(nz * 2), sumX: new Float64Array(nz * 2), sumY: new Float64Array(nz * 2) };
  data.fill(HU_AIR);
  const bx = a.body.ax;
  const by = a.body.ay;
  const ibx = bx - a.body.fat;
  const iby = by - a.body.fat;
  const cax = a.cavity.ax;
  const cay = a.cavity.ay;
  const rax = cax + a.ribs.thickness;
  const ray = cay + a.ribs.thickness;
  const lh = a.zApex - a.zBase;
  const m = a.mediastinumHalfWidth;
  const sternumHalf = 0.09 * bx;
  const [hcx, hcy, hcz] = a.heart.center;
  const [hrx, hry, hrz] = a.heart.radii;
  const aor2 = (a.aorta.r + 2) ** 2;
  const spineEx2 = (a.spine.r + 3) ** 2;
  const scy = a.spine.cy;
  const sr = a.spine.r;
  const sr2 = sr * sr;
  const sri2 = (sr - 2.5) ** 2;
  const canalCy = scy + sr + a.spine.canalR + 1;
  const canal2 = a.spine.canalR ** 2;
  const lamina2 = (a.spine.canalR + 4) ** 2;
  const tr = a.trachea;
  const first = (xmm: number) => Math.max(0, Math.ceil((xmm - ox) / sx - 1e-9));
  const last = (xmm: number) => Math.min(nx - 1, Math.floor((xmm - ox) / sx + 1e-9));
  const lungs = [a.right, a.left];

  for (let k = 0; k < nz; k++) {
    const z = oz + k * sz;
    const t = (a.zApex - z) / lh;
    const lungZ = t > 0 && z > a.zBase;
    const taper = t < 0.3 ? Math.sqrt(Math.max(t, 0) / 0.3) : 1;
    const hz = (z - hcz) / hrz;
    const heartOn = hz * hz < 1;
    const hsc = heartOn ? 1.06 * Math.sqrt(1 - hz * hz) : 0;
    const ribZ = z > a.ribs.zMin && z < a.ribs.zMax;
    const sternumZ = z < a.zApex - 0.08 * lh && z > a.zBase + 0.2 * lh;
    const tracheaOn = z > tr.zCarina;
    for (let j = 0; j < ny; j++) {
      const y = oy + j * sy;
      const dyb = y / by;
      if (dyb * dyb >= 1) continue;
      const row = k * nxy + j * nx;
      const hb = bx * Math.sqrt(1 - dyb * dyb);
      const b0 = first(-hb);
      const b1 = last(hb);
      if (b1 >= b0) data.fill(HU_FAT, row + b0, row + b1 + 1);
      const dyi = y / iby;
      if (dyi * dyi >= 1) continue;
      const hi = ibx * Math.sqrt(1 - dyi * dyi);
      const i0 = first(-hi);
      const i1 = last(hi);
      if (i1 >= i0) data.fill(HU_SOFT, row + i0, row + i1 + 1);

      // Ribs and sternum: a band just outside the pleural cavity.
      const dyc = y / cay;
      const inCavityRow = dyc * dyc < 1;
      const hc = inCavityRow ? cax * Math.sqrt(1 - dyc * dyc) : -1;
      const dyr = y / ray;
      if (dyr * dyr < 1 && (ribZ || sternumZ)) {
        const hr = rax * Math.sqrt(1 - dyr * dyr);
        let phase = (z + a.ribs.slope * (cay - y)) / a.ribs.pitch;
        phase -= Math.floor(phase);
        const ribOn = ribZ && phase < a.ribs.fraction;
        const r0 = first(-hr);
        const r1 = last(hr);
        for (let i = r0; i <= r1; i++) {
          const x = ox + i * sx;
          if (x > -hc && x < hc) continue;
          if (y < 0 && x > -sternumHalf && x < sternumHalf) {
            if (sternumZ) data[row + i] = 450;
          } else if (ribOn) {
            data[row + i] = HU_BONE;
          }
        }
      }

      // Lungs.
      if (lungZ && inCavityRow) {
        for (const L of lungs) {
          const dyl = (y - L.cy) / (L.ay * taper);
          if (dyl * dyl >= 1) continue;
          const hl = L.ax * taper * Math.sqrt(1 - dyl * dyl);
          let xa = Math.max(L.cx - hl, -hc);
          let xb = Math.min(L.cx + hl, hc);
          if (L.side < 0) xb = Math.min(xb, -m);
          else xa = Math.max(xa, m);
          if (xa >= xb) continue;
          const l0 = first(xa);
          const l1 = last(xb);
          const sIdx = k * 2 + (L.side > 0 ? 1 : 0);
          const ry = (y - L.cy) / L.domeAy;
          const ry2 = ry * ry;
          const huRow = -855 + 35 * ((y - L.cy) / L.ay) + 10 * t;
          const dyh = heartOn ? (y - hcy) / (hry * hsc) : 2;
          const dyh2 = dyh * dyh;
          const dya = y - a.aorta.cy;
          const dys = y - scy;
          let cnt = 0;
          let sumx = 0;
          for (let i = l0; i <= l1; i++) {
            const x = ox + i * sx;
            if (dyh2 < 1) {
              const dxh = (x - hcx) / (hrx * hsc);
              if (dxh * dxh + dyh2 < 1) continue;
            }
            const dxa = x - a.aorta.cx;
            if (dxa * dxa + dya * dya < aor2) continue;
            if (x * x + dys * dys < spineEx2) continue;
            const rx = (x - L.cx) / L.domeAx;
            const rho2 = rx * rx + ry2;
            if (rho2 < 1 && z <= a.zBase + L.dome * (1 - rho2)) continue;
            data[row + i] = Math.round(huRow);
            lung[row + i] = 1;
            cnt++;
            sumx += x;
          }
          slices.count[sIdx] = (slices.count[sIdx] as number) + cnt;
          slices.sumX[sIdx] = (slices.sumX[sIdx] as number) + sumx;
          slices.sumY[sIdx] = (slices.sumY[sIdx] as number) + cnt * y;
        }
      }

      // Spine: vertebral body (cortex + cancellous), canal, laminae, spinous process.
      const dys = y - scy;
      if (dys * dys < sr2) {
        const h = Math.sqrt(sr2 - dys * dys);
        for (let i = first(-h); i <= last(h); i++) {
          const x = ox + i * sx;
          data[row + i] = x * x + dys * dys < sri2 ? 300 : HU_BONE;
        }
      }
      const dyc2 = (y - canalCy) ** 2;
      if (dyc2 < lamina2) {
        const h = Math.sqrt(lamina2 - dyc2);
        for (let i = first(-h); i <= last(h); i++) {
          const x = ox + i * sx;
          data[row + i] = x * x + dyc2 < canal2 ? 20 : HU_BONE;
        }
      }
      if (y > canalCy + a.spine.canalR && y < canalCy + a.spine.canalR + 0.12 * bx && y < iby - 3) {
        for (let i = first(-3); i <= last(3); i++) data[row + i] = HU_BONE;
      }

      // Trachea: lumen inside a soft-tissue wall (the wall is mediastinum, already soft tissue).
      if (tracheaOn) {
        const dyt = y - tr.cy;
        if (dyt * dyt < tr.r * tr.r) {
          const h = Math.sqrt(tr.r * tr.r - dyt * dyt);
          for (let i = first(-h); i <= last(h); i++) {
            data[row + i] = HU_AIR;
            lung[row + i] = 0;
          }
        }
      }
    }
  }
  return slices;
}

type TubeMode = 'vessel' | 'airway-wall' | 'airway-lumen' | 'bronchogram' | 'strand';

/**
 * Paints a tube (capsule) from a to b with radius r (mm). Edges are partial-volume blended over c.pv mm.
 *  vessel:       lung voxels on a's side, HU raised towards hu (never lowered)
 *  airway-wall:  any voxel within r set to hu and taken out of the lung mask
 *  airway-lumen: same as airway-wall (call after the wall)
 *  bronchogram:  lesion voxels on a's side, HU lowered towards hu (air in a consolidation)
 *  strand:       like vessel, and voxels at least half inside are marked lesion (tally counts them)
 */
function paintTube(c: Canvas, a: Vec3, b: Vec3, r: number, hu: number, mode: TubeMode, tally?: Tally): void {
  const len = Math.hypot(b[0] - a[0], b[1] - a[1], b[2] - a[2]);
  const pieceLen = Math.max(4 * r, 2 * c.pv, 3);
  const pieces = Math.max(1, Math.ceil(len / pieceLen));
  for (let p = 0; p < pieces; p++) {
    const t0 = p / pieces;
    const t1 = (p + 1) / pieces;
    const pa: Vec3 = [a[0] + (b[0] - a[0]) * t0, a[1] + (b[1] - a[1]) * t0, a[2] + (b[2] - a[2]) * t0];
    const pb: Vec3 = [a[0] + (b[0] - a[0]) * t1, a[1] + (b[1] - a[1]) * t1, a[2] + (b[2] - a[2]) * t1];
    paintTubePiece(c, pa, pb, r, hu, mode, a[0] < 0 ? -1 : 1, tally);
  }
}

function paintTubePiece(c: Canvas, a: Vec3, b: Vec3, r: number, hu: number, mode: TubeMode, side: number, tally?: Tally): void {
  const { data, lung, lesion, nx, ny, nz, sx, sy, sz, ox, oy, oz, pv } = c;
  const reach = r + pv;
  const i0 = clampInt(Math.floor((Math.min(a[0], b[0]) - reach - ox) / sx), 0, nx - 1);
  const i1 = clampInt(Math.ceil((Math.max(a[0], b[0]) + reach - ox) / sx), 0, nx - 1);
  const j0 = clampInt(Math.floor((Math.min(a[1], b[1]) - reach - oy) / sy), 0, ny - 1);
  const j1 = clampInt(Math.ceil((Math.max(a[1], b[1]) + reach - oy) / sy), 0, ny - 1);
  const k0 = clampInt(Math.floor((Math.min(a[2], b[2]) - reach - oz) / sz), 0, nz - 1);
  const k1 = clampInt(Math.ceil((Math.max(a[2], b[2]) + reach - oz) / sz), 0, nz - 1);
  const dx = b[0] - a[0];
  const dy = b[1] - a[1];
  const dz = b[2] - a[2];
  const dd = dx * dx + dy * dy + dz * dz || 1;
  const reach2 = reach * reach;
  const nxy = nx * ny;
  const hard = mode === 'airway-wall' || mode === 'airway-lumen';
  for (let k = k0; k <= k1; k++) {
    const pz = oz + k * sz - a[2];
    for (let j = j0; j <= j1; j++) {
      const py = oy + j * sy - a[1];
      const row = k * nxy + j * nx;
      for (let i = i0; i <= i1; i++) {
        const px = ox + i * sx - a[0];
        let t = (px * dx + py * dy + pz * dz) / dd;
        t = Math.min(Math.max(t, 0), 1);
        const ex = px - t * dx;
        const ey = py - t * dy;
        const ez = pz - t * dz;
        const d2 = ex * ex + ey * ey + ez * ez;
        if (d2 >= reach2) continue;
        const idx = row + i;
        if (hard) {
          if (d2 < r * r) {
            data[idx] = hu;
            lung[idx] = 0;
          }
          continue;
        }
        const x = px + a[0];
        if (side < 0 ? x >= 0 : x <= 0) continue;
        if (mode === 'bronchogram') {
          if (lesion[idx] !== 1) continue;
        } else if (lung[idx] !== 1) continue;
        let w = (r - Math.sqrt(d2)) / pv + 0.5;
        if (w <= 0) continue;
        if (w > 1) w = 1;
        const bg = data[idx] as number;
        const v = Math.round(bg + w * (hu - bg));
        if (mode === 'bronchogram' ? v < bg : v > bg) data[idx] = v;
        if (mode === 'strand' && w >= 0.5) {
          lesion[idx] = 1;
          if (tally) {
            tally.n++;
            tally.x += x;
            tally.y += py + a[1];
            tally.z += pz + a[2];
          }
        }
      }
    }
  }
}

function normalize(v: Vec3): Vec3 {
  const n = Math.hypot(v[0], v[1], v[2]) || 1;
  return [v[0] / n, v[1] / n, v[2] / n];
}

/** Rotates unit vector d by angle around a random axis perpendicular to it. */
function deflect(rng: Rng, d: Vec3, angle: number): Vec3 {
  const helper: Vec3 = Math.abs(d[0]) < 0.9 ? [1, 0, 0] : [0, 1, 0];
  const p1 = normalize([d[1] * helper[2] - d[2] * helper[1], d[2] * helper[0] - d[0] * helper[2], d[0] * helper[1] - d[1] * helper[0]]);
  const p2: Vec3 = [d[1] * p1[2] - d[2] * p1[1], d[2] * p1[0] - d[0] * p1[2], d[0] * p1[1] - d[1] * p1[0]];
  const phi = rng.uniform(0, 2 * Math.PI);
  const ax: Vec3 = [
    p1[0] * Math.cos(phi) + p2[0] * Math.sin(phi),
    p1[1] * Math.cos(phi) + p2[1] * Math.sin(phi),
    p1[2] * Math.cos(phi) + p2[2] * Math.sin(phi),
  ];
  const cs = Math.cos(angle);
  const sn = Math.sin(angle);
  return normalize([d[0] * cs + ax[0] * sn, d[1] * cs + ax[1] * sn, d[2] * cs + ax[2] * sn]);
}

interface Segment {
  a: Vec3;
  b: Vec3;
  r: number;
}

function inLung(c: Canvas, p: Vec3): boolean {
  const i = Math.round((p[0] - c.ox) / c.sx);
  const j = Math.round((p[1] - c.oy) / c.sy);
  const k = Math.round((p[2] - c.oz) / c.sz);
  if (i < 0 || j < 0 || k < 0 || i >= c.nx || j >= c.ny || k >= c.nz) return false;
  return c.lung[i + j * c.nx + k * c.nx * c.ny] === 1;
}

/** A branching tree of tubes from root along dir; a branch stops where it leaves the lung. */
function growTree(c: Canvas, rng: Rng, root: Vec3, dir: Vec3, len: number, r: number, depth: number, out: Segment[]): void {
  const end: Vec3 = [root[0] + dir[0] * len, root[1] + dir[1] * len, root[2] + dir[2] * len];
  out.push({ a: root, b: end, r });
  if (depth <= 0 || r < 0.6 || !inLung(c, end)) return;
  const spread = rng.uniform(0.35, 0.65);
  for (const sign of [1, -1]) {
    const child = deflect(rng, dir, spread * (sign > 0 ? 1 : 0.8));
    growTree(c, rng, end, child, len * rng.uniform(0.7, 0.85), r * rng.uniform(0.68, 0.78), depth - 1, out);
  }
}

function paintAirwaysAndVessels(c: Canvas, a: ChestAnatomy, rng: Rng): void {
  const s = a.scale;
  const tr = a.trachea;
  const carina: Vec3 = [0, tr.cy, tr.zCarina];
  // Main bronchi: wall then lumen; out of the lung mask.
  for (const L of [a.right, a.left]) {
    const r = (L.side < 0 ? 0.045 : 0.04) * a.body.ax;
    paintTube(c, carina, L.hilum, r + tr.wall, HU_SOFT, 'airway-wall');
  }
  for (const L of [a.right, a.left]) {
    const r = (L.side < 0 ? 0.045 : 0.04) * a.body.ax;
    paintTube(c, carina, L.hilum, r, HU_AIR, 'airway-lumen');
  }
  // Pulmonary vessel trees from just anterior of each hilum.
  const lh = a.zApex - a.zBase;
  const zLen = Math.min(1, lh / 260);
  for (const L of [a.right, a.left]) {
    const sd = L.side;
    const root: Vec3 = [L.hilum[0] + sd * 4 * s, L.hilum[1] - 8 * s, L.hilum[2]];
    const dirs: Vec3[] = [
      [0.35 * sd, -0.1, 1],
      [1 * sd, -0.7, 0.15],
      [1 * sd, 0.2, 0.05],
      [0.8 * sd, 0.9, -0.3],
      [0.35 * sd, 0.4, -1],
      [0.5 * sd, -0.5, -0.8],
    ];
    const segs: Segment[] = [];
    for (const d of dirs) {
      const dir = deflect(rng, normalize([d[0], d[1], d[2] * zLen]), rng.uniform(0, 0.2));
      growTree(c, rng, root, dir, 32 * s * rng.uniform(0.85, 1.15), 4.5 * s, 6, segs);
    }
    for (const g of segs) paintTube(c, g.a, g.b, g.r, HU_SOFT, 'vessel');
  }
}

/** A soft-edged, possibly lobulated ellipsoid (lesion) in lung voxels on one side. */
interface Blob {
  center: Vec3;
  /** Orthonormal axes and semi-axes (mm). */
  axes: [Vec3, Vec3, Vec3];
  radii: Vec3;
  /** Half-width of the soft edge as a fraction of the (normalised) radius. */
  edge: number;
  hu: number;
  /** Lobulation: d += amp·Σ sin(k·p + φ). */
  wobble?: { k: Vec3[]; phase: number[]; amp: number };
  /** Crazy paving: +amp HU on two sets of in-plane septal lines with this period (mm). */
  grid?: { u: [number, number]; v: [number, number]; period: number; amp: number };
}

function paintBlob(c: Canvas, blob: Blob, side: number, tally: Tally): void {
  const { data, lung, lesion, nx, ny, nz, sx, sy, sz, ox, oy, oz } = c;
  const [cx, cy, cz] = blob.center;
  const [u, v, w] = blob.axes;
  const [r1, r2, r3] = blob.radii;
  const amp = blob.wobble?.amp ?? 0;
  const reach = Math.max(r1, r2, r3) * (1 + blob.edge + amp * 3);
  const i0 = clampInt(Math.floor((cx - reach - ox) / sx), 0, nx - 1);
  const i1 = clampInt(Math.ceil((cx + reach - ox) / sx), 0, nx - 1);
  const j0 = clampInt(Math.floor((cy - reach - oy) / sy), 0, ny - 1);
  const j1 = clampInt(Math.ceil((cy + reach - oy) / sy), 0, ny - 1);
  const k0 = clampInt(Math.floor((cz - reach - oz) / sz), 0, nz - 1);
  const k1 = clampInt(Math.ceil((cz + reach - oz) / sz), 0, nz - 1);
  const e = blob.edge;
  const wob = blob.wobble;
  const grid = blob.grid;
  const tw = (2 * Math.PI) / (grid?.period ?? 1);
  const nxy = nx * ny;
  const before = tally.n;
  for (let k = k0; k <= k1; k++) {
    const pz = oz + k * sz - cz;
    for (let j = j0; j <= j1; j++) {
      const py = oy + j * sy - cy;
      const row = k * nxy + j * nx;
      for (let i = i0; i <= i1; i++) {
        const idx = row + i;
        if (lung[idx] !== 1) continue;
        const px = ox + i * sx - cx;
        if (side < 0 ? px + cx >= 0 : px + cx <= 0) continue;
        const a1 = (px * u[0] + py * u[1] + pz * u[2]) / r1;
        const a2 = (px * v[0] + py * v[1] + pz * v[2]) / r2;
        const a3 = (px * w[0] + py * w[1] + pz * w[2]) / r3;
        let d = Math.sqrt(a1 * a1 + a2 * a2 + a3 * a3);
        if (wob) {
          for (let q = 0; q < wob.k.length; q++) {
            const kv = wob.k[q] as Vec3;
            d += amp * Math.sin(kv[0] * px + kv[1] * py + kv[2] * pz + (wob.phase[q] as number));
          }
        }
        if (d >= 1 + e) continue;
        let f = (1 + e - d) / (2 * e);
        if (f > 1) f = 1;
        f = f * f * (3 - 2 * f);
        let target = blob.hu;
        if (grid) {
          const g1 = 0.5 + 0.5 * Math.cos(tw * (px * grid.u[0] + py * grid.u[1]));
          const g2 = 0.5 + 0.5 * Math.cos(tw * (px * grid.v[0] + py * grid.v[1]));
          const g = Math.max(g1 * g1 * g1 * g1, g2 * g2 * g2 * g2);
          target += grid.amp * g;
        }
        const bg = data[idx] as number;
        const val = Math.round(bg + f * (target - bg));
        if (val > bg) data[idx] = val;
        if (f >= 0.5) {
          lesion[idx] = 1;
          tally.n++;
          tally.x += px + cx;
          tally.y += py + cy;
          tally.z += pz + cz;
        }
      }
    }
  }
  // A lesion smaller than a voxel still marks the voxel holding its centre.
  if (tally.n === before) {
    const i = Math.round((cx - ox) / sx);
    const j = Math.round((cy - oy) / sy);
    const k = Math.round((cz - oz) / sz);
    if (i >= 0 && j >= 0 && k >= 0 && i < nx && j < ny && k < nz) {
      const idx = i + j * nx + k * nxy;
      if (lung[idx] === 1) {
        lesion[idx] = 1;
        const bg = data[idx] as number;
        data[idx] = Math.max(bg, Math.round((bg + blob.hu) / 2));
        tally.n++;
        tally.x += ox + i * sx;
        tally.y += oy + j * sy;
        tally.z += oz + k * sz;
      }
    }
  }
}

function randomWobble(rng: Rng, radius: number, amp: number): Blob['wobble'] {
  const k: Vec3[] = [];
  const phase: number[] = [];
  for (let q = 0; q < 3; q++) {
    const dir = normalize([rng.normal(), rng.normal(), rng.normal()]);
    const freq = rng.uniform(1.5, 3.5) / radius;
    k.push([dir[0] * freq, dir[1] * freq, dir[2] * freq]);
    phase.push(rng.uniform(0, 2 * Math.PI));
  }
  return { k, phase, amp };
}

const Z_AXIS: Vec3 = [0, 0, 1];

function sphereAxes(): [Vec3, Vec3, Vec3] {
  return [[1, 0, 0], [0, 1, 0], Z_AXIS];
}

class LesionPainter {
  readonly lesions: PhantomLesion[] = [];
  private readonly voxelMl: number;

  constructor(
    private readonly c: Canvas,
    private readonly a: ChestAnatomy,
    private readonly slices: LungSlices,
    private readonly rng: Rng,
  ) {
    this.voxelMl = (c.sx * c.sy * c.sz) / 1000;
  }

  record(type: LesionType, side: number, t: Tally): boolean {
    if (t.n === 0) return false;
    const voxels = t.n;
    const volMm3 = voxels * this.voxelMl * 1000;
    this.lesions.push({
      type,
      centerMm: [round3(t.x / voxels), round3(t.y / voxels), round3(t.z / voxels)],
      radiusMm: round3(Math.cbrt((3 * volMm3) / (4 * Math.PI))),
      lung: side < 0 ? 'right' : 'left',
      voxels,
      volumeMl: round3(voxels * this.voxelMl),
    });
    return true;
  }

  /** A slice (weighted by its lung area on that side) whose apex–base fraction lies in [t0, t1]. */
  pickSlice(side: number, t0: number, t1: number, lowerBias = 0): number {
    const { c, a, slices } = this;
    const lh = a.zApex - a.zBase;
    const s = side > 0 ? 1 : 0;
    const weights: number[] = [];
    let total = 0;
    for (let k = 0; k < c.nz; k++) {
      const t = (a.zApex - (c.oz + k * c.sz)) / lh;
      const n = slices.count[k * 2 + s] as number;
      const w = t >= t0 && t <= t1 && n > 0 ? n * (1 + lowerBias * t) : 0;
      weights.push(w);
      total += w;
    }
    if (total === 0) {
      // Tiny volumes: any slice with lung on that side.
      let best = -1;
      for (let k = 0; k < c.nz; k++)
        if ((slices.count[k * 2 + s] as number) > 0 && (best < 0 || (slices.count[k * 2 + s] as number) > (slices.count[best * 2 + s] as number))) best = k;
      return best;
    }
    let r = this.rng.next() * total;
    for (let k = 0; k < c.nz; k++) {
      r -= weights[k] as number;
      if (r < 0) return k;
    }
    return c.nz - 1;
  }

  /** Marches from the lung's centroid in slice k along (nx, ny) to the pleura; null when the ray finds no lung. */
  pleuraAlong(k: number, side: number, dirX: number, dirY: number): Vec3 | null {
    const { c, slices } = this;
    const s = k * 2 + (side > 0 ? 1 : 0);
    const n = slices.count[s] as number;
    if (n === 0) return null;
    const z = c.oz + k * c.sz;
    let x = (slices.sumX[s] as number) / n;
    let y = (slices.sumY[s] as number) / n;
    const step = 0.5 * Math.min(c.sx, c.sy);
    let entered = false;
    let lastX = x;
    let lastY = y;
    const maxSteps = Math.ceil((2 * this.a.body.ax) / step);
    for (let q = 0; q < maxSteps; q++) {
      const inside = inLung(c, [x, y, z]) && (side < 0 ? x < 0 : x > 0);
      if (inside) {
        entered = true;
        lastX = x;
        lastY = y;
      } else if (entered) {
        return [lastX, lastY, z];
      }
      x += dirX * step;
      y += dirY * step;
    }
    return null;
  }

  /** COVID-19: bilateral peripheral GGO, some crazy paving, some consolidation (with a GGO halo). */
  covid(): void {
    const { rng, a } = this;
    const s = a.scale;
    const count = rng.int(3, 8);
    const sides: number[] = [];
    for (let q = 0; q < count; q++) sides.push(q === 0 ? -1 : q === 1 ? 1 : rng.chance(0.5) ? -1 : 1);
    for (let q = 0; q < count; q++) {
      const side = sides[q] as number;
      const type: LesionType = q < 2 ? 'ggo' : rng.pick(['ggo', 'ggo', 'crazy-paving', 'consolidation'] as const);
      for (let attempt = 0; attempt < 30; attempt++) {
        if (this.subpleural(type, side, s)) break;
      }
    }
  }

  private subpleural(type: LesionType, side: number, s: number): boolean {
    const { rng, c, a } = this;
    const k = this.pickSlice(side, 0.15, 0.97, 1.5);
    if (k < 0) return false;
    // 0 = lateral, positive = towards posterior; COVID-19 favours posterior and lateral.
    const theta = rng.uniform(-1.2, 2.1);
    const dirX = side * Math.cos(theta);
    const dirY = Math.sin(theta);
    const pleura = this.pleuraAlong(k, side, dirX, dirY);
    if (!pleura) return false;
    const lh = a.zApex - a.zBase;
    const big = rng.uniform(10, 26) * s;
    const rn = big * rng.uniform(0.45, 0.6);
    const rz = Math.min(big * rng.uniform(0.7, 1.0), 0.3 * lh);
    const depth = rn * rng.uniform(0.3, 0.6);
    const center: Vec3 = [pleura[0] - dirX * depth, pleura[1] - dirY * depth, pleura[2]];
    if (!inLung(c, center)) return false;
    const axes: [Vec3, Vec3, Vec3] = [[dirX, dirY, 0], [-dirY, dirX, 0], Z_AXIS];
    const t = newTally();
    const ggoHu = rng.uniform(-600, -450);
    if (type === 'crazy-paving') {
      const ang = rng.uniform(0, Math.PI);
      const ang2 = ang + rng.uniform(1.2, 1.9);
      paintBlob(
        c,
        {
          center,
          axes,
          radii: [rn, big, rz],
          edge: 0.3,
          hu: ggoHu,
          wobble: randomWobble(rng, big, 0.06),
          grid: { u: [Math.cos(ang), Math.sin(ang)], v: [Math.cos(ang2), Math.sin(ang2)], period: Math.max(5 * s, 2.2 * c.pv), amp: 250 },
        },
        side,
        t,
      );
    } else if (type === 'consolidation') {
      paintBlob(c, { center, axes, radii: [rn, big, rz], edge: 0.35, hu: ggoHu, wobble: randomWobble(rng, big, 0.06) }, side, t);
      paintBlob(
        c,
        { center, axes, radii: [rn * 0.6, big * 0.6, rz * 0.6], edge: 0.2, hu: rng.uniform(-60, 20), wobble: randomWobble(rng, big, 0.05) },
        side,
        newTally(),
      );
    } else {
      paintBlob(c, { center, axes, radii: [rn, big, rz], edge: 0.35, hu: ggoHu, wobble: randomWobble(rng, big, 0.07) }, side, t);
    }
    return this.record(type, side, t);
  }

  /** Lobar pneumonia: one lower lobe (or the right upper lobe) homogeneously consolidated, with air bronchograms. */
  lobar(): void {
    const { rng, c, a } = this;
    const side = rng.chance(0.5) ? -1 : 1;
    const lobe = side < 0 && rng.chance(0.3) ? 'upper' : 'lower';
    const L = side < 0 ? a.right : a.left;
    const lh = a.zApex - a.zBase;
    // Oblique fissure: z = zf + slope·(y − L.cy), higher posteriorly; lower lobe below it.
    const zf = a.zBase + rng.uniform(0.42, 0.5) * lh;
    const slope = rng.uniform(0.7, 1.0) * (lh / (2 * a.cavity.ay));
    const zh = L.hilum[2] + 0.03 * lh;
    const hu = Math.round(rng.uniform(-10, 25));
    const { data, lung, lesion, nx, ny, nz, sx, sy, sz, ox, oy, oz } = c;
    const nxy = nx * ny;
    const t = newTally();
    for (let k = 0; k < nz; k++) {
      const z = oz + k * sz;
      for (let j = 0; j < ny; j++) {
        const y = oy + j * sy;
        const zF = zf + slope * (y - L.cy);
        const inLobe = lobe === 'lower' ? z < zF : z >= zF && z > zh;
        if (!inLobe) continue;
        const row = k * nxy + j * nx;
        for (let i = 0; i < nx; i++) {
          const idx = row + i;
          if (lung[idx] !== 1) continue;
          const x = ox + i * sx;
          if (side < 0 ? x >= 0 : x <= 0) continue;
          data[idx] = hu;
          lesion[idx] = 1;
          t.n++;
          t.x += x;
          t.y += y;
          t.z += z;
        }
      }
    }
    if (t.n === 0) return;
    // Air bronchograms: a bronchial tree from the hilum towards the lobe, air only where consolidated.
    const centroid: Vec3 = [t.x / t.n, t.y / t.n, t.z / t.n];
    const toLobe: Vec3 = [centroid[0] - L.hilum[0], centroid[1] - L.hilum[1], centroid[2] - L.hilum[2]];
    const dist = Math.hypot(toLobe[0], toLobe[1], toLobe[2]);
    const dir = normalize(toLobe);
    const segs: Segment[] = [];
    // Grow the trees through the lung mask (the lesion is inside it), paint only inside the consolidation.
    for (let q = 0; q < 3; q++) {
      growTree(c, rng, L.hilum, deflect(rng, dir, q === 0 ? 0 : 0.4), Math.max(0.5 * dist, 20 * a.scale), 3.5 * a.scale, 6, segs);
    }
    for (const g of segs) paintTube(c, g.a, g.b, Math.max(g.r, 0.45 * c.pv), -920, 'bronchogram');
    this.record('lobar-consolidation', side, t);
  }

  /** A random point inside the lung on a side with lung at ±margin along each axis. */
  private interior(side: number, margin: number, t0: number, t1: number): Vec3 | null {
    const { rng, c } = this;
    for (let attempt = 0; attempt < 400; attempt++) {
      const k = this.pickSlice(side, t0, t1);
      if (k < 0) return null;
      const s = k * 2 + (side > 0 ? 1 : 0);
      const n = this.slices.count[s] as number;
      const cx = (this.slices.sumX[s] as number) / n;
      const cy = (this.slices.sumY[s] as number) / n;
      const p: Vec3 = [cx + rng.uniform(-1, 1) * 0.6 * this.a.cavity.ax, cy + rng.uniform(-1, 1) * this.a.cavity.ay, c.oz + k * c.sz];
      if (!inLung(c, p) || (side < 0 ? p[0] >= 0 : p[0] <= 0)) continue;
      const m = margin;
      const mz = Math.min(margin, c.sz);
      const probes: Vec3[] = [
        [p[0] + m, p[1], p[2]],
        [p[0] - m, p[1], p[2]],
        [p[0], p[1] + m, p[2]],
        [p[0], p[1] - m, p[2]],
        [p[0], p[1], p[2] + mz],
        [p[0], p[1], p[2] - mz],
      ];
      if (probes.every((q) => inLung(c, q))) return p;
    }
    return null;
  }

  /** Solid nodules (5–20 mm), sometimes one lobulated mass (30–50 mm). */
  nodules(): void {
    const { rng, c, a } = this;
    const count = rng.int(1, 3);
    const massFirst = rng.chance(0.35);
    for (let q = 0; q < count; q++) {
      const side = rng.chance(0.5) ? -1 : 1;
      const mass = q === 0 && massFirst;
      const r = (mass ? rng.uniform(15, 25) : rng.uniform(2.5, 10)) * a.scale;
      const p = this.interior(side, r * 0.8, 0.1, 0.9);
      if (!p) continue;
      const t = newTally();
      const edge = Math.min(0.4, (0.5 * c.pv) / r);
      const hu = mass ? rng.uniform(30, 45) : rng.uniform(20, 40);
      paintBlob(c, { center: p, axes: sphereAxes(), radii: [r, r, r], edge, hu, wobble: mass ? randomWobble(rng, r, 0.08) : undefined }, side, t);
      this.record(mass ? 'mass' : 'nodule', side, t);
    }
  }

  /** Old lesions: calcified granulomas and/or fibrotic strands, upper zones favoured. */
  oldLesions(): void {
    const { rng, c, a } = this;
    const calcified = rng.int(0, 3);
    const strands = calcified === 0 ? rng.int(1, 2) : rng.int(0, 2);
    for (let q = 0; q < calcified; q++) {
      const side = rng.chance(0.5) ? -1 : 1;
      const r = Math.max(rng.uniform(2, 4) * a.scale, 0.55 * c.pv);
      const p = this.interior(side, r, 0.05, 0.6);
      if (!p) continue;
      const t = newTally();
      paintBlob(c, { center: p, axes: sphereAxes(), radii: [r, r, r], edge: Math.min(0.4, (0.5 * c.pv) / r), hu: rng.uniform(350, 500) }, side, t);
      this.record('calcified-nodule', side, t);
    }
    for (let q = 0; q < strands; q++) {
      const side = rng.chance(0.5) ? -1 : 1;
      for (let attempt = 0; attempt < 30; attempt++) {
        const k = this.pickSlice(side, 0.08, 0.5);
        if (k < 0) break;
        const theta = rng.uniform(-1.4, 1.4);
        const dirX = side * Math.cos(theta);
        const dirY = Math.sin(theta);
        const pleura = this.pleuraAlong(k, side, dirX, dirY);
        if (!pleura) continue;
        const len = rng.uniform(20, 40) * a.scale;
        const start: Vec3 = [pleura[0] - dirX * len, pleura[1] - dirY * len, pleura[2] + rng.uniform(-0.3, 0.3) * len];
        if (!inLung(c, start)) continue;
        const t = newTally();
        paintTube(c, start, pleura, Math.max(rng.uniform(1.0, 1.6) * a.scale, 0.4 * c.pv), rng.uniform(-40, 0), 'strand', t);
        if (this.record('fibrotic-strand', side, t)) break;
      }
    }
  }
}

function round3(v: number): number {
  return Math.round(v * 1000) / 1000;
}

/**
 * Adds Gaussian noise of σ HU to every voxel, clamped to [−1024, 3071]: a table of 65,536 Gaussian samples
 * (Box–Muller), indexed by the two 16-bit halves of an xorshift32 stream, so one cheap step serves two voxels.
 */
function addNoise(data: Int16Array, sigma: number, rng: Rng): void {
  if (sigma <= 0) return;
  const table = new Int16Array(65536);
  for (let q = 0; q < 65536; q++) table[q] = Math.round(Math.max(-5, Math.min(5, rng.normal())) * sigma);
  let x = rng.nextU32() | 1;
  const n = data.length;
  for (let i = 0; i < n; i += 2) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    const v0 = (data[i] as number) + (table[x & 0xffff] as number);
    data[i] = Math.min(Math.max(v0, -1024), 3071);
    if (i + 1 < n) {
      const v1 = (data[i + 1] as number) + (table[x >>> 16] as number);
      data[i + 1] = Math.min(Math.max(v1, -1024), 3071);
    }
  }
}

/** Generates a synthetic chest CT of the given kind (pure; deterministic in its options). */
export function generateChestCt(opts: PhantomOptions): Phantom {
  const size = opts.size ?? DEFAULT_SIZE;
  const spacing = opts.spacing ?? DEFAULT_SPACING;
  if (!size.every((n) => Number.isInteger(n) && n > 0)) throw new Error(`size must be three positive integers, got ${size.join(',')}`);
  if (!spacing.every((s) => Number.isFinite(s) && s > 0)) throw new Error(`spacing must be three positive numbers, got ${spacing.join(',')}`);
  if (!PHANTOM_KINDS.includes(opts.kind)) throw new Error(`unknown kind ${String(opts.kind)}`);
  const geometry = phantomGeometry(size, spacing);
  const n = size[0] * size[1] * size[2];
  const anatomy = chestAnatomy(geometry, opts.seed);
  const c: Canvas = {
    data: new Int16Array(n),
    lung: new Uint8Array(n),
    lesion: new Uint8Array(n),
    nx: size[0],
    ny: size[1],
    nz: size[2],
    sx: spacing[0],
    sy: spacing[1],
    sz: spacing[2],
    ox: geometry.origin[0],
    oy: geometry.origin[1],
    oz: geometry.origin[2],
    pv: Math.max(spacing[0], spacing[1]),
  };
  const slices = paintBody(c, anatomy);
  paintAirwaysAndVessels(c, anatomy, new Rng(opts.seed, 2));
  const painter = new LesionPainter(c, anatomy, slices, new Rng(opts.seed, 3));
  if (opts.kind === 'covid') painter.covid();
  else if (opts.kind === 'lobar-pneumonia') painter.lobar();
  else if (opts.kind === 'nodule') painter.nodules();
  else if (opts.kind === 'old-lesion') painter.oldLesions();
  addNoise(c.data, opts.noiseSigma ?? 15, new Rng(opts.seed, 4));
  return { volume: { geometry, data: c.data }, lungMask: c.lung, lesionMask: c.lesion, lesions: painter.lesions, anatomy };
}

/**
 * Sets every voxel whose centre lies within radiusMm of centerMm (patient mm) to hu. Works for any geometry
 * (origin, spacing, orthonormal direction). Returns how many voxels it set.
 */
export function addSphere(volume: HuVolume, centerMm: Vec3, radiusMm: number, hu: number): number {
  const g = volume.geometry;
  const [nx, ny, nz] = g.size;
  const [sx, sy, sz] = g.spacing;
  const d = g.direction;
  const c = patientToVoxel(g, centerMm);
  const lo = (v: number, s: number, n: number) => clampInt(Math.floor(v - radiusMm / s), 0, n - 1);
  const hi = (v: number, s: number, n: number) => clampInt(Math.ceil(v + radiusMm / s), 0, n - 1);
  const r2 = radiusMm * radiusMm;
  const [d0, d1, d2, d3, d4, d5, d6, d7, d8] = d;
  let count = 0;
  for (let k = lo(c[2], sz, nz); k <= hi(c[2], sz, nz); k++) {
    for (let j = lo(c[1], sy, ny); j <= hi(c[1], sy, ny); j++) {
      for (let i = lo(c[0], sx, nx); i <= hi(c[0], sx, nx); i++) {
        const ix = (i - c[0]) * sx;
        const jy = (j - c[1]) * sy;
        const kz = (k - c[2]) * sz;
        const px = ix * d0 + jy * d3 + kz * d6;
        const py = ix * d1 + jy * d4 + kz * d7;
        const pz = ix * d2 + jy * d5 + kz * d8;
        if (px * px + py * py + pz * pz <= r2 + 1e-9) {
          volume.data[i + j * nx + k * nx * ny] = hu;
          count++;
        }
      }
    }
  }
  return count;
}

/** Volume (mL) of a mask's voxels in the right (x < 0, LPS) and left (x > 0) halves of patient space. */
export function maskVolumesMl(mask: Uint8Array, geometry: Geometry): { right: number; left: number; total: number } {
  const [nx, ny, nz] = geometry.size;
  const [sx, sy, sz] = geometry.spacing;
  const d = geometry.direction;
  const ox = geometry.origin[0];
  let right = 0;
  let left = 0;
  for (let k = 0; k < nz; k++) {
    for (let j = 0; j < ny; j++) {
      const row = (k * ny + j) * nx;
      const x0 = ox + j * sy * d[3] + k * sz * d[6];
      for (let i = 0; i < nx; i++) {
        if (mask[row + i] === 0) continue;
        if (x0 + i * sx * d[0] < 0) right++;
        else left++;
      }
    }
  }
  const ml = (sx * sy * sz) / 1000;
  return { right: round3(right * ml), left: round3(left * ml), total: round3((right + left) * ml) };
}
