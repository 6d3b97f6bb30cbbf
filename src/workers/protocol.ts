// Messages between the main thread and kvserve's worker threads (structured-clone plain
// objects): the generic call/reply envelope every WorkerChannel uses, and what each worker
// adds to it.
import type { ForwardInput } from '../core/model.js';
import type { CacheSnapshot, SessionInfo } from '../core/kv/cache-stats.js';
import type { KvData, KvLayout } from '../core/kv/layout.js';
import type { DemotedEntry, PromotedEntry, TierEntryInfo } from '../core/kv/tiers/lower-tiers.js';
import type { RemoteStats } from '../core/kv/tiers/remote-store.js';
import type { EngineEvent, SchedulerLimits } from '../core/scheduler/events.js';
import type { GenerateRequest } from '../core/scheduler/sequence.js';
import type { BucketSnapshot } from '../metrics/buckets.js';
import type { ModelInfo } from '../runtime/load-model.js';
import type { ThreadPlan } from '../runtime/threads.js';

/** Method name → [arguments, result] of the calls a worker answers. */
export type Calls = Record<string, [unknown[], unknown]>;

export type CallMessage = { type: 'call'; id: number; method: string; args: unknown[] };

export type ReplyMessage =
  | { type: 'ready' }
  | { type: 'fatal'; message: string }
  | { type: 'result'; id: number; value: unknown }
  | { type: 'error'; id: number; message: string };

// ── the engine worker ────────────────────────────────────────────────────────────────────

export interface WorkerConfig {
  modelDir: string;
  onnxFile?: string | undefined;
  threads?: number | undefined;
  decodeThreads?: number | undefined;
  /** ORT_PREPACK (onnx-decoder.ts sessionOptions). */
  prepack?: boolean | undefined;
  kvCache: {
    maxBytes: number;
    blockSize: number;
    sessionTtlMs: number;
    admissionTimeoutMs: number;
    compressedMaxBytes: number;
    compressedDtype: 'int8' | 'float16' | 'off';
    dir?: string | undefined;
    diskMaxBytes: number;
    diskReadReserveBytes: number;
    tierNice: number;
    redisUrl?: string | undefined;
    redisTimeoutMs: number;
    redisMaxPendingBytes: number;
  };
  scheduler: SchedulerLimits;
  /** Start the prefill thread (prefill-thread.ts); unset: decided by the model's size. */
  prefillThread?: boolean | undefined;
  /** Obey {type: 'crash'} (EngineClient.crash): set by tests only, never from the service's configuration. */
  faultInjection?: boolean | undefined;
}

/** The engine thread's own figures, read at scrape time. */
export interface EngineStats {
  cache: CacheSnapshot;
  running: number;
  waiting: number;
  /** Per scheduler step, cumulative since the worker started. */
  steps: { batchSize: BucketSnapshot; durationSeconds: BucketSnapshot };
  /** The engine thread's V8 heap and garbage-collection pauses (by kind). */
  heap: { usedBytes: number; totalBytes: number; externalBytes: number; arrayBuffersBytes: number };
  /** The tiers below RAM, when any is on. */
  tiers: TierStats | undefined;
  gc: Record<string, BucketSnapshot>;
}

export type EngineCalls = {
  ping: [[], true];
  stats: [[], EngineStats];
  sessions: [[tenant: string], SessionInfo[]];
  session: [[tenant: string, id: string], SessionInfo | null];
  deleteSession: [[tenant: string, id: string], boolean];
};

export type EngineReady = {
  type: 'ready';
  info: ModelInfo;
  plan: ThreadPlan & { weightBytes: number };
  /** The tiers below RAM at start: entries found on disk, and files removed as unusable, by reason. */
  tiers: { entries: number; rejectedAtOpen: Record<string, number> } | undefined;
};

/** `crash`: fault injection, obeyed only with WorkerConfig.faultInjection (tests). */
export type ToEngine = { type: 'generate'; id: string; request: GenerateRequest } | { type: 'abort'; id: string } | { type: 'crash' };

/** Engine events in emission order (one message per scheduler step). */
export type FromEngine = { type: 'events'; events: EngineEvent[] };

// ── the prefill worker ───────────────────────────────────────────────────────────────────

export interface PrefillWorkerData {
  onnxPath: string;
  prepack?: boolean | undefined;
  /** Used when the graph's logits shape does not give it. */
  vocabSize: number;
}

export type PrefillReady = { type: 'ready'; layout: KvLayout; vocabSize: number };

export type PrefillCalls = {
  /** logits: batch × seqLen rows, or batch rows (each row's last position) with lastLogitsOnly. */
  forward: [[input: Omit<ForwardInput, 'singleThread'>], { logits: Float32Array; newKv: KvData[] }];
};

// ── the tokenizer worker ─────────────────────────────────────────────────────────────────

export interface TokenizerWorkerData {
  /** tokenizer.json and tokenizer_config.json, as the HTTP thread's tokenizer was built from. */
  tokenizerJson: object;
  tokenizerConfig: Record<string, unknown>;
}

export type TokenizerCalls = {
  encode: [[text: string], Int32Array];
};

// ── the tier worker ──────────────────────────────────────────────────────────────────────

export interface TierWorkerData {
  layout: KvLayout;
  /** The files whose bytes make the model fingerprint every stored entry carries. */
  onnxPath: string;
  tokenizerPath: string;
  /** The compressed RAM tier, or undefined when off. */
  compressed: { maxBytes: number; codec: 'int8' | 'float16' } | undefined;
  /** The disk tier, or undefined when off. */
  disk: { dir: string; maxBytes: number; readReserveBytes: number } | undefined;
  /** The shared tier in Redis, or undefined when off. */
  remote: { url: string; timeoutMs: number; maxPendingBytes: number } | undefined;
  /** The thread's nice value (KV_CACHE_TIER_NICE); unset: the process's. */
  nice?: number | undefined;
}

export interface TierStats {
  bytes: Record<'compressed' | 'disk', number>;
  capacityBytes: Record<'compressed' | 'disk', number>;
  /** "from>to" → entries moved down. */
  demotions: Record<string, number>;
  /** Demotions dropped because the tiers were too far behind (or an entry was larger than every budget). */
  dropped: number;
  diskRejected: Record<'fingerprint' | 'checksum' | 'truncated' | 'io', number>;
  diskWriteSeconds: BucketSnapshot;
  /** The shared tier, when configured. */
  remote: RemoteStats | undefined;
}

export type TierReady = { type: 'ready'; index: TierEntryInfo[]; rejectedAtOpen: Record<string, number> };

export type TierCalls = {
  fetch: [[keys: string[]], PromotedEntry[]];
  delete: [[keys: string[]], undefined];
  stats: [[], TierStats];
  /** Graceful stop: compressed entries go to disk, queued writes finish. */
  persist: [[], undefined];
};

/** Fire-and-forget: an entry RAM evicted, or one to share through the remote tier (its tensors' buffers transferred). */
export type ToTier = { type: 'demote' | 'publish'; entry: DemotedEntry; bytes: number };

/** Index changes (set: a key's fastest tier now; removed: in no tier), and demotions processed. */
export type FromTier = { type: 'index'; set: TierEntryInfo[]; removed: string[]; processedBytes: number };
