/**
 * Windows only: runs one program in a console of its own, so that the smoke suite can
 * give it a console Ctrl-C. On Windows sqsrun drains on SIGINT, which Deno raises for a
 * CTRL_C_EVENT of the process's console; there is no SIGTERM to send, and `Deno.kill`
 * only terminates (TerminateProcess, whatever the signal's name). Deno cannot spawn a
 * process in a new console or process group of its own either, and a CTRL_C_EVENT always
 * goes to every process attached to the console, so sending one to the console the suite
 * runs in would also stop the suite, the shell of the CI step and moto.
 *
 * So this host, started by the suite with piped stdio:
 *
 * 1. leaves its console and allocates a new one (FreeConsole, AllocConsole; the window is
 *    hidden), clears any inherited "ignore Ctrl-C" flag (SetConsoleCtrlHandler(NULL, FALSE),
 *    which its children inherit), and keeps itself alive through the Ctrl-C it will send
 *    (a SIGINT listener);
 * 2. spawns PROGRAM ARGS in that console, forwarding its stdout and stderr;
 * 3. reads commands on stdin, one per line: `ctrl-c` sends CTRL_C_EVENT to its console
 *    (GenerateConsoleCtrlEvent(CTRL_C_EVENT, 0): the program, the jobs it started, and this
 *    host, which ignores it), `kill` terminates the program; the end of stdin kills it too;
 * 4. exits with the program's exit code once it exited.
 *
 * Every line of its own goes to stderr and starts with `console-host: `. It exits 70 when
 * the console could not be set up (the suite then fails and says why, naming the host).
 *
 * ```sh
 * deno run --allow-ffi --allow-run --allow-read --allow-env scripts/smoke/console_host.ts PROGRAM [ARGS...]
 * ```
 *
 * @module
 */

/** Exit code of a host that could not set up its console. */
export const HOST_FAILED = 70;

const CTRL_C_EVENT = 0;
const SW_HIDE = 0;

function say(message: string): void {
  console.error(`console-host: ${message}`);
}

async function main(args: string[]): Promise<number> {
  if (Deno.build.os !== "windows") {
    say("Windows only");
    return HOST_FAILED;
  }
  if (args.length === 0) {
    say("usage: console_host.ts PROGRAM [ARGS...]");
    return HOST_FAILED;
  }
  const kernel32 = Deno.dlopen("kernel32.dll", {
    FreeConsole: { parameters: [], result: "i32" },
    AllocConsole: { parameters: [], result: "i32" },
    GetConsoleWindow: { parameters: [], result: "pointer" },
    SetConsoleCtrlHandler: { parameters: ["pointer", "i32"], result: "i32" },
    GenerateConsoleCtrlEvent: { parameters: ["u32", "u32"], result: "i32" },
  });
  const k = kernel32.symbols;
  // Registered before any Ctrl-C exists: Deno's console handler then reports the event
  // as handled, and the host lives on to report the program's exit code.
  Deno.addSignalListener("SIGINT", () => say("the Ctrl-C reached the host too (ignored)"));

  k.FreeConsole();
  if (k.AllocConsole() === 0) {
    say("AllocConsole failed: cannot give the program a console of its own");
    return HOST_FAILED;
  }
  const window = k.GetConsoleWindow();
  if (window !== null) {
    try {
      const user32 = Deno.dlopen("user32.dll", {
        ShowWindow: { parameters: ["pointer", "i32"], result: "i32" },
      });
      user32.symbols.ShowWindow(window, SW_HIDE);
      user32.close();
    } catch { /* a visible console window is only cosmetic */ }
  }
  if (k.SetConsoleCtrlHandler(null, 0) === 0) {
    say("SetConsoleCtrlHandler(NULL, FALSE) failed: the program may ignore Ctrl-C");
  }

  const [program, ...programArgs] = args;
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command(program, {
      args: programArgs,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
  } catch (error) {
    say(`cannot start ${program}: ${error instanceof Error ? error.message : error}`);
    return HOST_FAILED;
  }
  say(`started pid ${child.pid} in a console of its own`);
  const forwarding = Promise.all([
    child.stdout.pipeTo(Deno.stdout.writable, { preventClose: true }).catch(() => {}),
    child.stderr.pipeTo(Deno.stderr.writable, { preventClose: true }).catch(() => {}),
  ]);
  let exited = false;
  const status = child.status.then((status) => {
    exited = true;
    return status;
  });
  const kill = () => {
    if (exited) return;
    try {
      child.kill("SIGKILL");
    } catch { /* gone */ }
  };

  void (async () => {
    let pending = "";
    try {
      for await (const chunk of Deno.stdin.readable.pipeThrough(new TextDecoderStream())) {
        pending += chunk;
        let newline = pending.indexOf("\n");
        while (newline !== -1) {
          const command = pending.slice(0, newline).trim();
          pending = pending.slice(newline + 1);
          newline = pending.indexOf("\n");
          if (command === "ctrl-c") {
            const sent = k.GenerateConsoleCtrlEvent(CTRL_C_EVENT, 0) !== 0;
            say(sent ? "sent CTRL_C_EVENT to the console" : "GenerateConsoleCtrlEvent failed");
          } else if (command === "kill") {
            say(`terminating pid ${child.pid}`);
            kill();
          } else if (command !== "") {
            say(`unknown command ${JSON.stringify(command)}`);
          }
        }
      }
    } catch { /* stdin broke: same as its end */ }
    // The suite is gone (or done): nothing may outlive it.
    kill();
  })();

  const { code } = await status;
  // Output still in the pipes; bounded, a grandchild may hold them open.
  let timer: ReturnType<typeof setTimeout> | undefined;
  await Promise.race([forwarding, new Promise((resolve) => timer = setTimeout(resolve, 2_000))]);
  clearTimeout(timer);
  return code;
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
