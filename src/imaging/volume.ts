/** Voxel grid in DICOM patient coordinates (LPS, mm). Index of voxel (x, y, z) is x + y·nx + z·nx·ny. */
export interface Geometry {
  /** Columns, rows, slices. */
  size: [number, number, number];
  /** mm between voxel centres along the x (column), y (row) and z (slice) axes. */
  spacing: [number, number, number];
  /** Patient position (mm) of the centre of voxel (0, 0, 0). */
  origin: [number, number, number];
  /** Unit vectors of the x, y and z axes in patient space: [xx, xy, xz, yx, yy, yz, zx, zy, zz]. */
  direction: [number, number, number, number, number, number, number, number, number];
}

/** A CT volume in Hounsfield units (rounded to whole HU, as CT is stored). */
export interface HuVolume {
  geometry: Geometry;
  data: Int16Array;
}

/** Patient-space position (mm) of voxel index (i, j, k). */
export function voxelToPatient(g: Geometry, i: number, j: number, k: number): [number, number, number] {
  const [sx, sy, sz] = g.spacing;
  const d = g.direction;
  return [
    g.origin[0] + i * sx * d[0] + j * sy * d[3] + k * sz * d[6],
    g.origin[1] + i * sx * d[1] + j * sy * d[4] + k * sz * d[7],
    g.origin[2] + i * sx * d[2] + j * sy * d[5] + k * sz * d[8],
  ];
}

/** Continuous voxel index of a patient-space point (inverse of voxelToPatient; direction is orthonormal). */
export function patientToVoxel(g: Geometry, p: [number, number, number]): [number, number, number] {
  const v = [p[0] - g.origin[0], p[1] - g.origin[1], p[2] - g.origin[2]];
  const d = g.direction;
  const dot = (a: number) => (v[0] as number) * (d[a] as number) + (v[1] as number) * (d[a + 1] as number) + (v[2] as number) * (d[a + 2] as number);
  return [dot(0) / g.spacing[0], dot(3) / g.spacing[1], dot(6) / g.spacing[2]];
}
