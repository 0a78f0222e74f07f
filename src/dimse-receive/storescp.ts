/**
 * How ctgate runs DCMTK's storescp for one association: in inetd mode (`-id`), on a socket the gate hands it, so
 * storescp never listens on a port of its own (storescp 3.6.7 binds every interface and has no option to check the
 * Called or Calling AE: ctgate's gate does that, see gate.ts). storescp writes each instance into
 * `<studies>/st_<StudyInstanceUID>/CT.<SOPInstanceUID>.dcm` (-su) and only then sends the C-STORE response; a
 * data set it cannot read, or whose SOP class/instance differs from the request, gets a failure status.
 *
 * SOP classes: an association profile (-xf) accepts Verification plus CT Image Storage and Enhanced CT Image Storage
 * (accept 'ct'), or every storage SOP class DCMTK knows (accept 'all'); anything else gets no presentation context,
 * so the sender is told at once (0006:0208 in DCMTK's words) instead of the instance being stored and dropped.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

const TRANSFER_SYNTAXES = `[[TransferSyntaxes]]
[Uncompressed]
TransferSyntax1 = LocalEndianExplicit
TransferSyntax2 = OppositeEndianExplicit
TransferSyntax3 = LittleEndianImplicit
[Any]
TransferSyntax1 = LocalEndianExplicit
TransferSyntax2 = OppositeEndianExplicit
TransferSyntax3 = LittleEndianImplicit
TransferSyntax4 = DeflatedLittleEndianExplicit
TransferSyntax5 = JPEGLossless:Non-hierarchical-1stOrderPrediction
TransferSyntax6 = JPEGLossless:Non-hierarchical:Process14
TransferSyntax7 = JPEGLSLossless
TransferSyntax8 = JPEGLSLossy
TransferSyntax9 = JPEG2000LosslessOnly
TransferSyntax10 = JPEG2000
TransferSyntax11 = RLELossless
TransferSyntax12 = JPEGBaseline
TransferSyntax13 = JPEGExtended:Process2+4
`;

/** CT Image Storage and Enhanced CT Image Storage. */
export const CT_SOP_CLASSES = ['1.2.840.10008.5.1.4.1.1.2', '1.2.840.10008.5.1.4.1.1.2.1'];

/** The association profile file's text: Verification, then the accepted storage SOP classes. */
export function profileText(accept: 'ct' | 'all'): string {
  const lines = ['[[PresentationContexts]]', '[Receive]', 'PresentationContext1 = VerificationSOPClass\\Uncompressed'];
  if (accept === 'ct') {
    CT_SOP_CLASSES.forEach((uid, i) => {
      lines.push(`PresentationContext${i + 2} = ${uid}\\Any`);
    });
    return `${TRANSFER_SYNTAXES}${lines.join('\n')}\n[[Profiles]]\n[CTGATE]\nPresentationContexts = Receive\n`;
  }
  return '';
}

export const PROFILE = 'CTGATE';

/** Writes the profile (accept 'ct') into `dir`; returns its path, or undefined when storescp's defaults apply. */
export function writeProfile(dir: string, accept: 'ct' | 'all'): string | undefined {
  if (accept === 'all') return undefined;
  const path = join(dir, 'storescp-profile.cfg');
  writeFileSync(path, profileText(accept));
  return path;
}

export interface StorescpOptions {
  aeTitle: string;
  /** Where study folders are made. */
  studiesDir: string;
  /** The profile file (accept 'ct'), or undefined for storescp's defaults plus every transfer syntax (+xa). */
  profileFile?: string;
  timeoutS: number;
}

/** storescp's arguments for one association on stdin/stdout. */
export function storescpArgs(o: StorescpOptions): string[] {
  const t = String(o.timeoutS);
  const args = ['-id', '-q', '-aet', o.aeTitle, '-od', o.studiesDir, '-su', 'st', '-fe', '.dcm', '-dhl', '-ts', t, '-ta', t, '-td', t];
  if (o.profileFile) args.push('-xf', o.profileFile, PROFILE);
  else args.push('+xa');
  // Largest PDU DCMTK accepts: fewer round trips for big CT slices.
  args.push('-pdu', '131072');
  return args;
}
