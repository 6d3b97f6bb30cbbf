// The playground in real Chromium (Debian's, driven by playwright-core) against the real
// server and model: a streamed answer arrives in several DOM updates, a follow-up in the same
// session shows the cached part of its prompt with exactly the API's cached_tokens, the KV
// panel deletes the session, an API refusal shows its message, and the page fits 360 px.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { Page } from 'playwright-core';
import t, { type Test } from 'tap';
import { needs } from '../helpers/binaries.js';
import { postJson } from '../helpers/http.js';
import { startServer } from '../helpers/server.js';
import { buildWeb, launchChromium, SCREENSHOTS } from '../helpers/web.js';

// The functions passed to page.evaluate run in the page; the tests compile without DOM types.
declare const window: any;
declare const document: any;
declare const MutationObserver: any;
type HTMLElement = any;
type HTMLInputElement = any;

if (needs(t, 'chromium')) {
  buildWeb();
  const server = await startServer();
  t.teardown(() => server.close());
  const browser = await launchChromium();
  t.teardown(() => browser.close());

  /** A fresh page on the playground; console errors (a CSP violation is one) are collected for done(). */
  const open = async (t: Test, width = 1280): Promise<{ page: Page; done: () => Promise<void> }> => {
    const page = await browser.newPage({ viewport: { width, height: 900 } });
    const problems: string[] = [];
    page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
    page.on('console', (m) => {
      // The one expected console error: the test's own 400 (Chromium logs failed fetches).
      if (m.type() === 'error' && !/status of 400/.test(m.text())) problems.push(`console: ${m.text()}`);
    });
    t.teardown(() => page.close());
    const res = await page.goto(`${server.url}/`);
    t.equal(res?.status(), 200);
    await page.waitForSelector('#kv-updated:not(:empty)');
    return {
      page,
      done: async () => {
        t.strictSame(problems, [], 'no script errors, no CSP violations');
      },
    };
  };

  /** Records the last answer's text at every DOM mutation, with the entry's state then. */
  const watchAnswer = (page: Page) =>
    page.evaluate(() => {
      const w = window as unknown as { updates: { text: string; state: string }[] };
      w.updates = [];
      const transcript = document.getElementById('transcript')!;
      new MutationObserver(() => {
        const turn = transcript.lastElementChild as HTMLElement | null;
        const text = turn?.querySelector('.answer-text')?.textContent;
        if (turn && text) w.updates.push({ text, state: turn.dataset.state ?? '' });
      }).observe(transcript, { subtree: true, childList: true, characterData: true, attributes: true });
    });
  const updates = (page: Page) => page.evaluate(() => (window as unknown as { updates: { text: string; state: string }[] }).updates);

  /** The usage chunk of an SSE body. */
  const usageOf = (sse: string) => {
    const chunk = sse
      .split('\n')
      .filter((l) => l.startsWith('data: {'))
      .map((l) => JSON.parse(l.slice(6)))
      .find((e) => e.usage);
    return chunk?.usage as { prompt_tokens: number; completion_tokens: number; prompt_tokens_details: { cached_tokens: number } };
  };

  /** Types `text`, sends it with `keys`, waits for the answer; returns what went over the wire. */
  const send = async (page: Page, text: string, keys: string) => {
    const response = page.waitForResponse((r) => r.url().endsWith('/v1/chat/completions'));
    await page.fill('#prompt', text);
    await page.press('#prompt', keys);
    const res = await response;
    const n = await page.locator('#transcript > li').count();
    await page.waitForSelector(`#transcript > li:nth-child(${n})[data-state=done] .prompt-view`, { timeout: 120_000 });
    return {
      request: JSON.parse(res.request().postData()!),
      status: res.status(),
      usage: usageOf(await res.text()),
      turn: page.locator(`#transcript > li:nth-child(${n})`),
    };
  };

  t.test('a conversation: streamed, then a follow-up whose cached part is highlighted, then the session deleted from the panel', async (t) => {
    const { page, done } = await open(t);
    await page.fill('#max_tokens', '48');
    await page.fill('#seed', '11');
    const sessionId = await page.inputValue('#session-id');
    t.match(sessionId, /\S/, 'a session id is filled in');

    await watchAnswer(page);
    const first = await send(page, 'ROMEO:\nWhat light through yonder window breaks?', 'Control+Enter');
    t.equal(first.status, 200);
    t.equal(first.request.stream, true, 'streamed');
    t.equal(first.request.session_id, sessionId, 'in the session');
    t.equal(first.request.max_tokens, 48, 'with the controls');
    t.equal(first.request.seed, 11);
    const final = (await first.turn.locator('.answer-text').textContent())!;
    t.ok(final.length > 0, `answer: ${JSON.stringify(final)}`);
    const seen = await updates(page);
    const before = [...new Set(seen.filter((u) => u.state !== 'done').map((u) => u.text))];
    t.ok(before.length >= 3, `${before.length} distinct texts shown before the end`);
    t.ok(
      before.every((text) => final.startsWith(text)),
      'each a beginning of the answer (it grows)',
    );
    t.equal(first.usage.prompt_tokens_details.cached_tokens, 0, 'a cold first turn');

    const second = await send(page, 'Speak again, bright angel.', 'Meta+Enter');
    t.equal(second.request.session_id, sessionId, 'the same session');
    t.equal(second.request.messages.length, 3, 'the history and the new turn');
    const cached = second.usage.prompt_tokens_details.cached_tokens;
    t.ok(cached > 0, `the API reused ${cached} of ${second.usage.prompt_tokens} prompt tokens`);
    const mark = second.turn.locator('mark.cached');
    t.ok(await mark.isVisible(), 'the cached part is highlighted');
    t.equal(Number(await mark.getAttribute('data-cached-tokens')), cached, "the highlight's count is the API's cached_tokens");
    t.match(await second.turn.locator('.figures').textContent(), `(${cached} cached)`);
    t.match(await second.turn.locator('.figures').textContent(), /TTFT \d+ ms · [\d.]+ tokens\/s/, 'TTFT and tokens/s');
    // Independently: the first cached_tokens tokens of the prompt the server rendered, as text.
    const tokenized = await postJson(`${server.url}/tokenize`, { messages: second.request.messages, add_generation_prompt: true });
    t.equal(tokenized.json.count, second.usage.prompt_tokens, 'the same prompt as the request');
    const head = await postJson(`${server.url}/detokenize`, { tokens: tokenized.json.tokens.slice(0, cached) });
    t.equal(await mark.textContent(), head.json.prompt, 'the highlighted text is exactly the cached tokens');
    const rest = await postJson(`${server.url}/detokenize`, { tokens: tokenized.json.tokens.slice(cached) });
    t.equal(await second.turn.locator('.prompt-view .computed').textContent(), rest.json.prompt, 'and the rest follows it, not highlighted');

    const row = page.locator(`#kv-sessions tr[data-session="${sessionId}"]`);
    await row.waitFor();
    t.pass('the KV panel lists the session');
    mkdirSync(SCREENSHOTS, { recursive: true });
    await page.screenshot({ path: join(SCREENSHOTS, 'playground.png'), fullPage: true });

    await page.setViewportSize({ width: 360, height: 800 });
    const widths = await page.evaluate(() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]);
    t.ok(widths[0]! <= widths[1]!, `360 px wide, after a conversation: no horizontal scroll (${widths.join(' ≤ ')})`);
    await page.screenshot({ path: join(SCREENSHOTS, 'playground-360.png'), fullPage: true });
    await page.setViewportSize({ width: 1280, height: 900 });

    await page.getByRole('button', { name: `Delete session ${sessionId}` }).click();
    await row.waitFor({ state: 'detached' });
    const listed = (await (await fetch(`${server.url}/v1/sessions`)).json()) as { data: { id: string }[] };
    t.notOk(
      listed.data.some((s) => s.id === sessionId),
      'GET /v1/sessions no longer lists it',
    );
    await done();
  });

  t.test('completion mode: the text so far is continued, and the next prompt reuses the session', async (t) => {
    const { page, done } = await open(t);
    await page.check('input[name=mode][value=completion]');
    await page.fill('#max_tokens', '16');
    const sessionId = await page.inputValue('#session-id');
    const send = async (text: string) => {
      const response = page.waitForResponse((r) => r.url().endsWith('/v1/completions'));
      await page.fill('#prompt', text);
      await page.click('#send');
      const res = await response;
      const n = await page.locator('#transcript > li').count();
      await page.waitForSelector(`#transcript > li:nth-child(${n})[data-state=done] .prompt-view`, { timeout: 120_000 });
      return {
        request: JSON.parse(res.request().postData()!),
        usage: usageOf(await res.text()),
        answer: await page.locator(`#transcript > li:nth-child(${n}) .answer-text`).textContent(),
      };
    };
    const first = await send('KING HENRY:\nOnce more unto the breach');
    t.equal(first.request.prompt, 'KING HENRY:\nOnce more unto the breach');
    t.equal(first.request.session_id, sessionId);
    const second = await send('\n\nEXETER:\n');
    t.equal(second.request.prompt, `${first.request.prompt}${first.answer}\n\nEXETER:\n`, 'the prompt continues the text so far');
    t.ok(second.usage.prompt_tokens_details.cached_tokens > 0, `${second.usage.prompt_tokens_details.cached_tokens} tokens from the session`);
    t.equal(
      Number(await page.locator('#transcript > li:nth-child(2) mark.cached').getAttribute('data-cached-tokens')),
      second.usage.prompt_tokens_details.cached_tokens,
    );
    await done();
  });

  t.test("a refused request shows the API's error message", async (t) => {
    const { page, done } = await open(t);
    await page.fill('#temperature', '5');
    await page.fill('#prompt', 'Hello');
    await page.press('#prompt', 'Control+Enter');
    const box = page.locator('#error');
    await box.waitFor({ state: 'visible' });
    const api = await postJson(`${server.url}/v1/chat/completions`, { messages: [{ role: 'user', content: 'Hello' }], temperature: 5 });
    t.equal(api.status, 400);
    t.equal(await box.textContent(), api.json.error.message, `the page shows: ${api.json.error.message}`);
    t.equal(await box.getAttribute('data-status'), '400');
    t.equal(await page.locator('#transcript > li').count(), 0, 'no answer entry left behind');
    await done();
  });

  t.test('with API keys configured: a wrong key shows the 401 message, the right one is answered', async (t) => {
    const keyed = await startServer({ env: { API_KEY: 'sk-playground-test' } });
    t.teardown(() => keyed.close());
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    t.teardown(() => page.close());
    t.equal((await page.goto(`${keyed.url}/`))?.status(), 200, 'the page itself needs no key');
    // The script is running once the KV panel's first poll was refused (it needs a key too).
    await page.locator('#kv-error').waitFor({ state: 'visible' });
    const focused = () => page.evaluate(() => document.activeElement?.id ?? '');
    t.not(await focused(), 'api-key', "the panel's background refusal leaves the focus where it was");
    await page.fill('#api-key', 'sk-wrong');
    await page.fill('#prompt', 'Hello');
    await page.press('#prompt', 'Control+Enter');
    const box = page.locator('#error');
    await box.waitFor({ state: 'visible' });
    const res = await fetch(`${keyed.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: 'Bearer sk-wrong' },
      body: JSON.stringify({ messages: [{ role: 'user', content: 'Hello' }] }),
    });
    const api = { status: res.status, json: (await res.json()) as { error: { message: string } } };
    t.equal(api.status, 401);
    const shown = (await box.textContent()) ?? '';
    t.ok(shown.startsWith(api.json.error.message), `the page shows the API's message: ${shown}`);
    t.match(shown, /enter an API key/, 'and asks for a key');
    t.equal(await page.locator('#api-key').getAttribute('aria-invalid'), 'true', 'the key field is marked invalid');
    t.equal(await focused(), 'api-key', 'and has the focus: the refusal answered what the user sent');
    t.equal(await box.getAttribute('data-status'), '401');

    await page.fill('#api-key', 'sk-playground-test');
    await page.fill('#max_tokens', '8');
    await page.fill('#prompt', 'Hello');
    await page.press('#prompt', 'Control+Enter');
    await page.waitForSelector('#transcript > li[data-state="done"]');
    t.ok(((await page.locator('#transcript > li .answer-text').last().textContent()) ?? '').length > 0, 'with the right key the answer streams');
    t.notOk(await box.isVisible(), 'and the error is gone');
  });

  t.test('every control has a label; at 360 px nothing scrolls sideways', async (t) => {
    const { page, done } = await open(t, 360);
    const unlabelled = await page.evaluate(() =>
      [...document.querySelectorAll('input, textarea, button, select')]
        .filter((e: HTMLInputElement) => !(e.labels?.length || e.getAttribute('aria-label') || (e.tagName === 'BUTTON' && e.textContent?.trim())))
        .map((e: HTMLInputElement) => e.outerHTML),
    );
    t.strictSame(unlabelled, [], 'labelled controls');
    const widths = await page.evaluate(() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]);
    t.ok(widths[0]! <= widths[1]!, `no horizontal scroll (${widths.join(' ≤ ')})`);
    await done();
  });
}
