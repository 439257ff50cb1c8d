/**
 * Sleeps that can be ended early: `sleep(ms)` resolves after ms or at `wakeAll()`, whichever comes
 * first; several callers may sleep at once. The timers are unref'd (they never keep a process alive).
 */
export class Sleeper {
  private readonly waiting = new Set<() => void>();
  sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.waiting.delete(done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      timer.unref?.();
      this.waiting.add(done);
    });
  }
  wakeAll(): void {
    for (const w of [...this.waiting]) w();
  }
}
