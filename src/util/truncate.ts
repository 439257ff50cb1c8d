/** The one rule for text from outside that reaches logs or /status: at most MAX_TEXT characters. */
export const MAX_TEXT = 300;

/** `s` unchanged when short, else its first `max` characters and "... (N bytes)". */
export function truncateText(s: string, max = MAX_TEXT): string {
  if (s.length <= max) return s;
  return `${s.slice(0, max)}... (${Buffer.byteLength(s)} bytes)`;
}
