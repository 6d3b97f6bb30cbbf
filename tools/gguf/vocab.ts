// The tokenizer metadata llama.cpp reads from a GGUF, built from a Hugging Face byte-level BPE
// tokenizer.json: `gpt2` tokens (already in GPT-2's byte-to-unicode form there), token types,
// the merges (none for kvserve's byte vocabularies: every byte is a token and stays one), and
// the special tokens' ids.
import type { MetaValue } from './gguf-writer.js';

// llama.cpp's token types.
const NORMAL = 1;
const CONTROL = 3;
const USER_DEFINED = 4;

interface TokenizerJson {
  model?: { type?: string; vocab?: Record<string, number>; merges?: (string | [string, string])[] };
  added_tokens?: { id: number; content: string; special?: boolean }[];
}

export interface GgufVocab {
  meta: [string, MetaValue][];
  tokens: string[];
}

/**
 * `vocabSize` is the model's (the embedding's rows): every id below it must have a token.
 * bos/eos come from config.json (or tokenizer_config's token names).
 */
export function vocabMetadata(
  tokenizer: TokenizerJson,
  tokenizerConfig: Record<string, unknown>,
  vocabSize: number,
  special: { bos: number | undefined; eos: number | undefined },
): GgufVocab {
  if (tokenizer.model?.type !== 'BPE' || !tokenizer.model.vocab) throw new Error('tokenizer.json: not a BPE tokenizer with a vocab');
  const tokens = new Array<string | undefined>(vocabSize);
  const types = new Int32Array(vocabSize).fill(NORMAL);
  for (const [text, id] of Object.entries(tokenizer.model.vocab)) {
    if (id >= vocabSize) throw new Error(`tokenizer.json: token id ${id} is beyond the model's ${vocabSize} rows`);
    tokens[id] = text;
  }
  for (const t of tokenizer.added_tokens ?? []) {
    if (t.id >= vocabSize) throw new Error(`tokenizer.json: added token id ${t.id} is beyond the model's ${vocabSize} rows`);
    tokens[t.id] = t.content;
    types[t.id] = t.special ? CONTROL : USER_DEFINED;
  }
  const missing = tokens.indexOf(undefined);
  if (missing >= 0) throw new Error(`tokenizer.json has no token for id ${missing} (the model has ${vocabSize})`);
  const merges = (tokenizer.model.merges ?? []).map((m) => (Array.isArray(m) ? m.join(' ') : m));
  const idOf = (name: unknown): number | undefined => {
    const id = typeof name === 'string' ? tokens.indexOf(name) : -1;
    return id >= 0 ? id : undefined;
  };
  const bos = special.bos ?? idOf(tokenizerConfig.bos_token);
  const eos = special.eos ?? idOf(tokenizerConfig.eos_token);
  const meta: [string, MetaValue][] = [
    ['tokenizer.ggml.model', { str: 'gpt2' }],
    ['tokenizer.ggml.pre', { str: 'default' }],
    ['tokenizer.ggml.tokens', { strs: tokens as string[] }],
    ['tokenizer.ggml.token_type', { i32s: types }],
    // llama.cpp refuses a gpt2 vocabulary without this key, even an empty one.
    ['tokenizer.ggml.merges', { strs: merges }],
    ['tokenizer.ggml.add_bos_token', { bool: tokenizerConfig.add_bos_token === true }],
    ['tokenizer.ggml.add_eos_token', { bool: false }],
  ];
  if (bos !== undefined) meta.push(['tokenizer.ggml.bos_token_id', { u32: bos }]);
  if (eos !== undefined) meta.push(['tokenizer.ggml.eos_token_id', { u32: eos }]);
  if (typeof tokenizerConfig.chat_template === 'string') meta.push(['tokenizer.chat_template', { str: tokenizerConfig.chat_template }]);
  return { meta, tokens: tokens as string[] };
}
