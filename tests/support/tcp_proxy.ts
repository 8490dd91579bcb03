/**
 * A TCP relay in front of a real emulator, so a test can take the endpoint away
 * and bring it back without the emulator losing its queues.
 *
 * @module
 */

/** A relay that can be cut and restored. */
export interface TcpProxy {
  /** The endpoint URL to give the worker. */
  url: string;
  /** Closes the listener and every open connection: the endpoint is gone. */
  cut(): void;
  /** Listens again on the same port. */
  restore(): void;
  /** Closes everything for good. */
  close(): void;
}

/** Starts relaying 127.0.0.1:<free port> to the host and port of `target` (an http URL). */
export function startTcpProxy(target: string): TcpProxy {
  const { hostname, port } = new URL(target);
  const connections = new Set<Deno.Conn>();
  let listener: Deno.Listener | undefined;
  let listenPort = 0;

  const listen = () => {
    listener = Deno.listen({ hostname: "127.0.0.1", port: listenPort });
    listenPort = (listener.addr as Deno.NetAddr).port;
    const current = listener;
    (async () => {
      try {
        for await (const inbound of current) relay(inbound);
      } catch {
        // Listener closed by cut() or close().
      }
    })();
  };

  const relay = async (inbound: Deno.Conn) => {
    connections.add(inbound);
    let outbound: Deno.Conn | undefined;
    try {
      outbound = await Deno.connect({ hostname, port: Number(port) });
      connections.add(outbound);
      await Promise.race([
        inbound.readable.pipeTo(outbound.writable),
        outbound.readable.pipeTo(inbound.writable),
      ]);
    } catch {
      // Either side went away.
    } finally {
      for (const conn of [inbound, outbound]) {
        if (!conn) continue;
        connections.delete(conn);
        try {
          conn.close();
        } catch { /* closed */ }
      }
    }
  };

  const cut = () => {
    try {
      listener?.close();
    } catch { /* closed */ }
    listener = undefined;
    for (const conn of connections) {
      try {
        conn.close();
      } catch { /* closed */ }
    }
    connections.clear();
  };

  listen();
  return {
    url: `http://127.0.0.1:${listenPort}`,
    cut,
    restore: listen,
    close: cut,
  };
}
