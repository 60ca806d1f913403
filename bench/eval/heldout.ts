// Fetches the held-out repositories (training/data.py HELDOUT_PY / HELDOUT_JS: never
// trained on) into a cache folder, once: the JS/TS packages with `npm pack` at pinned
// versions, the Python ones as Debian packages (`apt-get download` + `dpkg -x`). A
// second run finds them unpacked and fetches nothing.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { jsPackage, pythonPackage, type Repo } from './sources.js';

/** The JS/TS held-out packages, pinned so every run reads the same code. */
export const HELDOUT_NPM: Record<string, string> = {
  zod: '4.6.7',
  commander: '15.1.0',
  immer: '11.2.14',
  marked: '18.2.1',
  ws: '8.23.1',
};

/** Debian packages holding the Python held-out packages (HELDOUT_PY: their top-level folders). */
export const HELDOUT_APT = [
  'python3-click',
  'python3-requests',
  'python3-rich',
  'python3-tabulate',
  'python3-networkx',
  'python3-sympy',
  'python3-attr',
  'python3-urllib3',
  'python3-yarl',
  'python3-multidict',
];
export const HELDOUT_PY = ['sympy', 'networkx', 'click', 'requests', 'rich', 'tabulate', 'yarl', 'attr', 'attrs', 'urllib3', 'multidict'];

export function defaultCacheDir(): string {
  return path.join(process.env.XDG_CACHE_HOME ?? path.join(os.homedir(), '.cache'), 'panorama', 'eval');
}

type Log = (message: string) => void;

const run = (command: string, args: string[], cwd: string) => execFileSync(command, args, { cwd, stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8' });

function commandExists(command: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${command}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** `npm pack NAME@VERSION` unpacked into cache/npm/NAME@VERSION (the tarball's package/ folder). */
function fetchNpm(cache: string, name: string, version: string, log: Log): string {
  const dir = path.join(cache, 'npm', `${name}@${version}`);
  if (existsSync(path.join(dir, 'package.json'))) return dir;
  const work = path.join(cache, 'npm', `.${name}@${version}.partial`);
  rmSync(work, { recursive: true, force: true });
  mkdirSync(work, { recursive: true });
  log(`eval: npm pack ${name}@${version}`);
  const tarball =
    run('npm', ['pack', `${name}@${version}`, '--silent'], work)
      .trim()
      .split('\n')
      .pop() ?? '';
  run('tar', ['-xzf', tarball], work);
  // Renamed only when complete: an interrupted fetch is redone, never half-read.
  rmSync(dir, { recursive: true, force: true });
  renameSync(path.join(work, 'package'), dir);
  rmSync(work, { recursive: true, force: true });
  return dir;
}

/** Every Debian package downloaded and unpacked into cache/apt/root (the dist-packages folder returned). */
function fetchApt(cache: string, log: Log): string | undefined {
  const root = path.join(cache, 'apt', 'root');
  const distPackages = path.join(root, 'usr', 'lib', 'python3', 'dist-packages');
  const done = path.join(cache, 'apt', 'done');
  if (existsSync(done)) return distPackages;
  if (!commandExists('apt-get') || !commandExists('dpkg')) {
    log('eval: apt-get or dpkg is missing: the Python held-out packages are skipped (on Debian or Ubuntu they are fetched with apt-get download).');
    return undefined;
  }
  const debs = path.join(cache, 'apt', 'debs');
  mkdirSync(debs, { recursive: true });
  const download = () => run('apt-get', ['download', ...HELDOUT_APT], debs);
  log(`eval: apt-get download ${HELDOUT_APT.join(' ')}`);
  try {
    download();
  } catch {
    // A machine whose package lists were never fetched knows no versions yet.
    log('eval: apt-get download failed; running apt-get update once and trying again');
    try {
      run('apt-get', ['update'], debs);
      download();
    } catch (err) {
      log(`eval: apt-get download failed (${firstLine(err)}): the Python held-out packages are skipped. Run \`apt-get update\` as root, then run again.`);
      return undefined;
    }
  }
  for (const deb of readdirSync(debs).filter((f) => f.endsWith('.deb'))) run('dpkg', ['-x', deb, root], debs);
  writeFileSync(done, `${new Date().toISOString()}\n`);
  return distPackages;
}

function firstLine(err: unknown): string {
  const text = err instanceof Error ? (err as { stderr?: string }).stderr || err.message : String(err);
  return text.trim().split('\n')[0];
}

/** The version in the package's metadata folder name (click-8.1.3.egg-info; attr's is attrs'). */
function pythonVersion(distPackages: string, top: string): string | undefined {
  const project = top === 'attr' ? 'attrs' : top;
  const meta = readdirSync(distPackages).find((f) => f.startsWith(`${project}-`) && /\.(dist|egg)-info$/.test(f));
  return meta?.slice(project.length + 1).replace(/\.(dist|egg)-info$/, '');
}

/**
 * The held-out repositories, fetched into `cache` where they are not yet, each read
 * with the training corpus's file selection (sources.ts). Python first, then JS,
 * as training/prep.py lists them.
 */
export function heldoutRepos(cache: string = defaultCacheDir(), log: Log = () => {}): Repo[] {
  mkdirSync(cache, { recursive: true });
  const seen = new Set<string>();
  const repos: Repo[] = [];
  const distPackages = fetchApt(cache, log);
  if (distPackages && existsSync(distPackages)) {
    for (const top of HELDOUT_PY) {
      const dir = [path.join(distPackages, top), path.join(distPackages, `${top}.py`)].find((d) => existsSync(d));
      if (dir) repos.push({ ...pythonPackage(dir, seen), version: pythonVersion(distPackages, top) });
    }
  }
  for (const [name, version] of Object.entries(HELDOUT_NPM)) {
    try {
      repos.push(jsPackage(fetchNpm(cache, name, version, log), seen));
    } catch (err) {
      log(`eval: npm pack ${name}@${version} failed (${firstLine(err)}): ${name} is skipped.`);
    }
  }
  return repos.filter((r) => r.files.length > 0);
}
