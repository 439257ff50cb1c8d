// flock(2) for the event store's lock (see flock.h).
#include "flock.h"

#include <cerrno>
#include <cstring>
#include <string>

#include <sys/file.h>

namespace navarch {
namespace {

Napi::Value JS_TryFlock(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsNumber()) {
    throw Napi::TypeError::New(env, "tryFlock(fd: number): fd must be a number");
  }
  double raw = info[0].As<Napi::Number>().DoubleValue();
  if (!(raw >= 0 && raw <= 1 << 30) || raw != static_cast<double>(static_cast<int>(raw))) {
    throw Napi::TypeError::New(env, "tryFlock: fd must be a non-negative integer");
  }
  int fd = static_cast<int>(raw);
  int rc;
  do {
    rc = flock(fd, LOCK_EX | LOCK_NB);
  } while (rc != 0 && errno == EINTR);
  if (rc == 0) return Napi::Boolean::New(env, true);
  int err = errno;
  if (err == EWOULDBLOCK) return Napi::Boolean::New(env, false);
  Napi::Error e = Napi::Error::New(env, std::string("flock failed: ") + std::strerror(err));
  e.Set("code", Napi::String::New(env, err == EBADF    ? "EBADF"
                                       : err == ENOLCK ? "ENOLCK"
                                       : err == EINVAL ? "EINVAL"
                                                       : "E" + std::to_string(err)));
  e.Set("errno", Napi::Number::New(env, err));
  throw e;
}

}  // namespace

void InitFlock(Napi::Env env, Napi::Object exports) {
  exports.Set("tryFlock", Napi::Function::New(env, JS_TryFlock, "tryFlock"));
}

}  // namespace navarch
