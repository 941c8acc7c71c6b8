// cuda/fake/fake_control.h — the test-side controls of the fake CUDA runtime.
//
// Provides what tests need to steer and inspect `//cuda/fake:cudart`, a stand-in for
// the CUDA runtime that lets every cuda/ code path run on machines without a GPU.
// The fake implements the runtime calls cuda/ makes (and LaunchCastKernel) on the host:
// two devices of 4 GiB each whose memory lies behind addresses the host cannot touch
// (a PROT_NONE reservation: dereferencing a device pointer on the host faults, as it
// would on a GPU); one worker thread per stream that runs copies, casts, event records
// and waits in order, later than they were queued (a random delay of up to
// SetMaxDelayMicros), so work the caller has not waited for is really still pending;
// strict argument checks (device ranges inside live allocations, memcpy kinds, events
// and streams on the same device, pinned memory registered once). What it cannot say
// is anything about speed or about real GPU behaviour beyond the documented API
// contracts: that needs the GPU run in docs/GPU.md.
//
// Binaries link it through the `_fake` variants of the cuda/ libraries
// (cuda/defs.bzl); this header is CUDA-free so tests outside cuda/ may include it.
//
//   shardload::cuda::fake::ResetCounters();
//   shardload::cuda::fake::FailAsync("cudaMemcpyAsync", /*after=*/3, /*error=*/700);
//   ... load ...
//   EXPECT_EQ(shardload::cuda::fake::Snapshot().pageable_async_copies, 0u);
#ifndef SHARDLOAD_CUDA_FAKE_FAKE_CONTROL_H_
#define SHARDLOAD_CUDA_FAKE_FAKE_CONTROL_H_

#include <cstdint>
#include <string_view>

namespace shardload::cuda::fake {

// kDevices / kDeviceBytes: the fake's fixed geometry.
inline constexpr int kDevices = 2;
inline constexpr uint64_t kDeviceBytes = uint64_t{4} << 30;

// Counters: what the fake has seen. "live" values are current, the others count since
// the last ResetCounters (or process start).
struct Counters {
  uint64_t live_device_bytes[kDevices] = {};  // cudaMalloc'd, not yet freed
  uint64_t live_device_allocations = 0;
  uint64_t live_pinned_bytes = 0;     // cudaHostAlloc + cudaHostRegister, not released
  uint64_t peak_pinned_bytes = 0;     // highest live_pinned_bytes
  uint64_t live_streams = 0;
  uint64_t live_events = 0;
  uint64_t async_copies = 0;          // cudaMemcpyAsync calls queued
  uint64_t pageable_async_copies = 0; // ... whose host side was not pinned memory (for
                                      // the stream's device: memory pinned without the
                                      // Portable flag is pinned only for the device
                                      // current when it was allocated or registered)
  uint64_t kernel_launches = 0;       // LaunchCastKernel calls queued
  uint64_t failed_calls = 0;          // calls that returned an error (injected or not)
  // host_release_with_pending_work: cudaFreeHost / cudaHostUnregister of memory that
  // queued copies still read or write (the fake then waits for them, like the real
  // runtime, but a correct caller never lets it come to that).
  uint64_t host_release_with_pending_work = 0;
  // contexts[d]: whether a real CUDA >= 12 runtime would hold a context on device d by
  // now: cudaSetDevice(d) creates one, as does any call needing a context (allocation,
  // free, stream, event, copy, launch, synchronize, their destruction) made while d was
  // current. A live value, cleared only by ForgetContexts. The driver's
  // cuDevicePrimaryCtxGetState (through cudaGetDriverEntryPointByVersion) reports it.
  bool contexts[kDevices] = {};
};

// Snapshot: the counters now. Thread-safe.
Counters Snapshot();

// ResetCounters: zero the non-live counters (peak_pinned_bytes restarts at the live
// value). Thread-safe.
void ResetCounters();

// FailCall: the call named `call` ("cudaMalloc", "cudaHostAlloc", "cudaMemcpyAsync",
// "cudaEventRecord", "cudaStreamCreateWithFlags", "LaunchCastKernel", ...) returns
// `error` (a cudaError_t value) at its (after + 1)-th invocation from now, once, without
// doing anything. Several rules may be pending. Thread-safe.
void FailCall(std::string_view call, int after, int error);

// FailAsync: the (after + 1)-th queued operation of kind `call` ("cudaMemcpyAsync" or
// "LaunchCastKernel") from now is accepted, then fails when the stream runs it: it
// writes nothing, and the stream, every event recorded on it afterwards, and
// cudaStreamSynchronize / cudaDeviceSynchronize report `error` from then on, until
// the stream is destroyed. When `error` is one of CUDA's sticky errors (illegal
// address, launch failure, ...), the stream's device is poisoned, as a real context
// is for the rest of the process: every later call while that device is current
// fails with `error` (frees and destroys still release, but report it), and queued
// work on any of its streams fails too; ClearFailures ends it. Thread-safe.
void FailAsync(std::string_view call, int after, int error);

// ForgetContexts: clear Counters::contexts (as if no device had a context yet), so a
// test can see which devices one load touches. Thread-safe.
void ForgetContexts();

// CurrentDevice: the calling thread's current device (what cudaGetDevice reports).
int CurrentDevice();

// ClearFailures: drop pending FailCall / FailAsync rules and heal poisoned devices
// (what only a new process does for a real GPU). Thread-safe.
void ClearFailures();

// SetHostAllocKernelInaccessible: while true, cudaHostAlloc hands out memory the
// kernel cannot write into (a PROT_NONE mapping: a read(2) into it fails with EFAULT),
// as some gVisor versions did with real pinned memory. Host code cannot touch it
// either, so only PinnedBuffer's probe may meet it before it is freed. Thread-safe.
void SetHostAllocKernelInaccessible(bool inaccessible);

// The environment variable SHARDLOAD_FAKE_CUDA_CANNOT_PIN (set and not "0"), read at
// each call, has the same effect on cudaHostAlloc and also makes cudaHostRegister fail
// with cudaErrorNotSupported: memory cannot be pinned at all, as in a sandbox that
// cannot pin. It is for the test twins that cannot call these controls (the
// `shardload_fake_cuda` command, C programs over `libshardload_fake.so`); the fake is
// never part of the library, which reads no environment variable.

// SetHostAllocMisaligned: while true, cudaHostAlloc hands out memory 256 bytes past a
// page boundary (the real call documents no alignment; PinnedBuffer promises 4096).
// Thread-safe.
void SetHostAllocMisaligned(bool misaligned);

// PauseStreams: while true, no stream starts another queued operation (one already
// running finishes), so queued work stays pending for as long as a test needs; a
// stream being destroyed still drains. Thread-safe.
void PauseStreams(bool paused);

// SetMaxDelayMicros: each queued operation waits a random 0..`micros` µs before it
// runs (default 200; 0 runs them as soon as the worker gets to them). Thread-safe.
void SetMaxDelayMicros(int micros);

}  // namespace shardload::cuda::fake

#endif  // SHARDLOAD_CUDA_FAKE_FAKE_CONTROL_H_
