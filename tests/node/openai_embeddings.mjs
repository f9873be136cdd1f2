// Embeddings with the openai SDK at its defaults: the SDK asks for base64 and decodes it.
import OpenAI from "openai";
import { KEY, ORIGIN, run } from "./common.mjs";

const client = new OpenAI({ baseURL: `${ORIGIN}/v1`, apiKey: KEY });

await run({
  async embeddings() {
    const r = await client.embeddings.create({
      model: "openai/text-embedding-3-small", input: ["first text", "second one here"],
    });
    return {
      model: r.model, usage: r.usage, count: r.data.length,
      dims: r.data.map((d) => d.embedding.length),
      head: r.data.map((d) => d.embedding.slice(0, 3)),
    };
  },
});
