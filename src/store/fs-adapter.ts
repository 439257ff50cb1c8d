/**
 * The thin file-system layer under the event store. The default goes straight to node:fs; tests
 * may wrap it to inject failures where a real one (a full tmpfs) cannot be had.
 */
import * as fsp from 'node:fs/promises';
import { constants as C } from 'node:fs';

export interface StoreFile {
  /** Write all of `buf` at the end of the file (loops over short writes). */
  append(buf: Buffer): Promise<void>;
  datasync(): Promise<void>;
  truncate(len: number): Promise<void>;
  size(): Promise<number>;
  close(): Promise<void>;
}

export interface StoreFs {
  /** Open for appending, creating the file (mode 0600) if needed. */
  openAppend(path: string): Promise<StoreFile>;
  /** Create or truncate, for writing from the start (mode 0600). */
  createTruncate(path: string): Promise<StoreFile>;
  /** Whole file, or null when it does not exist. */
  readFile(path: string): Promise<Buffer | null>;
  /**
   * Open for reading in chunks, or null when it does not exist. Optional: without it the store
   * reads the log with readFile (a layer that only injects write failures need not have it).
   */
  openRead?(path: string): Promise<StoreReader | null>;
  rename(from: string, to: string): Promise<void>;
  /** Remove a file; a missing file is not an error. */
  unlink(path: string): Promise<void>;
  /** fsync a directory so a rename in it is durable. */
  fsyncDir(dir: string): Promise<void>;
  mkdirp(dir: string): Promise<void>;
}

export interface StoreReader {
  /** Read up to buf.length bytes at the current position; 0 at the end. */
  read(buf: Buffer): Promise<number>;
  close(): Promise<void>;
}

class NodeFile implements StoreFile {
  constructor(private readonly fh: fsp.FileHandle) {}
  async append(buf: Buffer): Promise<void> {
    let off = 0;
    while (off < buf.length) {
      const { bytesWritten } = await this.fh.write(buf, off, buf.length - off);
      if (bytesWritten <= 0) throw Object.assign(new Error('write returned 0 bytes'), { code: 'EIO' });
      off += bytesWritten;
    }
  }
  datasync(): Promise<void> {
    return this.fh.datasync();
  }
  truncate(len: number): Promise<void> {
    return this.fh.truncate(len);
  }
  async size(): Promise<number> {
    return (await this.fh.stat()).size;
  }
  close(): Promise<void> {
    return this.fh.close();
  }
}

export const nodeStoreFs: StoreFs = {
  async openAppend(path) {
    return new NodeFile(await fsp.open(path, C.O_WRONLY | C.O_APPEND | C.O_CREAT, 0o600));
  },
  async createTruncate(path) {
    return new NodeFile(await fsp.open(path, C.O_WRONLY | C.O_TRUNC | C.O_CREAT, 0o600));
  },
  async readFile(path) {
    try {
      return await fsp.readFile(path);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw e;
    }
  },
  async openRead(path) {
    let fh: fsp.FileHandle;
    try {
      // O_NONBLOCK: a FIFO put where the log belongs must not block the open.
      fh = await fsp.open(path, C.O_RDONLY | C.O_NONBLOCK);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw e;
    }
    return {
      read: async (buf) => (await fh.read(buf, 0, buf.length, null)).bytesRead,
      close: () => fh.close(),
    };
  },
  rename: (a, b) => fsp.rename(a, b),
  async unlink(path) {
    try {
      await fsp.unlink(path);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    }
  },
  async fsyncDir(dir) {
    const fh = await fsp.open(dir, C.O_RDONLY | C.O_DIRECTORY);
    try {
      await fh.sync();
    } finally {
      await fh.close();
    }
  },
  async mkdirp(dir) {
    await fsp.mkdir(dir, { recursive: true, mode: 0o700 });
  },
};
