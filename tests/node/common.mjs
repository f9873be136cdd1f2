// Shared by the scripts: the gateway's address and key from the environment, and a runner
// that executes named steps and prints one JSON object (each step's result, or its error).
export const ORIGIN = process.env.TOKMODEL_URL; // e.g. http://127.0.0.1:8080 (no /v1)
export const KEY = process.env.TOKMODEL_KEY;
if (!ORIGIN || !KEY) {
  console.error("set TOKMODEL_URL and TOKMODEL_KEY");
  process.exit(2);
}

export async function run(steps) {
  const out = {};
  for (const [name, step] of Object.entries(steps)) {
    try {
      out[name] = await step();
    } catch (err) {
      out[name] = {
        error: {
          class: err?.constructor?.name,
          status: err?.status ?? null,
          message: String(err?.message ?? err),
          body: err?.error ?? null,
        },
      };
    }
  }
  process.stdout.write(JSON.stringify(out) + "\n");
}
