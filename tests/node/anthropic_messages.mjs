// Messages with the @anthropic-ai/sdk at its defaults (baseURL is the gateway's origin; the
// SDK adds /v1 itself): a plain answer, the stream helper, and a tool use round trip.
import Anthropic from "@anthropic-ai/sdk";
import { KEY, ORIGIN, run } from "./common.mjs";

const client = new Anthropic({ baseURL: ORIGIN, apiKey: KEY });
const MODEL = "anthropic/claude-sonnet-4-5";
const WEATHER = {
  name: "get_weather",
  description: "Current weather in a city",
  input_schema: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
};

await run({
  async plain() {
    const r = await client.messages.create({
      model: MODEL, max_tokens: 200, system: "Be brief.",
      messages: [{ role: "user", content: "hello from node" }],
    });
    return { content: r.content, model: r.model, stop_reason: r.stop_reason, usage: r.usage };
  },
  async stream() {
    const stream = client.messages.stream({
      model: MODEL, max_tokens: 200,
      messages: [{ role: "user", content: "stream these five words" }],
    });
    const pieces = [];
    stream.on("text", (t) => pieces.push(t));
    const final = await stream.finalMessage();
    return { pieces, text: final.content[0].text, stop_reason: final.stop_reason,
             usage: final.usage };
  },
  async tools() {
    const messages = [{ role: "user", content: "What is the weather in Oslo?" }];
    const first = await client.messages.create({
      model: MODEL, max_tokens: 200, tools: [WEATHER], messages,
    });
    const use = first.content.find((b) => b.type === "tool_use");
    messages.push({ role: "assistant", content: first.content });
    messages.push({ role: "user", content: [
      { type: "tool_result", tool_use_id: use.id, content: "sunny and 21 degrees" }] });
    const second = await client.messages.create({
      model: MODEL, max_tokens: 200, tools: [WEATHER], messages,
    });
    return {
      stop_reason: first.stop_reason, call: { name: use.name, input: use.input },
      answer: second.content[0].text, usages: [first.usage, second.usage],
    };
  },
});
