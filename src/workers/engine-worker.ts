// Engine worker entry: onnxruntime's run() blocks its calling thread for the whole model call,
// so the model and the scheduler live here, off the HTTP thread. It loads the model, then
// serves generate/abort messages and the calls of EngineCalls.
import { join } from 'node:path';
import { PerformanceObserver, constants } from 'node:perf_hooks';
import { getHeapStatistics } from 'node:v8';
import { workerData } from 'node:worker_threads';
import { KvCacheManager } from '../core/kv/cache-manager.js';
import type { EngineEvent } from '../core/scheduler/events.js';
import { Scheduler } from '../core/scheduler/scheduler.js';
import { GrammarCache } from '../core/sampling/constraints.js';
import { tokenVocab } from '../core/sampling/grammar/index.js';
import { BucketHistogram, GC_BUCKETS } from '../metrics/buckets.js';
import { type ModelInfo, loadModel } from '../runtime/load-model.js';
import { readModelDir } from '../runtime/model-dir.js';
import { modelWeightBytes, planThreads } from '../runtime/threads.js';
import { PrefillThread } from './prefill-thread.js';
import { TierThread } from './tier-thread.js';
import type { EngineCalls, FromEngine, ToEngine, WorkerConfig } from './protocol.js';
import { fatal, ready, serve } from './serve.js';

const config = workerData as WorkerConfig;

/** This thread's garbage-collection pauses by kind: its pauses stall every running stream. */
function observeGc(): () => Record<string, ReturnType<BucketHistogram['snapshot']>> {
  const kinds: Record<number, string> = {
    [constants.NODE_PERFORMANCE_GC_MINOR]: 'minor',
    [constants.NODE_PERFORMANCE_GC_MAJOR]: 'major',
    [constants.NODE_PERFORMANCE_GC_INCREMENTAL]: 'incremental',
    [constants.NODE_PERFORMANCE_GC_WEAKCB]: 'weakcb',
  };
  // Every kind from the start, so a dashboard sees zeros rather than no series.
  const pauses = new Map<string, BucketHistogram>(Object.values(kinds).map((kind) => [kind, new BucketHistogram(GC_BUCKETS)]));
  new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) {
      const kind = kinds[(entry as unknown as { detail: { kind: number } }).detail.kind] ?? 'other';
      let h = pauses.get(kind);
      if (!h) {
        h = new BucketHistogram(GC_BUCKETS);
        pauses.set(kind, h);
      }
      h.observe(entry.duration / 1000);
    }
  }).observe({ entryTypes: ['gc'] });
  return () => Object.fromEntries([...pauses].map(([kind, h]) => [kind, h.snapshot()]));
}

/** The tiers below RAM, if the configuration turns any on. */
async function startTiers(info: ModelInfo): Promise<TierThread | undefined> {
  const { compressedDtype, compressedMaxBytes, dir, diskMaxBytes, diskReadReserveBytes, tierNice, redisUrl, redisTimeoutMs, redisMaxPendingBytes } =
    config.kvCache;
  const compressed = compressedDtype !== 'off' && compressedMaxBytes > 0 ? { maxBytes: compressedMaxBytes, codec: compressedDtype } : undefined;
  const disk = dir !== undefined ? { dir, maxBytes: diskMaxBytes, readReserveBytes: diskReadReserveBytes } : undefined;
  const remote = redisUrl !== undefined ? { url: redisUrl, timeoutMs: redisTimeoutMs, maxPendingBytes: redisMaxPendingBytes } : undefined;
  if (!compressed && !disk && !remote) return undefined;
  return TierThread.start({
    layout: info.layout,
    onnxPath: info.onnxPath,
    tokenizerPath: join(info.dir, 'tokenizer.json'),
    compressed,
    disk,
    remote,
    nice: tierNice,
  });
}

/** Structured outputs for this tokenizer; none (response_format refused) if its decoder is one the vocabulary reader does not know. */
function grammarsFor(tokenizerJson: object, eosIds: readonly number[]): GrammarCache | undefined {
  try {
    return new GrammarCache(tokenVocab(tokenizerJson, eosIds));
  } catch {
    return undefined;
  }
}

