// The official openai npm package against the gateway: a chat completion, a stream and
// an error, printed as one JSON line for tests/test_node_client.py to check.
import OpenAI from "openai";

const client = new OpenAI({ baseURL: process.env.GATEWAY_URL, apiKey: process.env.GATEWAY_KEY });
const model = process.env.GATEWAY_MODEL;
const messages = [{ role: "user", content: "Say hello from Node." }];
const out = {};

const completion = await client.chat.completions.create({ model, messages });
out.content = completion.choices[0].message.content;
out.usage = completion.usage;

const stream = await client.chat.completions.create({
  model, messages, stream: true, stream_options: { include_usage: true },
});
out.streamed = "";
for await (const chunk of stream) {
  out.streamed += chunk.choices[0]?.delta?.content ?? "";
  if (chunk.usage) out.streamUsage = chunk.usage;
}

try {
  await client.chat.completions.create({ model: "no-such-model", messages });
  out.error = null;
} catch (err) {
  out.error = { class: err.constructor.name, status: err.status, code: err.code, type: err.type };
}

const bad = new OpenAI({ baseURL: process.env.GATEWAY_URL, apiKey: "sk-wrong", maxRetries: 0 });
try {
  await bad.models.list();
  out.authError = null;
} catch (err) {
  out.authError = { class: err.constructor.name, status: err.status };
}
console.log(JSON.stringify(out));
