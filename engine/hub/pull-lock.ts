// One pull of a commit at a time: two processes appending to the same `.part` would corrupt
// it. The lock is a file holding the owner's pid; a lock whose process is gone (a kill, a
// crash) is taken over, so a killed pull never blocks the next one.
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { HubError } from './hub-endpoint.js';

const LOCK = '.pull.lock';

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: it exists but belongs to someone else
    return typeof err === 'object' && err !== null && 'code' in err && err.code === 'EPERM';
  }
}

/** Takes the download folder's lock; the returned function releases it. */
export function lockDownload(dir: string, what: string): () => void {
  const file = path.join(dir, LOCK);
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      writeFileSync(file, String(process.pid), { flag: 'wx' });
      return () => rmSync(file, { force: true });
    } catch (err) {
      if (!(typeof err === 'object' && err !== null && 'code' in err && err.code === 'EEXIST')) throw err;
      const owner = Number(readFileSync(file, 'utf8').trim());
      if (Number.isInteger(owner) && owner > 0 && owner !== process.pid && alive(owner)) {
        throw new HubError(`another pull of ${what} is running (process ${owner}); wait for it, or stop it and run this again`);
      }
      rmSync(file, { force: true }); // left by a process that is gone
    }
  }
  throw new HubError(`could not lock ${dir} for the download of ${what}`);
}
