// The real entry point (src/main.ts) as a child process: it becomes ready, drains running streams
// on SIGTERM (finishing them within the grace period, ending them after it), exits 0, refuses new
// work while stopping, and fails fast with one clear line on bad configuration.
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import http from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import t, { type Test } from 'tap';
import { ENV_VARS } from '../src/config.js';
import { waitFor } from './helpers/poll.js';
import { bearer, keyFile } from './helpers/keys.js';
import { freePort } from './helpers/net.js';
import { finishReasons, readSse } from './helpers/sse.js';

const root = fileURLToPath(new URL('..', import.meta.url));

interface Service {
  child: ChildProcess;
  url: string;
  /** Parsed JSON log lines from stdout, in order. */
  logs: Array<Record<string, unknown>>;
  stdout: () => string;
  stderr: () => string;
  /** Resolves with the exit code (null when killed by a signal). */
  exited: Promise<number | null>;
}

/** Starts `node --no-concurrent-marking --import tsx src/main.ts` (as npm start runs it) with the given variables on top of a clean environment. */
function launch(t: Test, env: Record<string, string>, port: number): Service {
  const base = { ...process.env };
  for (const name of [...Object.keys(ENV_VARS), 'NODE_OPTIONS']) delete base[name];
  const child = spawn(process.execPath, ['--no-concurrent-marking', '--import', 'tsx', 'src/main.ts'], {
    cwd: root,
    env: { ...base, PORT: String(port), HOST: '127.0.0.1', LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  const logs: Array<Record<string, unknown>> = [];
  let pending = '';
  child.stdout!.setEncoding('utf8').on('data', (text: string) => {
    out += text;
    pending += text;
    const lines = pending.split('\n');
    pending = lines.pop()!;
    for (const line of lines) {
      try {
        logs.push(JSON.parse(line) as Record<string, unknown>);
      } catch {
        // not a log line
      }
    }
  });
  child.stderr!.setEncoding('utf8').on('data', (text: string) => (err += text));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await exited;
    }
  });
  return { child, url: `http://127.0.0.1:${port}`, logs, stdout: () => out, stderr: () => err, exited };
}

async function start(t: Test, env: Record<string, string> = {}): Promise<Service> {
  const service = launch(t, env, await freePort());
  let exitCode: number | null | undefined;
  void service.exited.then((code) => (exitCode = code));
  await waitFor(
    '/health/ready to answer 200',
    async () => {
      if (exitCode !== undefined) throw new Error(`the service exited (${exitCode}) before it was ready:\n${service.stderr()}`);
      const res = await fetch(`${service.url}/health/ready`).catch(() => undefined);
      return res?.status === 200;
    },
    { timeoutMs: 60_000, intervalMs: 50 },
  );
  return service;
}

