// Reads the Dockerfile and .dockerignore the way Docker does, for tests that replay the image
// build without a Docker engine. Only the instructions our Dockerfile uses are understood; any
// other one is an error, so the replay can never silently skip a step it does not know.

export interface Instruction {
  keyword: string;
  /** The arguments, as written (continuations joined). */
  args: string;
  line: number;
}

export interface CopyStep {
  from?: string;
  sources: string[];
  dest: string;
}

export interface Stage {
  base: string;
  name?: string;
  workdir: string;
  env: Record<string, string>;
  user?: string;
  /** COPY and RUN steps in order; RUN in shell form (a string) or exec form (an array). */
  steps: Array<{ copy: CopyStep } | { run: string | string[] }>;
  expose: string[];
  healthcheck?: { options: Record<string, string>; cmd: string[] };
  cmd?: string[];
}

const KNOWN = new Set(['FROM', 'ARG', 'WORKDIR', 'COPY', 'RUN', 'ENV', 'USER', 'EXPOSE', 'HEALTHCHECK', 'CMD', 'LABEL']);

/** Splits a Dockerfile into instructions: comments dropped, backslash continuations joined. */
export function instructions(text: string): Instruction[] {
  const out: Instruction[] = [];
  let pending: { text: string; line: number } | undefined;
  text.split('\n').forEach((raw, i) => {
    const line = raw.trimEnd();
    if (line.trimStart().startsWith('#')) return; // comments (and parser directives), even inside continuations
    if (pending === undefined) {
      if (line.trim() === '') return;
      pending = { text: '', line: i + 1 };
    }
    const continued = line.endsWith('\\');
    pending.text += `${continued ? line.slice(0, -1) : line} `;
    if (continued) return;
    const full = pending.text.trim();
    const at = full.search(/\s/);
    out.push({ keyword: full.slice(0, at < 0 ? undefined : at).toUpperCase(), args: at < 0 ? '' : full.slice(at).trim(), line: pending.line });
    pending = undefined;
  });
  if (pending) throw new Error(`line ${pending.line}: the file ends inside a continuation`);
  return out;
}

/** Exec form (a JSON array of strings), or undefined for shell form. */
function execForm(args: string): string[] | undefined {
  if (!args.startsWith('[')) return undefined;
  const parsed: unknown = JSON.parse(args);
  if (!Array.isArray(parsed) || !parsed.every((x) => typeof x === 'string')) throw new Error(`not an exec-form array: ${args}`);
  return parsed as string[];
}

/** Splits `--flag=value` options off the front of an instruction's arguments. */
function flags(args: string): { options: Record<string, string>; rest: string } {
  const options: Record<string, string> = {};
  let rest = args;
  for (let m = /^--([a-z-]+)=(\S+)\s*/.exec(rest); m; m = /^--([a-z-]+)=(\S+)\s*/.exec(rest)) {
    options[m[1]!] = m[2]!;
    rest = rest.slice(m[0].length);
  }
  return { options, rest };
}

/** `ENV a=1 b="two words"` and the legacy `ENV a 1`. */
function envPairs(args: string): Record<string, string> {
  const pairs: Record<string, string> = {};
  if (!/^[A-Za-z_][A-Za-z0-9_]*=/.test(args)) {
    const at = args.search(/\s/);
    pairs[args.slice(0, at)] = args.slice(at).trim();
    return pairs;
  }
  const re = /([A-Za-z_][A-Za-z0-9_]*)=("(?:[^"\\]|\\.)*"|\S*)\s*/gy;
  let consumed = 0;
  for (let m = re.exec(args); m && m[0] !== ''; m = re.exec(args)) {
    const value = m[2]!;
    pairs[m[1]!] = value.startsWith('"') ? (JSON.parse(value) as string) : value;
    consumed = re.lastIndex;
  }
  if (consumed !== args.length) throw new Error(`cannot read ENV ${args}`);
  return pairs;
}

