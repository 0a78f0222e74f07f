"""Independent reader of ctgate's key-image secondary captures for tests (pydicom): prints one JSON object per file
given, keyed by path, with the header values the tests check and the pixels as pydicom's pixel_array gives them
(uint8, rows x columns x 3, base64)."""
import base64
import json
import sys

import numpy as np
import pydicom


def uids(seq, name="ReferencedSOPInstanceUID"):
    return [str(getattr(item, name)) for item in (seq or [])]


out = {}
for path in sys.argv[1:]:
    ds = pydicom.dcmread(path)
    px = ds.pixel_array
    src = list(getattr(ds, "SourceImageSequence", []) or [])
    out[path] = {
        "sopClassUid": str(ds.SOPClassUID),
        "mediaSopClassUid": str(ds.file_meta.MediaStorageSOPClassUID),
        "sopInstanceUid": str(ds.SOPInstanceUID),
        "studyInstanceUid": str(ds.StudyInstanceUID),
        "seriesInstanceUid": str(ds.SeriesInstanceUID),
        "transferSyntax": str(ds.file_meta.TransferSyntaxUID),
        "modality": str(ds.Modality),
        "conversionType": str(ds.ConversionType),
        "imageType": [str(v) for v in ds.ImageType],
        "seriesDescription": str(ds.SeriesDescription),
        "imageComments": str(ds.ImageComments),
        "derivationDescription": str(ds.DerivationDescription),
        "burnedInAnnotation": str(ds.BurnedInAnnotation),
        "patientId": str(ds.PatientID),
        "patientName": str(ds.PatientName),
        "accessionNumber": str(ds.AccessionNumber),
        "contentDate": str(ds.ContentDate),
        "contentTime": str(ds.ContentTime),
        "instanceNumber": int(ds.InstanceNumber),
        "photometricInterpretation": str(ds.PhotometricInterpretation),
        "samplesPerPixel": int(ds.SamplesPerPixel),
        "planarConfiguration": int(ds.PlanarConfiguration),
        "bitsAllocated": int(ds.BitsAllocated),
        "rows": int(ds.Rows),
        "columns": int(ds.Columns),
        "pixelSpacing": [float(v) for v in getattr(ds, "PixelSpacing", [])],
        "patientOrientation": [str(v) for v in getattr(ds, "PatientOrientation", [])],
        "sourceImages": uids(src),
        "sourceSpatialLocationsPreserved": [str(getattr(s, "SpatialLocationsPreserved", "")) for s in src],
        "referencedImages": uids(getattr(ds, "ReferencedImageSequence", None)),
        "referencedSeries": [
            {"series": str(s.SeriesInstanceUID), "instances": uids(s.ReferencedInstanceSequence)}
            for s in (getattr(ds, "ReferencedSeriesSequence", None) or [])
        ],
        "pixelArrayShape": list(px.shape),
        "pixels": base64.b64encode(np.ascontiguousarray(px, dtype=np.uint8).tobytes()).decode(),
    }
print(json.dumps(out))