try {
  const files = readModelDir(config.modelDir, config.onnxFile);
  const weightBytes = modelWeightBytes(files.onnxPath);
  const plan = planThreads(config, weightBytes);
  const { decoder, tokenizer, info } = await loadModel(config.modelDir, { ...config, ...plan });
  const prefill = plan.prefillThread ? await PrefillThread.start(info.onnxPath, info.vocabSize, config.prepack) : undefined;
  const { kvCache } = config;
  const tiers = await startTiers(info);
  const cache = new KvCacheManager({ layout: info.layout, ...kvCache, tiers });
  let closing = false;
  // A thread of ours ending unasked fails this worker too: the client sees the engine fail as
  // one and restarts all of it, rather than serving on without prefill thread or tiers.
  const failWith = (failure: string): void => {
    if (closing) return;
    setImmediate(() => {
      throw new Error(failure);
    });
  };
  prefill?.onExit(failWith);
  tiers?.onExit(failWith);

  // A batched step emits one event per running sequence: they leave together, in one message,
  // once the step's synchronous work is done (the next model call is then already running).
  let pending: EngineEvent[] = [];
  const flush = (): void => {
    const events = pending;
    pending = [];
    port.post({ type: 'events', events });
  };
  const emit = (event: EngineEvent): void => {
    if (pending.length === 0) setImmediate(flush);
    pending.push(event);
  };

  const scheduler = new Scheduler(
    decoder,
    tokenizer,
    {
      eosIds: info.eosIds,
      contextLength: info.contextLength,
      cache,
      admissionTimeoutMs: kvCache.admissionTimeoutMs,
      limits: config.scheduler,
      prefillModel: prefill,
      grammars: grammarsFor(files.tokenizerJson as object, info.eosIds),
    },
    emit,
  );
  // Idle sessions expire even when no request arrives to trigger the sweep.
  setInterval(() => cache.expireSessions(), Math.min(kvCache.sessionTtlMs, 1000)).unref();
  const gcPauses = observeGc();
  const tierStats = async () => {
    if (!tiers?.alive) return undefined;
    const s = await tiers.stats().catch(() => undefined);
    return s && { ...s, dropped: s.dropped + tiers.dropped };
  };

  const port = serve<EngineCalls, ToEngine, FromEngine>(
    {
      ping: () => true,
      stats: async () => {
        const heap = getHeapStatistics();
        const memory = process.memoryUsage();
        return {
          cache: cache.snapshot(),
          running: scheduler.running,
          waiting: scheduler.waiting,
          steps: scheduler.stepStats(),
          heap: {
            usedBytes: heap.used_heap_size,
            totalBytes: heap.total_heap_size,
            externalBytes: heap.external_memory,
            arrayBuffersBytes: memory.arrayBuffers,
          },
          gc: gcPauses(),
          tiers: await tierStats(),
        };
      },
      sessions: (tenant) => cache.sessions(tenant),
      session: (tenant, id) => cache.session(tenant, id) ?? null,
      deleteSession: (tenant, id) => cache.deleteSession(tenant, id),
    },
    {
      onMessage: (msg) => {
        if (msg.type === 'abort') return scheduler.abort(msg.id);
        if (msg.type === 'crash') return config.faultInjection ? failWith('fault injection: the engine worker crashed on purpose') : undefined;
        if (!closing) return scheduler.submit(msg.id, msg.request);
        const usage = { promptTokens: msg.request.promptIds.length, completionTokens: 0, cachedTokens: 0 };
        emit({ type: 'done', id: msg.id, finishReason: 'error', text: '', usage, error: 'the engine is shutting down', errorCode: 'not_ready' });
      },
      // The thread must not be terminated inside an onnxruntime call (that aborts the whole
      // process): the running step finishes, the model is released, and the thread ends.
      onClose: async () => {
        closing = true;
        scheduler.abortAll();
        await scheduler.idle();
        // The aborted requests' last events leave now, not after the tiers have written.
        if (pending.length > 0) flush();
        // What RAM holds goes down to the tiers, so a restart with the same KV_CACHE_DIR reuses it.
        cache.demoteAll();
        await tiers?.persist().catch(() => {});
        await Promise.all([decoder.close(), prefill?.close(), tiers?.close()]);
        if (pending.length > 0) flush();
      },
    },
  );
  ready({
    info,
    plan: { ...plan, weightBytes },
    tiers: tiers && { entries: [...tiers.entries('prefix')].length + [...tiers.entries('session')].length, rejectedAtOpen: tiers.rejectedAtOpen },
  });
} catch (err) {
  fatal(err);
}