/** The stages of a Dockerfile with what each one does. */
export function parseDockerfile(text: string): Stage[] {
  const stages: Stage[] = [];
  /** The current stage's build arguments (an ARG's scope is its stage). */
  let args = new Map<string, string>();
  for (const ins of instructions(text)) {
    if (!KNOWN.has(ins.keyword)) throw new Error(`line ${ins.line}: ${ins.keyword} is not replayed by the tests; teach test/helpers/dockerfile.ts about it`);
    if (ins.keyword === 'FROM') {
      const m = /^(\S+)(?:\s+AS\s+(\S+))?$/i.exec(ins.args);
      if (!m) throw new Error(`line ${ins.line}: cannot read FROM ${ins.args}`);
      stages.push({ base: m[1]!, ...(m[2] ? { name: m[2] } : {}), workdir: '/', env: {}, steps: [], expose: [] });
      args = new Map();
      continue;
    }
    const stage = stages.at(-1);
    if (!stage) throw new Error(`line ${ins.line}: ${ins.keyword} before FROM`);
    switch (ins.keyword) {
      case 'WORKDIR':
        stage.workdir = ins.args.startsWith('/') ? ins.args : `${stage.workdir.replace(/\/$/, '')}/${ins.args}`;
        break;
      case 'ARG': {
        // A build argument with its default (no --build-arg is passed when the tests replay).
        const m = /^([A-Za-z_][A-Za-z0-9_]*)(?:=(\S*))?$/.exec(ins.args);
        if (!m) throw new Error(`line ${ins.line}: cannot read ARG ${ins.args}`);
        args.set(m[1]!, m[2] ?? '');
        break;
      }
      case 'ENV':
        for (const [name, value] of Object.entries(envPairs(ins.args))) {
          stage.env[name] = value.replace(/\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?/g, (_, arg: string) => args.get(arg) ?? '');
        }
        break;
      case 'USER':
        stage.user = ins.args;
        break;
      case 'EXPOSE':
        stage.expose.push(...ins.args.split(/\s+/));
        break;
      case 'LABEL':
        break;
      case 'RUN':
        stage.steps.push({ run: execForm(ins.args) ?? ins.args });
        break;
      case 'COPY': {
        const { options, rest } = flags(ins.args);
        for (const name of Object.keys(options)) if (name !== 'from') throw new Error(`line ${ins.line}: COPY --${name} is not replayed`);
        const parts = execForm(rest) ?? rest.split(/\s+/);
        if (parts.length < 2) throw new Error(`line ${ins.line}: COPY needs a source and a destination`);
        if (parts.some((p) => /[*?[]/.test(p))) throw new Error(`line ${ins.line}: wildcards in COPY are not replayed`);
        stage.steps.push({ copy: { ...(options.from ? { from: options.from } : {}), sources: parts.slice(0, -1), dest: parts.at(-1)! } });
        break;
      }
      case 'HEALTHCHECK': {
        const { options, rest } = flags(ins.args);
        const m = /^CMD\s+(.*)$/s.exec(rest);
        if (!m) throw new Error(`line ${ins.line}: HEALTHCHECK without CMD`);
        const cmd = execForm(m[1]!);
        if (!cmd) throw new Error(`line ${ins.line}: HEALTHCHECK CMD in shell form is not replayed`);
        stage.healthcheck = { options, cmd };
        break;
      }
      case 'CMD': {
        const cmd = execForm(ins.args);
        if (!cmd) throw new Error(`line ${ins.line}: CMD in shell form: signals would go to /bin/sh, not to node`);
        stage.cmd = cmd;
        break;
      }
    }
  }
  return stages;
}

/**
 * `.dockerignore` as Docker reads it: one pattern a line, `#` comments, a leading `/` ignored,
 * `*` and `?` within a path segment, `**` across segments, `!` re-includes, the last match
 * wins, and a pattern that matches a directory excludes everything under it.
 */
export function dockerignore(text: string): (path: string) => boolean {
  const rules = text
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'))
    .map((l) => {
      const negate = l.startsWith('!');
      const pattern = (negate ? l.slice(1) : l).trim().replace(/^\/+/, '').replace(/\/+$/, '');
      let re = '';
      for (let i = 0; i < pattern.length; i++) {
        const c = pattern[i]!;
        if (c === '*' && pattern[i + 1] === '*') {
          re += '.*';
          i++;
          if (pattern[i + 1] === '/') i++;
        } else if (c === '*') re += '[^/]*';
        else if (c === '?') re += '[^/]';
        else re += c.replace(/[.+^${}()|[\]\\]/g, '\\$&');
      }
      return { negate, re: new RegExp(`^${re}$`) };
    });
  return (path) => {
    const parts = path.split('/');
    const prefixes = parts.map((_, i) => parts.slice(0, i + 1).join('/'));
    let excluded = false;
    for (const { negate, re } of rules) if (prefixes.some((p) => re.test(p))) excluded = !negate;
    return excluded;
  };
}