/** Starts a streaming completion; `first` resolves when its first data event arrives. */
function stream(service: Service, body: Record<string, unknown>, headers: Record<string, string> = {}) {
  let firstSeen!: () => void;
  const first = new Promise<void>((resolve) => (firstSeen = resolve));
  const done = fetch(`${service.url}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify({ prompt: 'ROMEO:\n', ignore_eos: true, stream: true, ...body }),
  })
    .then(async (res) => ({ status: res.status, ...(await readSse(res.body, () => firstSeen())) }))
    .catch((error: Error) => ({ status: 0, events: [] as string[], error }))
    .finally(() => firstSeen()); // never leave a test waiting on a stream that failed
  return { first, done };
}

const logged = (service: Service, msg: string) => waitFor(`the '${msg}' log line`, () => service.logs.find((l) => l.msg === msg));

t.test('SIGTERM lets running streams finish within the grace period, then exits 0', async (t) => {
  const service = await start(t, { SHUTDOWN_GRACE_MS: '5000' });
  const a = stream(service, { max_tokens: 30 });
  const b = stream(service, { max_tokens: 30 });
  await Promise.all([a.first, b.first]);
  service.child.kill('SIGTERM');

  // (c) once shutdown has begun, new work is refused: 503, or the connection is refused.
  await logged(service, 'shutting down');
  const late = await fetch(`${service.url}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ prompt: 'ROMEO:\n', max_tokens: 5 }),
  }).then(
    (res) => `status ${res.status}`,
    (err: Error & { cause?: { code?: string } }) => `error ${err.cause?.code ?? err.message}`,
  );
  t.match(late, /^(status 503|error (ECONNREFUSED|ECONNRESET|UND_ERR_SOCKET))$/, `a request after SIGTERM is refused (${late})`);

  for (const [name, s] of [
    ['first', a],
    ['second', b],
  ] as const) {
    const r = await s.done;
    t.equal(r.status, 200, `${name} stream: 200`);
    t.equal(r.error, undefined, `${name} stream: read to the end without a transport error`);
    t.equal(r.events.at(-1), '[DONE]', `${name} stream: ends with [DONE]`);
    const reasons = finishReasons(r.events);
    t.equal(reasons.at(-1), 'length', `${name} stream: its last chunk finishes normally (within the grace)`);
    t.strictSame(
      reasons.slice(0, -1).filter((x) => x !== null),
      [],
      `${name} stream: only the last chunk has a finish_reason`,
    );
  }
  t.equal(await service.exited, 0, 'exit code 0');
  t.ok(
    service.logs.some((l) => l.msg === 'stopped'),
    "logged 'stopped'",
  );
});

t.test('when the grace period expires, running streams are ended with a final chunk', async (t) => {
  const service = await start(t, { SHUTDOWN_GRACE_MS: '200' });
  const s = stream(service, { max_tokens: 2000 });
  await s.first;
  service.child.kill('SIGTERM');
  const r = await s.done;
  t.equal(r.status, 200);
  t.equal(r.error, undefined, 'read to the end without a transport error');
  t.equal(r.events.at(-1), '[DONE]', 'ends with [DONE]');
  const reasons = finishReasons(r.events);
  t.ok(reasons.length < 2000, `cut short (${reasons.length} chunks)`);
  t.equal(reasons.at(-1), 'abort', 'the final chunk says why it ended');
  t.equal(await service.exited, 0, 'exit code 0');
});

t.test('shutdown does not wait for a client to drop its idle keep-alive connection', async (t) => {
  const service = await start(t, { SHUTDOWN_GRACE_MS: '5000' });
  // Like many HTTP clients, this agent keeps idle connections open until the server closes them.
  const agent = new http.Agent({ keepAlive: true });
  t.teardown(() => agent.destroy());
  const req = http.request(`${service.url}/v1/completions`, { method: 'POST', agent, headers: { 'content-type': 'application/json' } });
  req.end(JSON.stringify({ prompt: 'ROMEO:\n', max_tokens: 30, ignore_eos: true, stream: true }));
  const [res] = (await once(req, 'response')) as [http.IncomingMessage];
  let signalled = false;
  const r = await readSse(res, () => {
    if (!signalled) service.child.kill('SIGTERM');
    signalled = true;
  });
  t.equal(r.events.at(-1), '[DONE]', 'the stream completes within the grace');
  // The connection is now idle in the agent's pool. A deadline (not a speed check): Fastify's own
  // keep-alive timeout is 72 s, so a service that waits for the client would still be running.
  const outcome = await Promise.race([service.exited, sleep(20_000).then(() => 'still running 20 s after the stream ended')]);
  t.equal(outcome, 0, 'exits 0 while the client still holds the idle connection');
});

t.test('a bad config value exits non-zero with exactly one stderr line naming it', async (t) => {
  const service = launch(t, { PORT: 'abc' }, 0);
  const code = await service.exited;
  t.not(code, 0, `exit code ${code}`);
  t.not(code, null, 'exited by itself, not by a signal');
  const lines = service
    .stderr()
    .split('\n')
    .filter((l) => l.trim() !== '');
  t.equal(lines.length, 1, `one stderr line: ${JSON.stringify(service.stderr())}`);
  t.match(lines[0], 'PORT');
  t.equal(service.stdout(), '', 'nothing on stdout');
});

