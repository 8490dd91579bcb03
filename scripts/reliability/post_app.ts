/**
 * The web app of scenario 14 (`post.ts`), a process of its own so that the
 * scenario can SIGKILL it: `deno run -A post_app.ts PORT LEDGER`. It answers
 * `GET /health` with 200 and each `POST /jobs` after sleeping the milliseconds its
 * body ends with (`p-<n>-<ms>`), and keeps its own ledger, the independent record
 * of what it did:
 *
 *     S <body> <app pid> <epoch ns>     the request arrived
 *     A <body> <app pid> <epoch ns>     the app is about to answer 200
 *
 * Each line is one write to a file opened for appending, done before the app goes
 * on, so an `A` line exists for every 2xx the app ever sent (it may also exist for
 * one it was killed before sending).
 *
 * @module
 */

const [portText, ledgerPath] = Deno.args;
const ledger = Deno.openSync(ledgerPath, { append: true, create: true });
const encoder = new TextEncoder();

function record(kind: "S" | "A", body: string): void {
  const ns = BigInt(Date.now()) * 1_000_000n + BigInt(Math.floor((performance.now() % 1) * 1e6));
  ledger.writeSync(encoder.encode(`${kind} ${body} ${Deno.pid} ${ns}\n`));
}

Deno.serve({ hostname: "127.0.0.1", port: Number(portText), onListen: () => {} }, async (req) => {
  const path = new URL(req.url).pathname;
  if (path === "/health") return new Response("ok");
  if (req.method !== "POST" || path !== "/jobs") return new Response("no", { status: 404 });
  const body = await req.text();
  record("S", body);
  const ms = Number(body.slice(body.lastIndexOf("-") + 1)) || 0;
  await new Promise((resolve) => setTimeout(resolve, ms));
  record("A", body);
  return new Response(null, { status: 200 });
});
