// The KV panel: polls GET /v1/kv once a second and shows the pool by kind, the tiers, reuse,
// evictions by reason (totals, and the change since the previous poll) and the caller's
// sessions, each with a delete button.
import type { KvResponse } from '../../src/http/schemas.js';
import { ApiError, call, callJson } from './api.js';
import { age, bytes, el, percent } from './format.js';

const POLL_MS = 1000;
const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;

function rows(list: HTMLElement, items: [string, string, HTMLElement?][]): void {
  list.replaceChildren(
    ...items.flatMap(([term, value, extra]) => {
      const dd = el('dd', value);
      if (extra) dd.append(extra);
      return [el('dt', term), dd];
    }),
  );
}

function meter(value: number, max: number, label: string): HTMLMeterElement {
  const m = el('meter');
  m.min = 0;
  m.max = Math.max(max, 1);
  m.value = value;
  m.setAttribute('aria-label', label);
  return m;
}

export class KvPanel {
  #previous: KvResponse['evictions']['count'] | undefined;
  #timer: number | undefined;
  /** Called with an ApiError when a poll is refused (the page shows it, e.g. a 401). */
  onError: (err: ApiError | undefined) => void = () => {};

  start(): void {
    void this.refresh();
  }

  async refresh(): Promise<void> {
    clearTimeout(this.#timer);
    try {
      const kv = await callJson<KvResponse>('/v1/kv');
      this.#render(kv);
      this.onError(undefined);
      $('kv-updated').textContent = `updated ${new Date().toLocaleTimeString()}`;
    } catch (err) {
      this.onError(err instanceof ApiError ? err : new ApiError(0, `KV panel: ${(err as Error).message}`, null));
    }
    this.#timer = window.setTimeout(() => void this.refresh(), POLL_MS);
  }

  #render(kv: KvResponse): void {
    const { pool, tiers } = kv;
    rows($('kv-pool'), [
      [
        'in use',
        `${bytes(pool.bytes)} of ${bytes(pool.capacity_bytes)} (${pool.pinned_entries} pinned)`,
        meter(pool.bytes, pool.capacity_bytes, 'pool bytes in use'),
      ],
      ...(['active', 'session', 'prefix'] as const).map((k): [string, string, HTMLElement] => [
        k,
        `${bytes(pool.by_kind[k].bytes)} · ${pool.by_kind[k].entries} ${pool.by_kind[k].entries === 1 ? 'entry' : 'entries'}`,
        meter(pool.by_kind[k].bytes, pool.capacity_bytes, `${k} bytes`),
      ]),
    ]);
    rows(
      $('kv-tiers'),
      (['ram', 'compressed', 'disk'] as const)
        .map((t): [string, string, HTMLElement?] => {
          const tier = tiers[t];
          return tier ? [t, `${bytes(tier.bytes)} of ${bytes(tier.capacity_bytes)}`, meter(tier.bytes, tier.capacity_bytes, `${t} tier bytes`)] : [t, 'off'];
        })
        .concat([
          [
            'remote',
            tiers.remote
              ? `${tiers.remote.connected ? 'connected' : 'disconnected'} · sent ${bytes(tiers.remote.sent_bytes)} · received ${bytes(tiers.remote.received_bytes)}`
              : 'off',
          ],
        ]),
    );
    rows($('kv-reuse'), [
      ['hit rate (prompt tokens)', `${percent(kv.hit_rate)} · ${kv.reused_tokens} reused, ${kv.computed_tokens} computed`],
      ['lookups', `${kv.lookups.hit} hit · ${kv.lookups.partial} partial · ${kv.lookups.miss} miss`],
      ['entries', `${pool.by_kind.active.entries + pool.by_kind.session.entries + pool.by_kind.prefix.entries}`],
    ]);
    const before = this.#previous;
    rows(
      $('kv-evictions'),
      (['lru', 'ttl', 'deleted'] as const).map((r): [string, string] => {
        const delta = before ? kv.evictions.count[r] - before[r] : 0;
        return [r, `${kv.evictions.count[r]} (${bytes(kv.evictions.bytes[r])})${delta > 0 ? ` +${delta}` : ''}`];
      }),
    );
    this.#previous = kv.evictions.count;
    this.#sessions(kv.sessions);
  }

  #sessions(sessions: KvResponse['sessions']): void {
    const body = $('kv-sessions').querySelector('tbody')!;
    if (sessions.length === 0) {
      const td = el('td', 'none');
      td.colSpan = 6;
      const tr = el('tr');
      tr.append(td);
      body.replaceChildren(tr);
      return;
    }
    body.replaceChildren(
      ...sessions.map((s) => {
        const tr = el('tr');
        tr.dataset.session = s.id;
        const del = el('button', '✕', 'delete');
        del.type = 'button';
        del.setAttribute('aria-label', `Delete session ${s.id}`);
        del.disabled = s.pinned;
        del.addEventListener('click', () => void this.#delete(s.id));
        const cell = el('td');
        cell.append(del);
        tr.append(el('td', s.id, 'id'), el('td', String(s.tokens)), el('td', bytes(s.bytes)), el('td', age(s.age_seconds)), el('td', s.tier), cell);
        return tr;
      }),
    );
  }

  async #delete(id: string): Promise<void> {
    try {
      await call(`/v1/sessions/${encodeURIComponent(id)}`, { method: 'DELETE' });
    } catch (err) {
      this.onError(err as ApiError);
    }
    await this.refresh();
  }
}
