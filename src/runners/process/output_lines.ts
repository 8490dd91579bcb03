/**
 * A process's stdout and stderr as log lines: read as they come, never kept
 * whole, and split where a line gets too long. Shared by every runner that
 * spawns processes.
 *
 * @module
 */

/** Longest piece of output logged as one line; longer lines are split. */
export const MAX_LINE_BYTES = 16 * 1024;

/**
 * Reads `stream` and calls `emit` per line (split at MAX_LINE_BYTES), without keeping it
 * whole; before each chunk it awaits `room` (the log's room for job output), when given.
 */
export async function streamLines(
  stream: ReadableStream<Uint8Array>,
  emit: (line: string) => void,
  room?: () => Promise<void> | undefined,
): Promise<void> {
  const decoder = new TextDecoder();
  const emitBytes = (bytes: Uint8Array) => {
    const text = decoder.decode(bytes);
    emit(text.endsWith("\r") ? text.slice(0, -1) : text);
  };
  // Emits the longest head of `data` under the limit that ends on a character boundary.
  const emitPiece = (data: Uint8Array): Uint8Array => {
    let cut = MAX_LINE_BYTES;
    while (cut > 0 && (data[cut] & 0xc0) === 0x80) cut--;
    if (cut === 0) cut = MAX_LINE_BYTES;
    emitBytes(data.subarray(0, cut));
    return data.subarray(cut);
  };
  let pending: Uint8Array = new Uint8Array(0);
  try {
    for await (const chunk of stream) {
      // A log that is behind slows the job (its pipe fills) rather than losing its lines.
      const waiting = room?.();
      if (waiting) await waiting;
      let data = pending.length ? concat(pending, chunk) : chunk;
      let newline = data.indexOf(10);
      while (newline !== -1) {
        let line = data.subarray(0, newline);
        while (line.length > MAX_LINE_BYTES) line = emitPiece(line);
        emitBytes(line);
        data = data.subarray(newline + 1);
        newline = data.indexOf(10);
      }
      // A line without an end yet is cut too, so one endless line cannot grow memory.
      while (data.length > MAX_LINE_BYTES) data = emitPiece(data);
      pending = data.slice();
    }
  } catch {
    // The pipe broke; what was read has been logged.
  }
  while (pending.length > MAX_LINE_BYTES) pending = emitPiece(pending);
  if (pending.length) emitBytes(pending);
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const joined = new Uint8Array(a.length + b.length);
  joined.set(a);
  joined.set(b, a.length);
  return joined;
}
