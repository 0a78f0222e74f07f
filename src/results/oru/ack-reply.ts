import { parseMessage } from '../../hl7/message.js';

/** What a receiver's acknowledgment says about one message. */
export interface AckReply {
  /** MSA-1, upper case (AA, AE, AR, CA, CE, CR, or whatever the peer sent). */
  code: string;
  /** MSA-2: the MSH-10 of the message acknowledged. */
  controlId: string;
  /** Why, when the peer said: MSA-3, else ERR-8 (2.5+), else the text of ERR-3 or ERR-1 (2.4 and earlier). */
  reason: string;
}

/** Reads an ACK (CR segment ends); throws Hl7ParseError when it is not HL7 or has no MSA. */
export function readAckReply(text: string): AckReply {
  const msg = parseMessage(text);
  const msa = msg.first('MSA');
  if (!msa) throw new Error('acknowledgment has no MSA segment');
  const err = msg.first('ERR');
  const sub = msg.header.encodingChars[3] ?? '&';
  const reason = msa.get(3) || (err && (err.get(8) || err.get(3, 2) || (err.get(1, 4).split(sub)[1] ?? '').trim())) || '';
  return { code: msa.get(1).toUpperCase(), controlId: msa.get(2), reason };
}
