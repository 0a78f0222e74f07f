"""Independent DICOM SR reader for tests (pydicom): prints one JSON object per file given, keyed by path, with the
header values the tests check and the content tree, each item as {rel, type, name, value, unit, refs, graphicType, points, children}
(codes as "scheme:value:meaning")."""
import json
import sys

import pydicom
from pydicom.multival import MultiValue


def code(c):
    value = getattr(c, "CodeValue", None) or getattr(c, "LongCodeValue", None)
    return f"{c.CodingSchemeDesignator}:{value}:{c.CodeMeaning}"


def item(it):
    out = {"rel": str(getattr(it, "RelationshipType", "")), "type": str(it.ValueType)}
    if "ConceptNameCodeSequence" in it:
        out["name"] = code(it.ConceptNameCodeSequence[0])
    vt = it.ValueType
    if vt == "CODE":
        out["value"] = code(it.ConceptCodeSequence[0])
    elif vt == "TEXT":
        out["value"] = str(it.TextValue)
    elif vt == "UIDREF":
        out["value"] = str(it.UID)
    elif vt == "NUM":
        mv = it.MeasuredValueSequence[0]
        out["value"] = float(mv.NumericValue)
        out["unit"] = code(mv.MeasurementUnitsCodeSequence[0])
    elif vt in ("IMAGE", "COMPOSITE"):
        ref = it.ReferencedSOPSequence[0]
        n = ref.get("ReferencedSegmentNumber")
        out["refs"] = {
            "sopClass": str(ref.ReferencedSOPClassUID),
            "sop": str(ref.ReferencedSOPInstanceUID),
            "segments": [] if n is None else [int(v) for v in (n if isinstance(n, MultiValue) else [n])],
        }
    elif vt == "SCOORD":
        out["graphicType"] = str(it.GraphicType)
        out["points"] = [float(v) for v in it.GraphicData]
    elif vt == "CONTAINER":
        out["continuity"] = str(it.ContinuityOfContent)
    if "ContentSequence" in it:
        out["children"] = [item(c) for c in it.ContentSequence]
    return out


out = {}
for path in sys.argv[1:]:
    ds = pydicom.dcmread(path)
    root = item(ds)
    evidence = [
        {"study": str(s.StudyInstanceUID), "series": str(r.SeriesInstanceUID), "instances": [str(i.ReferencedSOPInstanceUID) for i in r.ReferencedSOPSequence]}
        for s in ds.CurrentRequestedProcedureEvidenceSequence
        for r in s.ReferencedSeriesSequence
    ]
    out[path] = {
        "sopClassUid": str(ds.SOPClassUID),
        "sopInstanceUid": str(ds.SOPInstanceUID),
        "studyInstanceUid": str(ds.StudyInstanceUID),
        "seriesInstanceUid": str(ds.SeriesInstanceUID),
        "transferSyntax": str(ds.file_meta.TransferSyntaxUID),
        "modality": str(ds.Modality),
        "seriesDescription": str(ds.SeriesDescription),
        "patientId": str(ds.PatientID),
        "accessionNumber": str(ds.AccessionNumber),
        "completionFlag": str(ds.CompletionFlag),
        "verificationFlag": str(ds.VerificationFlag),
        "preliminaryFlag": str(getattr(ds, "PreliminaryFlag", "")),
        "contentDate": str(ds.ContentDate),
        "contentTime": str(ds.ContentTime),
        "template": [f"{t.MappingResource}:{t.TemplateIdentifier}" for t in ds.ContentTemplateSequence],
        "placerOrderNumber": str(ds.ReferencedRequestSequence[0].PlacerOrderNumberImagingServiceRequest),
        "evidence": evidence,
        "hasPixelData": "PixelData" in ds,
        "root": root,
    }
json.dump(out, sys.stdout)
