// The kernel-log reader thread: drains a non-blocking /dev/kmsg descriptor into a bounded queue of
// records, so that the ring buffer (about 1,400 NVIDIA XID records on a default 256 KiB log) is
// emptied at kernel speed however long the JavaScript thread is busy (a GC pause, an fsync, a
// burst of ReportHealth calls). JavaScript pulls records in chunks (Take) when told that the queue
// turned non-empty; the thread sleeps in poll(2) on the descriptor and an eventfd that Stop writes.
//
// Lifetime: the JS object owns the core; the core owns the thread and a dup of the descriptor.
// Stop (JS), the object's finalizer and an env cleanup hook all end in Shutdown, which is
// idempotent and joins the thread: it never blocks for long, because the thread only waits in
// poll(2) and reads a non-blocking descriptor.
#pragma once
#include <napi.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "bridge.h"

namespace navarch {

struct KmsgReaderLimits {
  size_t maxRecords = 65536;            // records held for JS before new ones are dropped (counted)
  size_t maxBytes = 32u * 1024 * 1024;  // bytes held for JS, likewise
};

struct KmsgReaderCounters {
  uint64_t records = 0;  // records read from the descriptor
  uint64_t bytes = 0;
  uint64_t overruns = 0;    // EPIPE: the kernel overwrote records this reader had not read
  uint64_t dropped = 0;     // records read but dropped because JS let the queue fill up
  uint64_t readErrors = 0;  // other read/poll errors
  int lastErrno = 0;
  size_t queued = 0;
  size_t maxQueued = 0;
};

class KmsgReaderCore {
 public:
  /** Takes ownership of `fd` (already a dup, non-blocking, close-on-exec). */
  KmsgReaderCore(int fd, KmsgReaderLimits limits, std::shared_ptr<Bridge> bridge);
  ~KmsgReaderCore();
  KmsgReaderCore(const KmsgReaderCore&) = delete;
  KmsgReaderCore& operator=(const KmsgReaderCore&) = delete;

  /** Starts the thread; false with errno set when the eventfd or the thread cannot be made. */
  bool Start();
  /** Any thread. Stops and joins the thread, closes the descriptor. Idempotent. */
  void Shutdown();

  /**
   * JS thread. Moves up to `max` records out. *idle is true when the queue is now empty and the
   * thread has met EAGAIN at least once (everything present at open has been handed over).
   */
  std::vector<std::string> Take(size_t max, bool* idle);
  KmsgReaderCounters Counters();

  /** JS-thread-only: called when the queue turns non-empty; cleared at stop. */
  std::function<void(Napi::Env)> onReadable;

 private:
  void Run();
  /** Thread. Queues one record; returns true when JS must be told (no notice pending yet). */
  bool Push(const char* data, size_t len);

  int fd_;
  int wakeFd_ = -1;
  const KmsgReaderLimits limits_;
  std::shared_ptr<Bridge> bridge_;
  std::weak_ptr<KmsgReaderCore> self_;  // set by the owner, for the notices posted to JS
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::mutex shutdownMu_;
  bool shutDown_ = false;

  std::mutex mu_;  // guards everything below
  std::deque<std::string> queue_;
  size_t queuedBytes_ = 0;
  bool notified_ = false;  // a notice is posted and the queue has not been emptied since
  bool caughtUp_ = false;  // the thread met EAGAIN at least once
  KmsgReaderCounters counters_;

  friend void SetKmsgReaderSelf(const std::shared_ptr<KmsgReaderCore>& core);
};

void SetKmsgReaderSelf(const std::shared_ptr<KmsgReaderCore>& core);

/** Exports the KmsgReader class: new KmsgReader(fd, onReadable, {maxRecords, maxBytes}). */
void InitKmsgReader(Napi::Env env, Napi::Object exports);

}  // namespace navarch
