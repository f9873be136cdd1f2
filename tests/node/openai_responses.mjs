// The Responses API with the openai SDK at its defaults: create, a raw event stream, and the
// stream helper.
import OpenAI from "openai";
import { KEY, ORIGIN, run } from "./common.mjs";

const client = new OpenAI({ baseURL: `${ORIGIN}/v1`, apiKey: KEY });
const MODEL = "openai/gpt-4o";

// the text of a response's message outputs (what `output_text` is on a created response)
const textOf = (response) => response.output
  .filter((item) => item.type === "message")
  .flatMap((item) => item.content)
  .filter((part) => part.type === "output_text")
  .map((part) => part.text)
  .join("");

await run({
  async create() {
    const r = await client.responses.create({
      model: MODEL, instructions: "Be brief.", input: "hello from node",
    });
    return { text: r.output_text, model: r.model, status: r.status, usage: r.usage };
  },
  async stream() {
    const stream = await client.responses.create({
      model: MODEL, input: "stream these words please", stream: true,
    });
    const types = [];
    let deltas = "";
    let final = null;
    for await (const event of stream) {
      types.push(event.type);
      if (event.type === "response.output_text.delta") deltas += event.delta;
      if (event.type === "response.completed") final = event.response;
    }
    return { types, deltas, text: final && textOf(final), usage: final?.usage };
  },
  async helper() {
    const stream = client.responses.stream({ model: MODEL, input: "helper check" });
    const final = await stream.finalResponse();
    return { text: textOf(final), output_text: final.output_text ?? null,
             usage: final.usage };
  },
});
