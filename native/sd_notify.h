// sd_notify(3) without libsystemd: one datagram on the AF_UNIX socket named by NOTIFY_SOCKET.
// systemd reads READY=1, STATUS=..., WATCHDOG=1, STOPPING=1 from it for Type=notify units. The
// sender PID is taken by the kernel (SO_PASSCRED on systemd's side), so nothing else is needed.
#pragma once
#include <napi.h>

#include <string>

namespace navarch {

// Sends `state` to `address` ("/path" or "@abstract"). Returns 0, or a negative errno
// (-EINVAL for a malformed address, -EMSGSIZE for an oversized state). Thread-safe, no JS.
int SdNotifySend(const std::string& address, const std::string& state);

// Exports sdNotify(state: string, socketPath?: string): boolean.
void InitSdNotify(Napi::Env env, Napi::Object exports);

}  // namespace navarch
