"""Independent DICOM reader for tests: prints, per file, the SOP Instance UID and the HU pixels (int16, base64)."""
import base64
import json
import sys

import numpy as np
import pydicom

out = {}
for path in sys.argv[1:]:
    ds = pydicom.dcmread(path)
    hu = ds.pixel_array.astype(np.float64) * float(getattr(ds, "RescaleSlope", 1)) + float(getattr(ds, "RescaleIntercept", 0))
    out[str(ds.SOPInstanceUID)] = {
        "hu": base64.b64encode(np.round(hu).astype("<i2").tobytes()).decode(),
        "position": [float(v) for v in ds.ImagePositionPatient],
        "rows": int(ds.Rows),
        "columns": int(ds.Columns),
    }
json.dump(out, sys.stdout)
