// flock(2) for the event store's lock file: an advisory lock the kernel releases when its holder
// dies, so a crash (or a pid reused after one) can never leave the store locked.
#pragma once
#include <napi.h>

namespace navarch {

// Exports tryFlock(fd: number): boolean. LOCK_EX | LOCK_NB on fd: true when this open file now
// holds the lock, false when another one does (EWOULDBLOCK); throws with `code` on other errors.
// The lock is released by closing the fd (or by the process dying).
void InitFlock(Napi::Env env, Napi::Object exports);

}  // namespace navarch
