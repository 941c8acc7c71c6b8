// bench/ceilings.h — same-run physical ceilings for load benchmarks.
//
// Provides measurements that a load's throughput is compared against in the same run:
// multi-threaded memcpy, a `dd bs=16M`-style buffered sequential read of files, an
// O_DIRECT read with several requests in flight, and dropping the page cache.
//
//   SL_ASSIGN_OR_RETURN(double memcpy_gbps, MeasureMemcpyGBps(2, 256 << 20, 3));
//   SL_ASSIGN_OR_RETURN(double dd_gbps, MeasureBufferedReadGBps(files, 16 << 20));
//   SL_RETURN_IF_ERROR(DropPageCache());   // root only
#ifndef SHARDLOAD_BENCH_CEILINGS_H_
#define SHARDLOAD_BENCH_CEILINGS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "format/status.h"

namespace shardload::bench {

// Median: the median of `v` (the upper one for an even count). `v` must not be empty.
double Median(std::vector<double> v);

// MeasureMemcpyGBps: GB/s (10^9 B/s) of `threads` threads each copying its share of
// `bytes` between two pre-faulted buffers; best of `repeats`. Errors: invalid_argument
// for threads < 1 or repeats < 1; resource_exhausted when the buffers cannot be had.
Result<double> MeasureMemcpyGBps(int threads, uint64_t bytes, int repeats);

// MeasureFreshMemoryGBps: GB/s of filling `bytes` of never-used anonymous memory on
// `threads` threads: map it, then write every byte (memset), including the kernel's
// page faults and zeroing (not the unmap). The best of four fills is returned: twice
// each of touching the memory directly (faults inside memset) and pre-faulting with
// PrefaultPages first (what HostArena does). No load into fresh memory (LoadAll without a pool, or
// any reader that allocates its result) can beat it. Errors: invalid_argument for
// threads < 1; resource_exhausted when the memory cannot be mapped.
Result<double> MeasureFreshMemoryGBps(int threads, uint64_t bytes);

// MeasureBufferedReadGBps: GB/s of reading every file in `paths` front to back with
// read(2) into one `block_bytes` buffer on one thread, like `dd if=F of=/dev/null
// bs=16M` per file. Errors: open/read errors naming the file.
Result<double> MeasureBufferedReadGBps(const std::vector<std::string>& paths, uint64_t block_bytes);

// MeasureDirectReadGBps: GB/s of reading the files with O_DIRECT in `block_bytes`
// aligned blocks, `in_flight` threads pulling blocks from a shared cursor (so that many
// requests are outstanding at once): every byte, or with `max_bytes` > 0 about that many
// in all, the same share from the start of each file (a rate needs no 16 GiB of disk
// reads). Errors: unimplemented where O_DIRECT is refused.
Result<double> MeasureDirectReadGBps(const std::vector<std::string>& paths, uint64_t block_bytes,
                                     int in_flight, uint64_t max_bytes = 0);

// DropPageCache: sync, then write 3 to /proc/sys/vm/drop_caches. Errors:
// permission_denied "cannot drop the page cache (needs root): /proc/sys/vm/drop_caches:
// Permission denied".
Status DropPageCache();

}  // namespace shardload::bench

#endif  // SHARDLOAD_BENCH_CEILINGS_H_
