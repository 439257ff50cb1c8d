// Guarded threadsafe-function bridge (see bridge.h for the lifetime argument).
#include "bridge.h"

namespace navarch {

std::shared_ptr<Bridge> Bridge::Create(Napi::Env env, const char* name, bool ref) {
  auto bridge = std::make_shared<Bridge>();
  // The TSFN owns one strong reference, released in Finalize, so the Bridge outlives the TSFN.
  auto* owner = new std::shared_ptr<Bridge>(bridge);
  napi_value resourceName;
  NAPI_THROW_IF_FAILED(env, napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &resourceName), nullptr);
  napi_status st = napi_create_threadsafe_function(env, nullptr, nullptr, resourceName, 0, 1, owner, Finalize, owner,
                                                   CallJs, &bridge->tsfn_);
  if (st != napi_ok) {
    delete owner;
    NAPI_THROW_IF_FAILED(env, st, nullptr);
  }
  bridge->env_ = env;
  bridge->open_ = true;
  bridge->refd_ = true;  // TSFNs start ref'd
  bridge->userRef_ = ref;
  bridge->ApplyRef();
  return bridge;
}

bool Bridge::Post(Task task) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!open_ || finalized_) return false;
  auto* heap = new Task(std::move(task));
  if (napi_call_threadsafe_function(tsfn_, heap, napi_tsfn_nonblocking) != napi_ok) {
    delete heap;
    return false;
  }
  return true;
}

void Bridge::CallJs(napi_env env, napi_value, void*, void* data) {
  std::unique_ptr<Task> task(static_cast<Task*>(data));
  if (env == nullptr || !task || !*task) return;  // teardown: drop the result
  try {
    (*task)(Napi::Env(env));
  } catch (const Napi::Error& e) {
    // An exception from a user callback: surface it as uncaught, like any event-loop callback.
    // While the environment is being torn down (process exit drains the TSFN queue after JS can
    // no longer run) even that throw fails: then the result is dropped, never std::terminate.
    try {
      e.ThrowAsJavaScriptException();
    } catch (const Napi::Error&) {
    }
  }
}

void Bridge::Finalize(napi_env, void* data, void*) {
  auto* owner = static_cast<std::shared_ptr<Bridge>*>(data);
  {
    std::lock_guard<std::mutex> lock((*owner)->mu_);
    (*owner)->open_ = false;
    (*owner)->finalized_ = true;
    (*owner)->tsfn_ = nullptr;
  }
  delete owner;
}

void Bridge::ApplyRef() {
  bool want = userRef_ || holds_ > 0;
  std::lock_guard<std::mutex> lock(mu_);
  if (finalized_ || !open_ || want == refd_) return;
  if (want) {
    napi_ref_threadsafe_function(env_, tsfn_);
  } else {
    napi_unref_threadsafe_function(env_, tsfn_);
  }
  refd_ = want;
}

void Bridge::Hold() {
  ++holds_;
  ApplyRef();
}

void Bridge::Unhold() {
  if (holds_ > 0) --holds_;
  ApplyRef();
}

void Bridge::SetRef(bool ref) {
  userRef_ = ref;
  ApplyRef();
}

void Bridge::Close() {
  std::lock_guard<std::mutex> lock(mu_);
  if (!open_ || finalized_) return;
  open_ = false;
  napi_release_threadsafe_function(tsfn_, napi_tsfn_release);
}

bool Bridge::IsOpen() {
  std::lock_guard<std::mutex> lock(mu_);
  return open_ && !finalized_;
}

}  // namespace navarch
