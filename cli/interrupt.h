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
//   if (int sig = EndStopOnSignals(); sig != 0) return SignalExit("cmd", sig, !w.ok(), dir);
#ifndef SHARDLOAD_CLI_INTERRUPT_H_
#define SHARDLOAD_CLI_INTERRUPT_H_

#include <string>
#include <string_view>

#include "format/writer.h"

namespace shardload::cli {

// StopOnSignals: installs the one-shot SIGINT/SIGTERM/SIGHUP handlers (SA_RESETHAND), except
// for a signal the process ignores (it stays ignored). Call once, from the main
// thread, before writing.
void StopOnSignals();

// InterruptSignal: the signal that arrived since StopOnSignals, or 0. Any thread.
int InterruptSignal();

// EndStopOnSignals: SIGINT, SIGTERM and SIGHUP get back the dispositions StopOnSignals found;
// returns InterruptSignal(). Call when the writing is over, whatever its outcome: a signal
// that came after the last generator call did not stop the write, so the caller must
// tell "interrupted, nothing changed" (the write failed) from "done anyway".
int EndStopOnSignals();

// SignalExit: the report of a write that signal `sig` (nonzero) reached, on stderr, and
// the exit status 128 + sig. `stopped`: the write failed, so the signal stopped it and
// `folder` is as it was ("shardload CMD: interrupted by signal N; FOLDER is as it was");
// otherwise it came too late ("shardload CMD: signal N came after the new files were in
// place; FOLDER holds the new checkpoint<late_note>").
int SignalExit(std::string_view cmd, int sig, bool stopped, const std::string& folder,
               std::string_view late_note = "");

// Interruptible: `fill` that first fails with cancelled "interrupted by signal N" once
// a signal arrived; an empty `fill` stays empty.
TensorFill Interruptible(TensorFill fill);

}  // namespace shardload::cli

#endif  // SHARDLOAD_CLI_INTERRUPT_H_
