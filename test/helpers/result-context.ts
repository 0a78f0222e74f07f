/**
 * A ResultContext made from a synthetic phantom, without running the models: the phantom's lesion truth is the
 * "analysis" mask. Result-writer tests (SEG, FHIR, ORU) use it together with the CT series files, which they can
 * store in Orthanc so that the SEG's references point at real instances.
 */

import type { Order } from '../../src/domain/order.js';
import type { SliceMeta } from '../../src/imaging/slices.js';
import { type Geometry, voxelToPatient } from '../../src/imaging/volume.js';
import { keySlices, measureLesions } from '../../src/inference/findings.js';
import { keyImagePng } from '../../src/inference/key-images.js';
import { LEFT_LUNG, RIGHT_LUNG } from '../../src/inference/lungs.js';
import type { ResultContext } from '../../src/results/context.js';
import { CT_IMAGE_STORAGE, type CtSeries, writeCtSeries } from '../../src/synthetic/dicom-writer.js';
import { generateChestCt, type PhantomKind } from '../../src/synthetic/phantom.js';

export interface SyntheticResult {
  context: ResultContext;
  series: CtSeries;
}

/** Slice metadata for every z index of a grid (16-bit CT stored with intercept −1024), as the PACS would give it. */
export function slicesOf(g: Geometry, seriesInstanceUid: string, sopInstanceUid: (k: number) => string, frameOfReferenceUid?: string): SliceMeta[] {
  const [nx, ny, nz] = g.size;
  const orientation = [...g.direction.slice(0, 6)] as SliceMeta['orientation'];
  return Array.from({ length: nz }, (_, k) => ({
    sopInstanceUid: sopInstanceUid(k),
    seriesInstanceUid,
    instanceNumber: k + 1,
    position: voxelToPatient(g, 0, 0, k),
    orientation,
    pixelSpacing: [g.spacing[1], g.spacing[0]],
    rows: ny,
    columns: nx,
    bitsAllocated: 16,
    pixelRepresentation: 0,
    samplesPerPixel: 1,
    rescaleSlope: 1,
    rescaleIntercept: -1024,
    sliceThickness: g.spacing[2],
    ...(frameOfReferenceUid ? { frameOfReferenceUid } : {}),
  }));
}

export function sampleOrder(overrides: Partial<Order> = {}): Order {
  return {
    sender: { application: 'EPIC', facility: 'GENHOSP' },
    message: { type: 'ORM^O01', controlId: 'MSG0001', version: '2.5.1', processingId: 'P' },
    orderControl: 'NW',
    placerOrderNumber: 'PLC1001',
    placerAuthority: 'EPIC',
    fillerOrderNumber: 'FIL1001',
    accessionNumber: 'ACC1001',
    procedure: { code: '24627-2', text: 'CT Chest', system: 'LN' },
    priority: 'routine',
    orderingProvider: { id: 'DR123', family: 'House', given: 'Gregory' },
    orderDateTime: '2026-11-27T09:30:00+00:00',
    patient: {
      identifiers: [{ value: 'MRN000123', authority: 'GENHOSP', type: 'MR' }],
      name: { family: 'Synthetic', given: ['Chest'] },
      birthDate: '1970-01-01',
      sex: 'other',
    },
    ...overrides,
  };
}

/**
 * A small phantom (96×96×32 voxels by default) of the given kind, its CT series, and a context whose analysis is
 * the phantom's lesion truth, measured as the pipeline measures (positive for covid, negative otherwise).
 */
export function syntheticResult(opts: { seed?: number; kind?: PhantomKind; size?: [number, number, number]; order?: Partial<Order> } = {}): SyntheticResult {
  const seed = opts.seed ?? 7;
  const kind = opts.kind ?? 'covid';
  const phantom = generateChestCt({ seed, kind, size: opts.size ?? [96, 96, 32], spacing: [3.6, 3.6, 8] });
  const order = sampleOrder(opts.order);
  const series = writeCtSeries(phantom.volume, {
    seed,
    accessionNumber: order.accessionNumber,
    patientId: order.patient.identifiers[0]?.value,
    patientName: 'SYNTHETIC^CHEST',
  });
  const g = phantom.volume.geometry;
  const [nx, ny, nz] = g.size;
  const labels = new Uint8Array(phantom.lungMask.length);
  for (let z = 0; z < nz; z++)
    for (let y = 0; y < ny; y++)
      for (let x = 0; x < nx; x++) {
        const i = x + y * nx + z * nx * ny;
        if (phantom.lungMask[i]) labels[i] = voxelToPatient(g, x, y, z)[0] < 0 ? RIGHT_LUNG : LEFT_LUNG;
      }
  const mask = Uint8Array.from(phantom.lesionMask);
  const measured = measureLesions(g, labels, mask);
  const keys = keySlices(mask, g, 3);
  const slices = slicesOf(g, series.seriesInstanceUid, (k) => series.files[k]?.sopInstanceUid ?? '', series.frameOfReferenceUid);

  const positive = kind === 'covid';
  const context: ResultContext = {
    jobId: `job-${seed}-${kind}`,
    order,
    study: {
      studyInstanceUid: series.studyInstanceUid,
      accessionNumber: order.accessionNumber,
      studyDate: '20200315',
      studyTime: '093000',
      patientName: 'SYNTHETIC^CHEST',
      patientId: order.patient.identifiers[0]?.value,
      patientBirthDate: '19700101',
      patientSex: 'O',
    },
    series: {
      seriesInstanceUid: series.seriesInstanceUid,
      seriesNumber: 1,
      frameOfReferenceUid: series.frameOfReferenceUid,
      sopClassUid: CT_IMAGE_STORAGE,
      slices,
      geometry: g,
    },
    analysis: {
      verdict: positive ? 'positive' : 'negative',
      category: positive ? 'covid-19-like' : measured.lesionVolumeMl >= 0.5 ? 'other-opacity' : 'no-significant-opacity',
      probability: positive ? 0.93 : 0.04,
      threshold: 0.613,
      findings: { ...measured, keySlices: keys },
      lesionMask: mask,
      models: [
        { name: 'lung-threshold', version: '1.0.0' },
        { name: 'lesion-unetpp', version: '0.1.0' },
        { name: 'covid-resnet', version: '0.1.0' },
      ],
      executionProvider: 'cpu',
      completedAt: '2026-11-27T10:00:00.000Z',
    },
    keyImages: keys.map((k) => ({
      sliceIndex: k.index,
      sopInstanceUid: slices[k.index]?.sopInstanceUid as string,
      lesionAreaMm2: k.lesionAreaMm2,
      png: keyImagePng(phantom.volume, k.index, mask),
    })),
    links: { dicomWebBaseUrl: 'http://127.0.0.1:8080/dicom-web', resultPageUrl: 'http://127.0.0.1:8080/studies/job-7' },
  };
  return { context, series };
}
