/**
 * A process's stdout and stderr as log lines: read as they come, never kept
 * whole, and split where a line gets too long. Shared by every runner that
 * spawns processes, and by the spawner, whose threads read the pipes and hand
 * the chunks over to the main thread's splitter.
 *
 * @module
 */

/** Longest piece of output logged as one line; longer lines are split. */
export const MAX_LINE_BYTES = 16 * 1024;

/**
 * Turns chunks of one stream into lines (split at MAX_LINE_BYTES, on a character
 * boundary), keeping only the unfinished line between chunks.
 */
export class LineSplitter {
  #emit: (line: string) => void;
  #decoder = new TextDecoder();
  #pending: Uint8Array = new Uint8Array(0);

  /** @param emit called once per line, without its line end */
  constructor(emit: (line: string) => void) {
    this.#emit = emit;
  }

  /** Emits the lines `chunk` completes. */
  push(chunk: Uint8Array): void {
    let data = this.#pending.length ? concat(this.#pending, chunk) : chunk;
    let newline = data.indexOf(10);
    while (newline !== -1) {
      let line = data.subarray(0, newline);
      while (line.length > MAX_LINE_BYTES) line = this.#emitPiece(line);
      this.#emitBytes(line);
      data = data.subarray(newline + 1);
      newline = data.indexOf(10);
    }
    // A line without an end yet is cut too, so one endless line cannot grow memory.
    while (data.length > MAX_LINE_BYTES) data = this.#emitPiece(data);
    this.#pending = data.slice();
  }

  /** Emits what is left: the stream ended. */
  end(): void {
    let pending = this.#pending;
    while (pending.length > MAX_LINE_BYTES) pending = this.#emitPiece(pending);
    if (pending.length) this.#emitBytes(pending);
    this.#pending = new Uint8Array(0);
  }

  #emitBytes(bytes: Uint8Array): void {
    const text = this.#decoder.decode(bytes);
    this.#emit(text.endsWith("\r") ? text.slice(0, -1) : text);
  }

  /** Emits the longest head of `data` under the limit that ends on a character boundary. */
  #emitPiece(data: Uint8Array): Uint8Array {
    let cut = MAX_LINE_BYTES;
    while (cut > 0 && (data[cut] & 0xc0) === 0x80) cut--;
    if (cut === 0) cut = MAX_LINE_BYTES;
    this.#emitBytes(data.subarray(0, cut));
    return data.subarray(cut);
  }
}

/**
 * Reads `stream` and calls `emit` per line (split at MAX_LINE_BYTES), without keeping it
 * whole; before each chunk it awaits `room` (the log's room for job output), when given.
 */
export async function streamLines(
  stream: ReadableStream<Uint8Array>,
  emit: (line: string) => void,
  room?: () => Promise<void> | undefined,
): Promise<void> {
  const splitter = new LineSplitter(emit);
  await streamChunks(stream, (chunk) => splitter.push(chunk), room);
  splitter.end();
}

/** Bytes a job's pipe is read with at once: one buffer per stream, reused for every read. */
export const READ_CHUNK_BYTES = 64 * 1024;

/**
 * Read buffers kept, per thread, for the pipes of the jobs to come (2 MiB). A new
 * 64 KiB buffer for each of a job's two pipes was, with short jobs, 128 KiB of
 * allocation and zeroing per message; most jobs end without writing a byte.
 */
export const IDLE_READ_BUFFERS = 32;

const idleReadBuffers: ArrayBuffer[] = [];

/** How many read buffers wait for a next pipe on this thread. */
export function idleReadBufferCount(): number {
  return idleReadBuffers.length;
}

/**
 * Reads `stream` chunk by chunk into `take`; before each read it awaits `room`,
 * when given, so that a consumer that is behind slows the writer (its pipe fills)
 * rather than losing its output. Resolves at the end of the stream, or once it broke.
 *
 * A byte stream (a child's pipe) is read into one buffer of
 * {@linkcode READ_CHUNK_BYTES} that every read reuses, and `take` gets a copy of
 * just the bytes read: a job that writes a line at a time would otherwise cost a new
 * 64 KiB buffer per read. At the end of the stream the buffer goes back to this
 * thread's idle ones, for the next pipe. `take` may keep or transfer what it is given.
 */
export async function streamChunks(
  stream: ReadableStream<Uint8Array>,
  take: (chunk: Uint8Array) => void,
  room?: () => Promise<void> | undefined,
): Promise<void> {
  let reader: ReadableStreamBYOBReader;
  try {
    reader = stream.getReader({ mode: "byob" });
  } catch {
    // Not a byte stream: read it as it comes.
    return await streamEachChunk(stream, take, room);
  }
  let buffer = idleReadBuffers.pop() ?? new ArrayBuffer(READ_CHUNK_BYTES);
  let whole = false;
  try {
    while (true) {
      const waiting = room?.();
      if (waiting) await waiting;
      const { value, done } = await reader.read(new Uint8Array(buffer));
      if (value === undefined) break;
      // The read transferred the buffer into `value` (an empty view at the end of the
      // stream): it is the one to read into next.
      buffer = value.buffer as ArrayBuffer;
      if (done) {
        whole = true;
        break;
      }
      take(value.slice());
    }
  } catch {
    // The pipe broke; what was read has been taken. The buffer stays with the stream.
  } finally {
    reader.releaseLock();
  }
  if (
    whole && buffer.byteLength === READ_CHUNK_BYTES && idleReadBuffers.length < IDLE_READ_BUFFERS
  ) {
    idleReadBuffers.push(buffer);
  }
}

async function streamEachChunk(
  stream: ReadableStream<Uint8Array>,
  take: (chunk: Uint8Array) => void,
  room?: () => Promise<void> | undefined,
): Promise<void> {
  try {
    for await (const chunk of stream) {
      const waiting = room?.();
      if (waiting) await waiting;
      take(chunk);
    }
  } catch {
    // The pipe broke; what was read has been taken.
  }
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const joined = new Uint8Array(a.length + b.length);
  joined.set(a);
  joined.set(b, a.length);
  return joined;
}
