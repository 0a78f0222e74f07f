/**
 * Turns the bytes of one HL7 message into text with CR segment ends.
 * Real feeds send a UTF-8 byte-order mark, LF or CRLF line ends, and MSH-18 character sets.
 */
export function decodeMessageBytes(raw: Buffer): string {
  let bytes = raw;
  if (bytes.length >= 3 && bytes[0] === 0xef && bytes[1] === 0xbb && bytes[2] === 0xbf) bytes = bytes.subarray(3);
  const charset = declaredCharset(bytes.subarray(0, 2048).toString('latin1'));
  const text = charset === 'latin1' ? bytes.toString('latin1') : bytes.toString('utf8');
  return normalizeSegments(text);
}

export function normalizeSegments(text: string): string {
  return text
    .replace(/^\uFEFF/, '')
    .replace(/\r\n|\n\r|\n/g, '\r')
    .replace(/^[\s\r]+/, '')
    .replace(/\r{2,}/g, '\r')
    .replace(/\r+$/, '');
}

/** MSH-18 tells the character set; only ISO 8859-1 differs from UTF-8 in what we must decode. */
function declaredCharset(head: string): 'utf8' | 'latin1' {
  const msh = head.split(/\r\n|\r|\n/)[0] ?? '';
  if (!msh.startsWith('MSH') || msh.length < 4) return 'utf8';
  const fields = msh.split(msh.charAt(3));
  const cs = (fields[17] ?? '').trim().toUpperCase();
  return cs === '8859/1' ? 'latin1' : 'utf8';
}
