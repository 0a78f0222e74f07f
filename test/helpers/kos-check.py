"""Independent Key Object Selection reader for tests (pydicom): prints one JSON object per file given, keyed by path,
with the header values the tests check and the content items (codes as "scheme:value:meaning")."""
import json
import sys

import pydicom


def code(c):
    return f"{c.CodingSchemeDesignator}:{c.CodeValue}:{c.CodeMeaning}"


def item(it):
    out = {"rel": str(it.RelationshipType), "type": str(it.ValueType)}
    if "ConceptNameCodeSequence" in it:
        out["name"] = code(it.ConceptNameCodeSequence[0])
    if it.ValueType == "CODE":
        out["value"] = code(it.ConceptCodeSequence[0])
    elif it.ValueType == "TEXT":
        out["value"] = str(it.TextValue)
    elif it.ValueType == "UIDREF":
        out["value"] = str(it.UID)
    elif it.ValueType == "IMAGE":
        ref = it.ReferencedSOPSequence[0]
        out["refs"] = {"sopClass": str(ref.ReferencedSOPClassUID), "sop": str(ref.ReferencedSOPInstanceUID)}
    return out


out = {}
for path in sys.argv[1:]:
    ds = pydicom.dcmread(path)
    out[path] = {
        "sopClassUid": str(ds.SOPClassUID),
        "sopInstanceUid": str(ds.SOPInstanceUID),
        "studyInstanceUid": str(ds.StudyInstanceUID),
        "seriesInstanceUid": str(ds.SeriesInstanceUID),
        "seriesNumber": int(ds.SeriesNumber),
        "modality": str(ds.Modality),
        "seriesDescription": str(ds.SeriesDescription),
        "patientId": str(ds.PatientID),
        "title": code(ds.ConceptNameCodeSequence[0]),
        "template": [f"{t.MappingResource}:{t.TemplateIdentifier}" for t in ds.ContentTemplateSequence],
        "evidence": [
            {"study": str(s.StudyInstanceUID), "series": str(r.SeriesInstanceUID), "instances": [str(i.ReferencedSOPInstanceUID) for i in r.ReferencedSOPSequence]}
            for s in ds.CurrentRequestedProcedureEvidenceSequence
            for r in s.ReferencedSeriesSequence
        ],
        "hasPixelData": "PixelData" in ds,
        "items": [item(c) for c in ds.ContentSequence],
    }
json.dump(out, sys.stdout)
