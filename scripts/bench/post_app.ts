/**
 * The trivial web app of `deno task bench`'s `--post` rows: `deno run -A
 * post_app.ts PORT_FILE` listens on a free loopback port (written to PORT_FILE),
 * reads each request's body and answers 200 with no body. Deno.serve is Rust's
 * hyper under a thin JavaScript handler, so one core serves tens of thousands of
 * such requests a second, far above what one SQS queue on the emulator delivers;
 * the bench reports its CPU per message to show it.
 *
 * @module
 */
const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (req) => {
  await req.arrayBuffer();
  return new Response(null, { status: 200 });
});
await Deno.writeTextFile(Deno.args[0], String(server.addr.port));
