// The dynamic section of a 64-bit little-endian ELF shared library: which libraries it
// needs (DT_NEEDED), its own soname and its search path. Enough to tell a user which
// CUDA library is missing before onnxruntime's dlopen fails with a one-name error.
// Reads only the headers and the string table, not the whole file (the CUDA provider
// is 229 MB).
import fs from 'node:fs';

export interface DynamicInfo {
  needed: string[];
  soname?: string;
  /** DT_RUNPATH (or the older DT_RPATH), ':'-separated, $ORIGIN unexpanded. */
  runpath?: string;
}

const PT_LOAD = 1;
const PT_DYNAMIC = 2;
const DT = { NULL: 0n, NEEDED: 1n, STRTAB: 5n, STRSZ: 10n, SONAME: 14n, RPATH: 15n, RUNPATH: 29n } as const;

export class ElfError extends Error {}

function readAt(fd: number, position: number, length: number): Buffer {
  const buffer = Buffer.alloc(length);
  const read = fs.readSync(fd, buffer, 0, length, position);
  if (read < length) throw new ElfError(`truncated at byte ${position + read}`);
  return buffer;
}

export function readDynamicInfo(file: string): DynamicInfo {
  const fd = fs.openSync(file, 'r');
  try {
    const header = readAt(fd, 0, 64);
    if (header.readUInt32BE(0) !== 0x7f454c46) throw new ElfError(`${file} is not an ELF file`);
    if (header[4] !== 2 || header[5] !== 1) throw new ElfError(`${file} is not a 64-bit little-endian ELF file`);
    const phOffset = Number(header.readBigUInt64LE(32));
    const phSize = header.readUInt16LE(54);
    const phCount = header.readUInt16LE(56);
    const table = readAt(fd, phOffset, phSize * phCount);
    const loads: { vaddr: bigint; offset: bigint; size: bigint }[] = [];
    let dynamic: { offset: number; size: number } | undefined;
    for (let i = 0; i < phCount; i++) {
      const at = i * phSize;
      const type = table.readUInt32LE(at);
      const offset = table.readBigUInt64LE(at + 8);
      const vaddr = table.readBigUInt64LE(at + 16);
      const fileSize = table.readBigUInt64LE(at + 32);
      if (type === PT_LOAD) loads.push({ vaddr, offset, size: fileSize });
      if (type === PT_DYNAMIC) dynamic = { offset: Number(offset), size: Number(fileSize) };
    }
    if (!dynamic) return { needed: [] }; // a static executable
    const entries = readAt(fd, dynamic.offset, dynamic.size);
    const strings: { needed: bigint[]; soname?: bigint; runpath?: bigint; rpath?: bigint } = { needed: [] };
    let strtab: bigint | undefined;
    let strsz = 0;
    for (let at = 0; at + 16 <= entries.length; at += 16) {
      const tag = entries.readBigInt64LE(at);
      const value = entries.readBigUInt64LE(at + 8);
      if (tag === DT.NULL) break;
      if (tag === DT.NEEDED) strings.needed.push(value);
      else if (tag === DT.STRTAB) strtab = value;
      else if (tag === DT.STRSZ) strsz = Number(value);
      else if (tag === DT.SONAME) strings.soname = value;
      else if (tag === DT.RUNPATH) strings.runpath = value;
      else if (tag === DT.RPATH) strings.rpath = value;
    }
    if (strtab === undefined) throw new ElfError(`${file} has a dynamic section without a string table`);
    // DT_STRTAB is a virtual address: map it to a file offset through the segment that loads it.
    const segment = loads.find((load) => strtab! >= load.vaddr && strtab! < load.vaddr + load.size);
    if (!segment) throw new ElfError(`${file}: the string table is outside every loaded segment`);
    const names = readAt(fd, Number(strtab - segment.vaddr + segment.offset), strsz);
    const text = (offset: bigint): string => {
      const start = Number(offset);
      const end = names.indexOf(0, start);
      return names.toString('utf8', start, end < 0 ? names.length : end);
    };
    const runpath = strings.runpath ?? strings.rpath;
    return {
      needed: strings.needed.map(text),
      soname: strings.soname === undefined ? undefined : text(strings.soname),
      runpath: runpath === undefined ? undefined : text(runpath),
    };
  } finally {
    fs.closeSync(fd);
  }
}
