// Chat completions with the openai SDK at its defaults (only baseURL and apiKey set):
// a plain answer, a stream with usage, and a tool call answered with a tool message.
import OpenAI from "openai";
import { KEY, ORIGIN, run } from "./common.mjs";

const client = new OpenAI({ baseURL: `${ORIGIN}/v1`, apiKey: KEY });
const MODEL = "openai/gpt-4o";
const WEATHER = {
  type: "function",
  function: {
    name: "get_weather",
    description: "Current weather in a city",
    parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
  },
};

await run({
  async plain() {
    const r = await client.chat.completions.create({
      model: MODEL, messages: [{ role: "user", content: "hello from node" }],
    });
    return { content: r.choices[0].message.content, model: r.model, usage: r.usage,
             finish_reason: r.choices[0].finish_reason };
  },
  async stream() {
    const stream = await client.chat.completions.create({
      model: MODEL, messages: [{ role: "user", content: "stream these words please" }],
      stream: true, stream_options: { include_usage: true },
    });
    let text = "";
    let chunks = 0;
    let usage = null;
    const finish = [];
    for await (const chunk of stream) {
      chunks += 1;
      for (const choice of chunk.choices) {
        text += choice.delta?.content ?? "";
        if (choice.finish_reason) finish.push(choice.finish_reason);
      }
      if (chunk.usage) usage = chunk.usage;
    }
    return { text, chunks, usage, finish_reasons: finish };
  },
  async tools() {
    const messages = [{ role: "user", content: "What is the weather in Oslo?" }];
    const first = await client.chat.completions.create({ model: MODEL, messages, tools: [WEATHER] });
    const call = first.choices[0].message.tool_calls[0];
    messages.push(first.choices[0].message);
    messages.push({ role: "tool", tool_call_id: call.id, content: "sunny and 21 degrees" });
    const second = await client.chat.completions.create({ model: MODEL, messages, tools: [WEATHER] });
    return {
      call: { name: call.function.name, arguments: JSON.parse(call.function.arguments) },
      finish_reason: first.choices[0].finish_reason,
      answer: second.choices[0].message.content,
      usages: [first.usage, second.usage],
    };
  },
});
