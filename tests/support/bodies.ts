/**
 * Message bodies for byte-exactness tests.
 *
 * @module
 */

/** A body of exactly `total` UTF-8 bytes mixing every kind of character SQS allows. */
export function mixedBody(total: number): string {
  const pieces = [
    "a",
    "Z",
    "9",
    " ",
    "\t",
    "\n",
    "é",
    "ß",
    "€",
    "中",
    "😀",
    "\u{10FFFD}",
    "\uFFFD",
  ];
  const encoder = new TextEncoder();
  let body = "";
  let size = 0;
  for (let i = 0; size < total - 4; i++) {
    const piece = pieces[(i * 7 + (i >> 3)) % pieces.length];
    const bytes = encoder.encode(piece).length;
    if (size + bytes > total) break;
    body += piece;
    size += bytes;
  }
  return body + "x".repeat(total - size);
}
