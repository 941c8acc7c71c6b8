// cli/interrupt.h — stop the writing commands cleanly on SIGINT / SIGTERM.
//
// Provides `StopOnSignals`, `InterruptSignal` and `Interruptible`: after StopOnSignals,
// the first SIGINT or SIGTERM only records itself; generators wrapped by Interruptible
// then fail with `cancelled`, the writer removes its temporary files, and the command
// exits 128 + the signal number. A second signal acts as usual (kills the process).
//
//   StopOnSignals();
//   for (TensorToWrite& t : tensors) t.fill = Interruptible(std::move(t.fill));
//   ... WriteSharded(...) fails with cancelled "interrupted by signal 2" ...
//   if (InterruptSignal() != 0) return 128 + InterruptSignal();
#ifndef SHARDLOAD_CLI_INTERRUPT_H_
#define SHARDLOAD_CLI_INTERRUPT_H_

#include "format/writer.h"

namespace shardload::cli {

// StopOnSignals: installs the one-shot SIGINT/SIGTERM handlers (SA_RESETHAND). Call
// once, from the main thread, before writing.
void StopOnSignals();

// InterruptSignal: the signal that arrived since StopOnSignals, or 0. Any thread.
int InterruptSignal();

// Interruptible: `fill` that first fails with cancelled "interrupted by signal N" once
// a signal arrived; an empty `fill` stays empty.
TensorFill Interruptible(TensorFill fill);

}  // namespace shardload::cli

#endif  // SHARDLOAD_CLI_INTERRUPT_H_
