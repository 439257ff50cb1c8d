// sd_notify(3) over NOTIFY_SOCKET, without libsystemd (see sd_notify.h). The wire format is a
// single datagram of newline-separated KEY=VALUE assignments (systemd's sd_notify(3) and
// "NOTIFY_SOCKET" in systemd.exec(5)); an address starting with '@' is in the abstract namespace.
#include "sd_notify.h"

#include <cerrno>
#include <cstddef>
#include <cstdlib>
#include <cstring>

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

namespace navarch {
namespace {

// systemd accepts up to its pipe buffer; a state this large is a caller bug, not a message.
constexpr size_t kMaxState = 64 * 1024;

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

std::string ErrnoName(int err) {
  switch (err) {
    case ENOENT: return "ENOENT";
    case ECONNREFUSED: return "ECONNREFUSED";
    case EACCES: return "EACCES";
    case EPERM: return "EPERM";
    case EAGAIN: return "EAGAIN";
    case EMSGSIZE: return "EMSGSIZE";
    case EINVAL: return "EINVAL";
    case ENOBUFS: return "ENOBUFS";
    case ENOTDIR: return "ENOTDIR";
    case EAFNOSUPPORT: return "EAFNOSUPPORT";
    default: return "E" + std::to_string(err);
  }
}

Napi::Value JS_SdNotify(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) {
    throw Napi::TypeError::New(env, "sdNotify(state: string, socketPath?: string): state must be a string");
  }
  std::string state = info[0].As<Napi::String>().Utf8Value();
  std::string address;
  if (info.Length() >= 2 && !info[1].IsUndefined() && !info[1].IsNull()) {
    if (!info[1].IsString()) {
      throw Napi::TypeError::New(env, "sdNotify: socketPath must be a string");
    }
    address = info[1].As<Napi::String>().Utf8Value();
  } else {
    const char* from_env = std::getenv("NOTIFY_SOCKET");
    if (from_env != nullptr) address = from_env;
  }
  if (address.empty()) return Napi::Boolean::New(env, false);
  if (state.empty()) throw Napi::TypeError::New(env, "sdNotify: state must not be empty");

  int rc = SdNotifySend(address, state);
  if (rc != 0) {
    int err = -rc;
    std::string what = err == EINVAL && (address[0] != '/' && address[0] != '@')
                           ? "unsupported NOTIFY_SOCKET address (want /path or @abstract)"
                           : std::strerror(err);
    Napi::Error e = Napi::Error::New(env, "sd_notify to " + address + " failed: " + what);
    e.Set("code", Napi::String::New(env, ErrnoName(err)));
    e.Set("errno", Napi::Number::New(env, err));
    throw e;
  }
  return Napi::Boolean::New(env, true);
}

}  // namespace

int SdNotifySend(const std::string& address, const std::string& state) {
  if (state.size() > kMaxState) return -EMSGSIZE;
  if (address.size() < 2 || (address[0] != '/' && address[0] != '@')) return -EINVAL;

  sockaddr_un sa;
  std::memset(&sa, 0, sizeof sa);
  sa.sun_family = AF_UNIX;
  // A filesystem path keeps its terminating NUL; an abstract name is exactly its bytes after
  // the leading NUL (which replaces '@'), so the length must not count a terminator.
  if (address.size() >= sizeof sa.sun_path) return -EINVAL;
  std::memcpy(sa.sun_path, address.data(), address.size());
  socklen_t len;
  if (address[0] == '@') {
    sa.sun_path[0] = '\0';
    len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + address.size());
  } else {
    len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + address.size() + 1);
  }

  Fd fd(socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (fd.get() < 0) return -errno;
  ssize_t n;
  do {
    n = sendto(fd.get(), state.data(), state.size(), MSG_NOSIGNAL, reinterpret_cast<const sockaddr*>(&sa), len);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return -errno;
  if (static_cast<size_t>(n) != state.size()) return -EMSGSIZE;
  return 0;
}

void InitSdNotify(Napi::Env env, Napi::Object exports) {
  exports.Set("sdNotify", Napi::Function::New(env, JS_SdNotify, "sdNotify"));
}

}  // namespace navarch
