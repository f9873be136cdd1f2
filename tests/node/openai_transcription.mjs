// An audio transcription uploaded from fs.createReadStream (the file named by AUDIO_FILE) with
// the openai SDK at its defaults.
import fs from "node:fs";
import OpenAI from "openai";
import { KEY, ORIGIN, run } from "./common.mjs";

const client = new OpenAI({ baseURL: `${ORIGIN}/v1`, apiKey: KEY });

await run({
  async transcription() {
    const r = await client.audio.transcriptions.create({
      model: "openai/whisper-1", file: fs.createReadStream(process.env.AUDIO_FILE),
    });
    return { text: r.text, usage: r.usage ?? null };
  },
});
