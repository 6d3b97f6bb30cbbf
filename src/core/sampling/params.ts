// The sampling parameters a request carries, their neutral defaults, and the check that
// every one is in range (the HTTP schema enforces the API's ranges; this guards the core).

export interface SamplingParams {
  temperature: number; // 0 => greedy (argmax, ties -> lowest id); so is any T whose 1/T overflows
  topK: number; // 0 => disabled
  topP: number; // 1 => disabled
  minP: number; // 0 => disabled (keep tokens with p >= minP * pMax)
  repetitionPenalty: number; // 1 => disabled; HF/CTRL style over prompt + generated tokens
  frequencyPenalty: number; // 0 => disabled; OpenAI style over generated tokens only
  presencePenalty: number; // 0 => disabled; OpenAI style over generated tokens only
  seed?: number; // same seed + same logits sequence => same tokens
}

export const defaultSampling: SamplingParams = Object.freeze({
  temperature: 1,
  topK: 0,
  topP: 1,
  minP: 0,
  repetitionPenalty: 1,
  frequencyPenalty: 0,
  presencePenalty: 0,
});

function isNum(v: unknown): v is number {
  return typeof v === 'number' && !Number.isNaN(v);
}

function reject(field: keyof SamplingParams, rule: string, value: unknown): never {
  throw new RangeError(`${field} ${rule} (got ${String(value)})`);
}

/** Throws a RangeError naming the offending field; the message is safe to return to clients. */
export function validateSampling(p: SamplingParams): void {
  const { temperature, topK, topP, minP, repetitionPenalty, frequencyPenalty, presencePenalty, seed } = p;
  if (!isNum(temperature) || !Number.isFinite(temperature) || temperature < 0) {
    reject('temperature', 'must be a finite number >= 0', temperature);
  }
  if (!Number.isSafeInteger(topK) || topK < 0) reject('topK', 'must be an integer >= 0', topK);
  if (!isNum(topP) || !(topP > 0 && topP <= 1)) reject('topP', 'must be in (0, 1]', topP);
  if (!isNum(minP) || !(minP >= 0 && minP <= 1)) reject('minP', 'must be in [0, 1]', minP);
  if (!isNum(repetitionPenalty) || !Number.isFinite(repetitionPenalty) || repetitionPenalty <= 0) {
    reject('repetitionPenalty', 'must be a finite number > 0', repetitionPenalty);
  }
  if (!isNum(frequencyPenalty) || !(frequencyPenalty >= -2 && frequencyPenalty <= 2)) {
    reject('frequencyPenalty', 'must be in [-2, 2]', frequencyPenalty);
  }
  if (!isNum(presencePenalty) || !(presencePenalty >= -2 && presencePenalty <= 2)) {
    reject('presencePenalty', 'must be in [-2, 2]', presencePenalty);
  }
  if (seed !== undefined && (!Number.isSafeInteger(seed) || seed < 0)) {
    reject('seed', 'must be a non-negative safe integer', seed);
  }
}
