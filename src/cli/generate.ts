// `npm run generate -- "ROMEO:"`: streams a completion from the configured model to stdout,
// through the same engine worker the service uses.
import { parseArgs } from 'node:util';
import { loadConfig } from '../config.js';
import { EngineClient, workerConfigOf } from '../workers/engine-client.js';

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    'max-tokens': { type: 'string', default: '200' },
    temperature: { type: 'string', default: '0.8' },
    'top-k': { type: 'string', default: '40' },
    'top-p': { type: 'string', default: '1' },
    seed: { type: 'string' },
    stop: { type: 'string', multiple: true },
  },
});

const config = loadConfig();
const prompt = positionals.join(' ') || 'ROMEO:';
const client = await EngineClient.start(workerConfigOf(config));
const controller = new AbortController();
process.once('SIGINT', () => controller.abort());
process.stdout.write(prompt);
const started = performance.now();
for await (const event of client.generate(
  {
    promptIds: client.tokenizer.encode(prompt),
    maxTokens: Number(values['max-tokens']),
    stop: values.stop ?? [],
    sampling: {
      temperature: Number(values.temperature),
      topK: Number(values['top-k']),
      topP: Number(values['top-p']),
      minP: 0,
      repetitionPenalty: 1,
      frequencyPenalty: 0,
      presencePenalty: 0,
      ...(values.seed !== undefined ? { seed: Number(values.seed) } : {}),
    },
  },
  controller.signal,
)) {
  if (event.type === 'admitted') continue;
  process.stdout.write(event.text);
  if (event.type === 'done') {
    const seconds = (performance.now() - started) / 1000;
    const { completionTokens } = event.usage;
    process.stderr.write(
      `\n\n[${event.finishReason}${event.error ? `: ${event.error}` : ''}] ${completionTokens} tokens in ${seconds.toFixed(2)} s (${(completionTokens / seconds).toFixed(0)} tokens/s)\n`,
    );
  }
}
await client.close();
