/**
 * The termination marker: `<stateDir>/terminated.json`, written when a TERMINATE command is
 * handled. While it exists a restarted agent does not register (a terminated node never comes
 * back as ACTIVE by itself); deleting it brings the node back.
 */
import { mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { FILE_LIMITS, readBoundedTextSync } from '../../util/bounded-file.js';

/** Exit status the owner should use after TERMINATE (see docs/controlplane.md). */
export const TERMINATE_EXIT_CODE = 0;
/** Marker written to the state dir on TERMINATE; while it exists the link does not register. */
export const TERMINATION_MARKER = 'terminated.json';

export interface TerminationMarker {
  commandId: string;
  nodeId: string;
  timeMs: number;
  reason: string;
}

export function terminationMarkerPath(stateDir: string): string {
  return join(stateDir, TERMINATION_MARKER);
}

/** The marker in stateDir, or null when there is none (or it cannot be read as JSON). */
export function readTerminationMarker(stateDir: string): TerminationMarker | null {
  try {
    const m = JSON.parse(readBoundedTextSync(terminationMarkerPath(stateDir), FILE_LIMITS.state)) as TerminationMarker;
    return typeof m === 'object' && m !== null ? m : null;
  } catch {
    return null;
  }
}

/** Writes the marker atomically (temp file, then rename); returns its path. Throws on I/O errors. */
export function writeTerminationMarker(stateDir: string, marker: TerminationMarker): string {
  const path = terminationMarkerPath(stateDir);
  mkdirSync(stateDir, { recursive: true });
  writeFileSync(path + '.tmp', JSON.stringify(marker) + '\n', { mode: 0o644 });
  renameSync(path + '.tmp', path);
  return path;
}
