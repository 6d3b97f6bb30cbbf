// The README is part of the interface: every error code of the catalog and every
// configuration variable is documented there, so clients and operators can rely on them.
import t from 'tap';
import { readFileSync } from 'node:fs';
import { ENV_VARS } from '../src/config.js';
import { catalog } from '../src/errors.js';

const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');

t.test('every error of the catalog is in the README error table', async (t) => {
  for (const [name, entry] of Object.entries(catalog)) {
    t.ok(entry.status >= 400 && entry.status < 600, `${name}: an error status`);
    const code = entry.code ?? name;
    t.match(readme, new RegExp(`\\|\\s*${entry.status}\\s*\\|\\s*\`${entry.type}\`\\s*\\|\\s*\`${code}\``), `${name}: ${entry.status} ${entry.type} ${code}`);
  }
});

t.test('every environment variable is in the README configuration table', async (t) => {
  for (const [variable, key] of Object.entries(ENV_VARS)) {
    t.match(readme, new RegExp(`\\|\\s*\`${variable}\`\\s*\\|\\s*\`${key.replace('.', '\\.')}\``), `${variable} → ${key}`);
  }
});
