// sd_notify(3) over the NOTIFY_SOCKET datagram socket, without libsystemd.
#pragma once
#include <napi.h>

namespace navarch {
void InitSdNotify(Napi::Env env, Napi::Object exports);
}
