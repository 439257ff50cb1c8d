// JS-facing objects: Session (one NVML "open": library + init reference, device lanes, deadline
// timer, completion bridge) and Watch (one event watcher). All per-environment state hangs off
// AddonData (napi instance data) and an env cleanup hook tears every session down, which makes
// the addon safe to load in worker_threads and to terminate them with work in flight.
#pragma once
#include <napi.h>

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "bridge.h"
#include "executor.h"
#include "library.h"
#include "watcher.h"

namespace navarch {

struct SessionCore;

struct AddonData {
  Napi::FunctionReference sessionCtor;
  Napi::FunctionReference watchCtor;
  std::vector<std::weak_ptr<SessionCore>> sessions;
};

struct SessionCore {
  enum class State { Idle, Opening, Open, Closed };
  std::mutex mu;  // guards everything below that native threads touch (state, lib, lanes)
  State state = State::Idle;
  std::shared_ptr<Library> lib;
  std::shared_ptr<Lane> systemLane;
  std::vector<std::shared_ptr<Lane>> lanes;
  unsigned activeCount = 0;
  std::string libraryPath;
  unsigned callTimeoutMs = 5000;
  std::shared_ptr<Bridge> bridge;        // JS thread creates/closes
  std::unique_ptr<DeadlineTimer> timer;  // JS thread only
  std::vector<std::shared_ptr<WatchCore>> watches;

  /** Env teardown or GC of an unclosed session: stop everything without blocking on NVML. */
  void Teardown(bool joinWatches);
};

void InitSession(Napi::Env env, Napi::Object exports, AddonData* data);

}  // namespace navarch
