"""A DICOM CT series made from one REAL axial slice, extruded along z: a test study for `ctgate analyze`.

  /usr/bin/python3 test/helpers/real-slab.py --doctor NAME|largest --out DIR [--slices 32] [--thickness 2.5]
  /usr/bin/python3 test/helpers/real-slab.py --lidc --out DIR

Sources (../shared/data, licences in its README; read from there, nothing is copied into the project):
- --doctor NAME: a doctor-labelled COVID-19 slice (covid-slices-train) as HU, through models/training/real_data.py
  (doctor_hu: the training code's own calibration, anterior up, at real_data.ASSUMED_PIXEL_MM). Only the doctor TEST
  split (real_data.doctor_split()[1]) is accepted: a training slice would prove nothing. 'largest' picks the test
  slice with the largest lesion fraction. The crops are tight around the lungs (no body wall, no outside air), and
  the service removes air connected to the image border as outside the body; so the crop is embedded, pixels
  unchanged, in a ring of soft tissue (+40 HU, --ring-mm) and then air (-1000 HU) on a square matrix (--matrix, or
  the crop plus the ring when that is larger). The doctors' lesion mask, padded the same way, is written as
  DIR/lesion-mask.npy (uint8, shape (rows, columns)).
- --lidc: lidc-chest/0.dcm, a real contrast chest CT slice (512 x 512, 0.625 mm, HU) without COVID-19 findings; its
  pixels (including the -2048 outside the circular field of view) are kept as they are.

Every slice is CT Image Storage, Explicit VR Little Endian, int16 with RescaleIntercept -1024, axial, SliceThickness
= spacing; the UIDs are deterministic (uuid5 of the source), the patient is made up and says so. Prints a JSON
summary (UIDs in z order, crop box in the matrix, lesion fraction) on stdout.
"""
import argparse
import json
import os
import sys
import uuid

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, '..', '..'))
sys.path.insert(0, os.path.join(ROOT, 'models', 'training'))
import real_data  # noqa: E402  (the training code's calibration: one implementation)

CT_IMAGE_STORAGE = '1.2.840.10008.5.1.4.1.1.2'
INTERCEPT = -1024
SOFT_HU = 40
AIR_HU = -1000
LIDC = os.path.join(real_data.DATA, 'lidc-chest', '0.dcm')


def uid(name):
    return '2.25.%d' % uuid.uuid5(uuid.NAMESPACE_URL, 'urn:ctgate:real-slab:' + name).int


def embed(hu, mask, pixel_mm, matrix, ring_mm):
    """The crop, unchanged, centred in a ring of soft tissue (rounded corners) and air on a square matrix."""
    h, w = hu.shape
    ring = int(round(ring_mm / pixel_mm))
    n = max(matrix, h + 2 * ring + 2, w + 2 * ring + 2)
    y0, x0 = (n - h) // 2, (n - w) // 2
    yy, xx = np.mgrid[0:n, 0:n]
    dy = np.maximum(0, np.maximum(y0 - yy, yy - (y0 + h - 1)))
    dx = np.maximum(0, np.maximum(x0 - xx, xx - (x0 + w - 1)))
    out = np.where(dy * dy + dx * dx <= ring * ring, SOFT_HU, AIR_HU).astype(np.float32)
    out[y0:y0 + h, x0:x0 + w] = hu
    m = np.zeros((n, n), np.uint8)
    m[y0:y0 + h, x0:x0 + w] = mask
    return out, m, {'x0': x0, 'y0': y0, 'width': w, 'height': h, 'ringPixels': ring}


