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
//   Result<ShardedWriteResult> w = WriteSharded(...);
//   if (int sig = EndStopOnSignals(); sig != 0 && !w.ok()) return 128 + sig;  // as it was
#ifndef SHARDLOAD_CLI_INTERRUPT_H_
#define SHARDLOAD_CLI_INTERRUPT_H_

#include "format/writer.h"

namespace shardload::cli {

// StopOnSignals: installs the one-shot SIGINT/SIGTERM handlers (SA_RESETHAND), except
// for a signal the process ignores (it stays ignored). Call once, from the main
// thread, before writing.
void StopOnSignals();

// InterruptSignal: the signal that arrived since StopOnSignals, or 0. Any thread.
int InterruptSignal();

// EndStopOnSignals: SIGINT and SIGTERM get back the dispositions StopOnSignals found;
// returns InterruptSignal(). Call when the writing is over, whatever its outcome: a signal
// that came after the last generator call did not stop the write, so the caller must
// tell "interrupted, nothing changed" (the write failed) from "done anyway".
int EndStopOnSignals();

// Interruptible: `fill` that first fails with cancelled "interrupted by signal N" once
// a signal arrived; an empty `fill` stays empty.
TensorFill Interruptible(TensorFill fill);

}  // namespace shardload::cli

#endif  // SHARDLOAD_CLI_INTERRUPT_H_
