// The choices of a response as they are built: each choice's text and logprobs (prompt ones
// first when echoed), in OpenAI's chat shape or the legacy completions shape, and the events of
// several engine generations (a batch of prompts) merged into one stream of choices.
import type { TokenLogprob } from '../core/sampling/logprobs.js';
import type { FinishReason } from '../core/scheduler/events.js';
import type { OutputPlan } from './fields.js';

/** One position's logprob as the API shows it: its token's text and bytes (null for the prompt's first token). */
export interface LogprobEntry {
  token: string;
  logprob: number | null;
  top: { token: string; logprob: number }[] | null;
}

const utf8 = new TextEncoder();
const bytesOf = (s: string): number[] => Array.from(utf8.encode(s));

export function entriesOf(decode: (id: number) => string, list: readonly TokenLogprob[] | undefined): LogprobEntry[] {
  return (list ?? []).map((l) => ({ token: decode(l.id), logprob: l.logprob, top: l.top.map((t) => ({ token: decode(t.id), logprob: t.logprob })) }));
}

/** The prompt's entries: the first token has no logprob (nothing precedes it). */
export function promptEntries(decode: (id: number) => string, promptIds: readonly number[], scores: readonly TokenLogprob[]): LogprobEntry[] {
  return [{ token: decode(promptIds[0]!), logprob: null, top: null }, ...entriesOf(decode, scores)];
}

/** OpenAI chat: `{content: [{token, logprob, bytes, top_logprobs}]}`. */
export function chatLogprobs(entries: readonly LogprobEntry[]) {
  return {
    content: entries.map((e) => ({
      token: e.token,
      logprob: e.logprob ?? 0,
      bytes: bytesOf(e.token),
      top_logprobs: (e.top ?? []).map((t) => ({ token: t.token, logprob: t.logprob, bytes: bytesOf(t.token) })),
    })),
  };
}

/** OpenAI completions (legacy): parallel arrays; `text_offset` counts characters from `offset`, the choice's text before these tokens. */
export function legacyLogprobs(entries: readonly LogprobEntry[], offset: number) {
  const text_offset: number[] = [];
  let at = offset;
  for (const e of entries) {
    text_offset.push(at);
    at += e.token.length;
  }
  return {
    tokens: entries.map((e) => e.token),
    token_logprobs: entries.map((e) => e.logprob),
    // The chosen token is listed with the alternatives, as vLLM and OpenAI's legacy API do.
    top_logprobs: entries.map((e) => (e.top === null ? null : Object.fromEntries([...e.top.map((t) => [t.token, t.logprob]), [e.token, e.logprob]]))),
    text_offset,
  };
}

/** One choice as it accumulates (non-streaming) or as much as was sent of it (streaming). */
export interface ChoiceState {
  text: string;
  entries: LogprobEntry[];
  finishReason: string | null;
  /** Nothing sent for it yet (the echoed prompt and a chat role go first). */
  fresh: boolean;
}

export const newChoice = (): ChoiceState => ({ text: '', entries: [], finishReason: null, fresh: true });

/** Mean token logprob of a finished choice: best_of keeps the n highest, as OpenAI ranks them. */
export function meanLogprob(c: ChoiceState, skip: number): number {
  const own = c.entries.slice(skip);
  return own.length === 0 ? 0 : own.reduce((s, e) => s + (e.logprob ?? 0), 0) / own.length;
}

/** Events of several iterators, as they come, tagged with the iterator's index. */
export async function* merge<T>(its: readonly AsyncIterator<T>[]): AsyncGenerator<[number, T], void, undefined> {
  const pull = (i: number) => its[i]!.next().then((r) => ({ i, r }));
  const pending = new Map(its.map((_, i) => [i, pull(i)]));
  while (pending.size > 0) {
    const { i, r } = await Promise.race(pending.values());
    if (r.done) {
      pending.delete(i);
      continue;
    }
    pending.set(i, pull(i));
    yield [i, r.value];
  }
}

/** How a route shapes its choices (completions' or chat's). */
export interface ChoiceFormat {
  idPrefix: string;
  object: string;
  chunkObject: string;
  /** The field whose length the context check names ('prompt' or 'messages'). */
  promptParam: string;
  choice(index: number, text: string, finishReason: FinishReason | null, logprobs: unknown): Record<string, unknown>;
  chunkChoice(index: number, text: string, finishReason: FinishReason | null, first: boolean, logprobs: unknown): Record<string, unknown>;
  /** Logprob entries in the route's shape; `offset`: characters of the choice before them. */
  logprobs(entries: readonly LogprobEntry[], offset: number): unknown;
}

/** The response's choices in order; with best_of, the n of each prompt's with the highest mean logprob, renumbered. */
export function pick(
  choices: Map<number, ChoiceState>,
  /** Per prompt: how many leading entries are the echoed prompt's (not ranked). */
  skips: readonly number[],
  plan: OutputPlan,
  format: ChoiceFormat,
): Record<string, unknown>[] {
  const out: Record<string, unknown>[] = [];
  for (const [p, skip] of skips.entries()) {
    let group = Array.from({ length: plan.generated }, (_, k) => choices.get(p * plan.generated + k) ?? newChoice());
    if (plan.generated > plan.n) {
      // Ranked on the completion alone: an echoed prompt's entries are the same in every choice.
      group = group.sort((a, b) => meanLogprob(b, skip) - meanLogprob(a, skip)).slice(0, plan.n);
    }
    for (const c of group)
      out.push(format.choice(out.length, c.text, c.finishReason as FinishReason | null, plan.logprobs === undefined ? null : format.logprobs(c.entries, 0)));
  }
  return out;
}
