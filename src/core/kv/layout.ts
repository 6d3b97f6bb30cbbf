// The shape of one model's KV cache and what it costs, derived from the graph's own inputs.
// Every byte figure the service reports (pool accounting, metrics, /v1/sessions) comes from here.

export type KvDType = 'float32' | 'float16';
/** float16 tensors travel as their raw bits (Node 20 has no Float16Array). */
export type KvData = Float32Array | Uint16Array;

export interface KvLayout {
  layers: number;
  kvHeads: number;
  headDim: number;
  dtype: KvDType;
}

export function bytesPerElement(dtype: KvDType): number {
  return dtype === 'float32' ? 4 : 2;
}

/** K and V for every layer: 2 × layers × kv_heads × head_dim × bytes per element. */
export function kvBytesPerToken(layout: KvLayout): number {
  return 2 * layout.layers * layout.kvHeads * layout.headDim * bytesPerElement(layout.dtype);
}

export function allocKv(dtype: KvDType, elements: number): KvData {
  return dtype === 'float32' ? new Float32Array(elements) : new Uint16Array(elements);
}
