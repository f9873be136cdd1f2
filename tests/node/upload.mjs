// The official openai npm package uploading a file the way its README shows:
// client.audio.transcriptions.create({ file: fs.createReadStream(path), model }).
// Usage: node upload.mjs <base_url> <api_key> <model> <file>; prints the answer as JSON,
// or {"error": {status, body}} when the gateway refuses the request.
import fs from 'node:fs';
import OpenAI from 'openai';

const [baseURL, apiKey, model, path] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 20_000 });
try {
  const answer = await client.audio.transcriptions.create({
    model,
    file: fs.createReadStream(path),
  });
  process.stdout.write(JSON.stringify({ answer }));
} catch (err) {
  if (!(err instanceof OpenAI.APIError)) throw err;
  process.stdout.write(JSON.stringify({ error: { status: err.status, body: err.error } }));
}
