// A guarded napi_threadsafe_function: native threads post closures that run on the JS thread.
// Threads never hold the raw TSFN. They hold shared_ptr<Bridge>, and Post() checks under a mutex
// that the TSFN is still open. The TSFN's finalizer (env teardown, or after Close()) clears that
// flag under the same mutex before Node frees the TSFN, so a thread that wakes up from a call that
// hung for minutes finds the bridge closed and drops its result instead of touching freed memory.
#pragma once
#include <napi.h>

#include <functional>
#include <memory>
#include <mutex>

namespace navarch {

class Bridge {
 public:
  using Task = std::function<void(Napi::Env)>;

  /** JS thread. The TSFN starts unref'd (it does not keep the event loop alive) unless `ref`. */
  static std::shared_ptr<Bridge> Create(Napi::Env env, const char* name, bool ref);

  /** Any thread. Queues `task` for the JS thread; false (task dropped) once closed. */
  bool Post(Task task);

  /** JS thread. Keep the loop alive while work the caller awaits is in flight (counted). */
  void Hold();
  void Unhold();
  /** JS thread. Persistent ref/unref chosen by the user (watch `ref`). */
  void SetRef(bool ref);

  /** JS thread. Stop accepting posts and release the TSFN (queued tasks still run). Idempotent. */
  void Close();
  bool IsOpen();

 private:
  static void CallJs(napi_env env, napi_value, void* context, void* data);
  static void Finalize(napi_env env, void* data, void* hint);
  void ApplyRef();

  std::mutex mu_;
  bool open_ = false;       // posts accepted
  bool finalized_ = false;  // Node freed the TSFN: never touch tsfn_ again
  napi_threadsafe_function tsfn_ = nullptr;
  napi_env env_ = nullptr;
  int holds_ = 0;         // JS thread only
  bool userRef_ = false;  // JS thread only
  bool refd_ = false;     // JS thread only
};

}  // namespace navarch