t.test('a missing model directory exits non-zero with a log line naming it', async (t) => {
  const dir = `/nonexistent/kvserve-test-model-${process.pid}`;
  const service = launch(t, { MODEL_DIR: dir }, await freePort());
  const code = await service.exited;
  t.not(code, 0, `exit code ${code}`);
  t.not(code, null, 'exited by itself, not by a signal');
  const line = service.logs.find((l) => typeof l.msg === 'string' && l.msg.includes(dir));
  t.ok(line, `a log line names ${dir}: ${service.stdout()}`);
  t.equal(line?.level, 60, 'at fatal level');
});

t.test('a bad API key file exits non-zero with exactly one stderr line naming the problem', async (t) => {
  const file = keyFile(t, { keys: [{ tenant: 'a', key: 'sk-never-shown', sha256: 'ab' }] });
  const service = launch(t, { API_KEYS_FILE: file.path }, await freePort());
  const code = await service.exited;
  t.equal(code, 1, 'exit code 1');
  const lines = service
    .stderr()
    .split('\n')
    .filter((l) => l.trim() !== '');
  t.equal(lines.length, 1, `one stderr line: ${JSON.stringify(service.stderr())}`);
  t.match(lines[0], `API_KEYS_FILE ${file.path}: keys[0]`);
  t.notMatch(service.stderr() + service.stdout(), 'sk-never-shown', 'the key is not shown');
});

t.test('without keys, listening beyond loopback logs a warning; on loopback it does not', async (t) => {
  const open = launch(t, { HOST: '0.0.0.0', MODEL_DIR: '/nonexistent/kvserve-no-model' }, await freePort());
  await open.exited;
  t.ok(
    open.logs.some((l) => l.level === 40 && String(l.msg).includes('without API keys')),
    'the warning on 0.0.0.0',
  );
  const local = launch(t, { MODEL_DIR: '/nonexistent/kvserve-no-model' }, await freePort());
  await local.exited;
  t.notOk(
    local.logs.some((l) => String(l.msg).includes('without API keys')),
    'none on 127.0.0.1',
  );
});

t.test('SIGHUP reloads the key file: a stream in flight goes on, a new key works, a removed key gets 401', async (t) => {
  const file = keyFile(t, {
    keys: [
      { tenant: 'a', key: 'sk-a' },
      { tenant: 'b', key: 'sk-b' },
    ],
  });
  const service = await start(t, { API_KEYS_FILE: file.path });
  const models = (key: string) => fetch(`${service.url}/v1/models`, { headers: bearer(key) }).then((r) => r.status);
  t.equal(await models('sk-b'), 200, 'b works before');
  t.equal(await models('sk-c'), 401, 'c is unknown before');
  const s = stream(service, { max_tokens: 400 }, bearer('sk-a'));
  await s.first;

  file.write({
    keys: [
      { tenant: 'a', key: 'sk-a' },
      { tenant: 'c', key: 'sk-c' },
    ],
  });
  service.child.kill('SIGHUP');
  await logged(service, 'API keys reloaded');
  t.equal(await models('sk-c'), 200, 'the new key works');
  t.equal(await models('sk-b'), 401, 'the removed key gets 401');

  // A broken file on the next SIGHUP keeps the keys in force.
  file.write('{ not json');
  service.child.kill('SIGHUP');
  await waitFor('the reload error', () => service.logs.find((l) => String(l.msg).startsWith('API keys not reloaded')));
  t.equal(await models('sk-c'), 200, 'after a bad reload, the keys in force stay');

  const r = await s.done;
  t.equal(r.status, 200);
  t.equal(r.error, undefined, 'the stream was not dropped');
  t.equal(r.events.at(-1), '[DONE]');
  t.equal(finishReasons(r.events).at(-1), 'length', 'it ran to its length');
  t.equal(service.child.exitCode, null, 'the process is still running');
});