def write_series(out_dir, hu, pixel_mm, slices, thickness, key, description, patient_id, accession):
    rows, cols = hu.shape
    stored = np.round(hu).astype(np.int32) - INTERCEPT
    if stored.min() < -32768 or stored.max() > 32767:
        raise SystemExit('HU out of the int16 range')
    stored = stored.astype('<i2')
    study, series, frame = uid(key + ':study'), uid(key + ':series'), uid(key + ':frame')
    # In-plane origin at the matrix centre; z from the feet up (LPS: +z is superior).
    ox = -(cols - 1) * pixel_mm / 2
    oy = -(rows - 1) * pixel_mm / 2
    sops = []
    files = []
    for k in range(slices):
        sop = uid('%s:slice:%d' % (key, k))
        z = k * thickness
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
        meta.MediaStorageSOPInstanceUID = sop
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = uid('implementation')
        meta.ImplementationVersionName = 'CTGATE_REALSLAB'
        ds = Dataset()
        ds.file_meta = meta
        ds.is_little_endian = True
        ds.is_implicit_VR = False
        ds.SpecificCharacterSet = 'ISO_IR 100'
        ds.ImageType = ['DERIVED', 'SECONDARY', 'AXIAL']
        ds.SOPClassUID = CT_IMAGE_STORAGE
        ds.SOPInstanceUID = sop
        ds.StudyDate = '20200401'
        ds.StudyTime = '120000'
        ds.ContentDate = '20200401'
        ds.ContentTime = '120000'
        ds.AccessionNumber = accession
        ds.Modality = 'CT'
        ds.Manufacturer = 'ctgate test fixture (synthetic slab from one real slice)'
        ds.ReferringPhysicianName = ''
        ds.StudyDescription = 'SYNTHETIC TEST SLAB - NOT A REAL STUDY'
        ds.SeriesDescription = description
        ds.PatientName = 'SYNTHETIC^REALSLAB'
        ds.PatientID = patient_id
        ds.PatientBirthDate = ''
        ds.PatientSex = 'O'
        ds.PatientIdentityRemoved = 'YES'
        ds.DeidentificationMethod = 'test slab from public data: made-up identifiers, no patient'
        ds.BodyPartExamined = 'CHEST'
        ds.SliceThickness = '%g' % thickness
        ds.KVP = ''
        ds.PatientPosition = 'HFS'
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = series
        ds.StudyID = 'SLAB'
        ds.SeriesNumber = 1
        ds.AcquisitionNumber = 1
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = ['%.4f' % ox, '%.4f' % oy, '%.4f' % z]
        ds.ImageOrientationPatient = ['1', '0', '0', '0', '1', '0']
        ds.FrameOfReferenceUID = frame
        ds.PositionReferenceIndicator = ''
        ds.SliceLocation = '%.4f' % z
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = 'MONOCHROME2'
        ds.Rows = rows
        ds.Columns = cols
        ds.PixelSpacing = ['%g' % pixel_mm, '%g' % pixel_mm]
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.WindowCenter = '-600'
        ds.WindowWidth = '1500'
        ds.RescaleIntercept = str(INTERCEPT)
        ds.RescaleSlope = '1'
        ds.RescaleType = 'HU'
        ds.PixelData = stored.tobytes()
        path = os.path.join(out_dir, '%04d.dcm' % (k + 1))
        pydicom.dcmwrite(path, ds, write_like_original=False)
        sops.append(sop)
        files.append(path)
    return {'studyInstanceUid': study, 'seriesInstanceUid': series, 'sopInstanceUids': sops, 'files': files}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument('--doctor', metavar='NAME', help="a doctor-labelled TEST-split slice, or 'largest'")
    src.add_argument('--lidc', action='store_true')
    ap.add_argument('--out', required=True)
    ap.add_argument('--slices', type=int, default=32)
    ap.add_argument('--thickness', type=float, default=2.5)
    ap.add_argument('--matrix', type=int, default=512)
    ap.add_argument('--ring-mm', type=float, default=15.0)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    summary = {}
    if a.doctor is not None:
        test = real_data.doctor_split()[1]
        if a.doctor == 'largest':
            gt = os.path.join(real_data.DATA, 'covid-slices-train', 'GT')
            fractions = {n: float((real_data.read_mask(os.path.join(gt, n + '.png')) >= 0.5).mean()) for n in test}
            name = max(test, key=lambda n: fractions[n])
        elif a.doctor in test:
            name = a.doctor
        else:
            raise SystemExit('slice %r is not in the doctor test split %s (training slices are not test fixtures)' % (a.doctor, test))
        hu, mask = real_data.doctor_hu(name)
        pixel = real_data.ASSUMED_PIXEL_MM
        img, m, crop = embed(hu, mask.astype(np.uint8), pixel, a.matrix, a.ring_mm)
        mask_file = os.path.join(a.out, 'lesion-mask.npy')
        np.save(mask_file, m)
        key = 'doctor:%s' % name
        summary.update(source='doctor', name=name, lesionFraction=float(mask.mean()), crop=crop, maskFile=mask_file, testSplit=test)
        series = write_series(a.out, img, pixel, a.slices, a.thickness, key, 'real COVID-19 slice (doctor test split %s) extruded' % name, 'SYN-DOCTOR-%s' % name, 'SYNDOC%s' % name)
    else:
        ds = pydicom.dcmread(LIDC)
        sy, sx = (float(v) for v in ds.PixelSpacing)
        if abs(sy - sx) > 1e-6:
            raise SystemExit('non-square pixels in %s' % LIDC)
        hu = ds.pixel_array.astype(np.float32) * float(getattr(ds, 'RescaleSlope', 1)) + float(getattr(ds, 'RescaleIntercept', 0))
        pixel = sx
        img = hu
        summary.update(source='lidc', name='lidc-chest/0.dcm', crop={'x0': 0, 'y0': 0, 'width': hu.shape[1], 'height': hu.shape[0], 'ringPixels': 0})
        series = write_series(a.out, img, pixel, a.slices, a.thickness, 'lidc:0', 'real LIDC chest CT slice extruded', 'SYN-LIDC-0', 'SYNLIDC0')
    summary.update(rows=int(img.shape[0]), columns=int(img.shape[1]), pixelMm=pixel, slices=a.slices, sliceThickness=a.thickness, **series)
    json.dump(summary, sys.stdout)
    sys.stdout.write('\n')


if __name__ == '__main__':
    main()
