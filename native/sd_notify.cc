// Placeholder until the systemd notification datagram lands (see native/sd_notify.h).
#include "sd_notify.h"

namespace navarch {
void InitSdNotify(Napi::Env env, Napi::Object exports) {}
}  // namespace navarch
