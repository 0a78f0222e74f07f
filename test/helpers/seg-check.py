"""Independent DICOM SEG reader for tests (pydicom): prints one JSON object per file given, keyed by path, with
the header values the tests check and, per frame, its segment, source image, position and pixels (uint8, base64,
as pydicom's pixel_array unpacks them)."""
import base64
import json
import sys

import numpy as np
import pydicom
from pydicom.multival import MultiValue


def code(seq):
    if not seq:
        return None
    c = seq[0]
    return {"value": str(c.CodeValue), "scheme": str(c.CodingSchemeDesignator), "meaning": str(c.CodeMeaning)}


def first(ds, name):
    seq = getattr(ds, name, None)
    return seq[0] if seq else None


def frame_group(fg, shared, name):
    return first(fg, name) or (first(shared, name) if shared is not None else None)


out = {}
for path in sys.argv[1:]:
    ds = pydicom.dcmread(path)
    px = ds.pixel_array
    n = int(getattr(ds, "NumberOfFrames", 1))
    if n == 1 and px.ndim == 2:
        px = px[np.newaxis]
    shared = first(ds, "SharedFunctionalGroupsSequence")
    frames = []
    for i, fg in enumerate(ds.PerFrameFunctionalGroupsSequence):
        src = frame_group(fg, shared, "DerivationImageSequence").SourceImageSequence[0]
        frames.append(
            {
                "segment": int(frame_group(fg, shared, "SegmentIdentificationSequence").ReferencedSegmentNumber),
                "sop": str(src.ReferencedSOPInstanceUID),
                "position": [float(v) for v in frame_group(fg, shared, "PlanePositionSequence").ImagePositionPatient],
                "dimensionIndexValues": [int(v) for v in frame_group(fg, shared, "FrameContentSequence").DimensionIndexValues],
                "pixels": base64.b64encode(np.ascontiguousarray(px[i], dtype=np.uint8).tobytes()).decode(),
            }
        )
    out[path] = {
        "sopClassUid": str(ds.SOPClassUID),
        "sopInstanceUid": str(ds.SOPInstanceUID),
        "studyInstanceUid": str(ds.StudyInstanceUID),
        "seriesInstanceUid": str(ds.SeriesInstanceUID),
        "frameOfReferenceUid": str(ds.FrameOfReferenceUID),
        "transferSyntax": str(ds.file_meta.TransferSyntaxUID),
        "modality": str(ds.Modality),
        "segmentationType": str(ds.SegmentationType),
        "patientId": str(ds.PatientID),
        "patientName": str(ds.PatientName),
        "accessionNumber": str(ds.AccessionNumber),
        "numberOfFrames": n,
        "rows": int(ds.Rows),
        "columns": int(ds.Columns),
        "pixelArrayShape": list(px.shape),
        "orientation": [float(v) for v in shared.PlaneOrientationSequence[0].ImageOrientationPatient],
        "pixelSpacing": [float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing],
        "softwareVersions": [str(v) for v in (ds.SoftwareVersions if isinstance(ds.SoftwareVersions, MultiValue) else [ds.SoftwareVersions])],
        "segments": [
            {
                "number": int(s.SegmentNumber),
                "label": str(s.SegmentLabel),
                "algorithmType": str(s.SegmentAlgorithmType),
                "algorithmName": str(getattr(s, "SegmentAlgorithmName", "")),
                "category": code(s.SegmentedPropertyCategoryCodeSequence),
                "type": code(s.SegmentedPropertyTypeCodeSequence),
            }
            for s in ds.SegmentSequence
        ],
        "referencedSeries": [
            {"series": str(r.SeriesInstanceUID), "instances": [str(i.ReferencedSOPInstanceUID) for i in r.ReferencedInstanceSequence]}
            for r in ds.ReferencedSeriesSequence
        ],
        "dimensionPointers": [str(d.DimensionIndexPointer) for d in ds.DimensionIndexSequence],
        "frames": frames,
    }
json.dump(out, sys.stdout)
