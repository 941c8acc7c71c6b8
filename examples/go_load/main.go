// examples/go_load/main.go — shardload's C API from Go through cgo, the way a Go
// serving process would hold weights: open a checkpoint once, load it into the
// loader's own host arena (checking recorded hashes), view each tensor as a []float32
// without copying, serve reads from several goroutines, and free the arena at the end.
// Also: load_state_dict into buffers the program allocates in C memory, a named subset
// with non-strict matching and its report, a cancelled load, and the error for a
// missing path.
//
// Built and run by //examples:ffi_examples_test on the checkpoint examples/c_load
// writes (three F32 [8, 8] tensors, layers.{0,1,2}.weight):
//
//	CGO_CFLAGS=-I/path/to/capi CGO_LDFLAGS="-L/dir/of/lib -Wl,-rpath,/dir/of/lib" \
//	  go build -o go_load ./examples/go_load && ./go_load /tmp/ckpt
//
// Errors are thread-local in the C API (sl_last_error is the calling thread's), and
// the Go scheduler may move a goroutine to another thread between two cgo calls: call
// below runs a C call and reads its error on one locked OS thread.
//
// Written for Go 1.19 (Debian 12's golang-go) and later.
package main

/*
#cgo LDFLAGS: -lshardload
#include <stdlib.h>
#include "shardload.h"
*/
import "C"

import (
	"fmt"
	"os"
	"runtime"
	"sync"
	"unsafe"
)

// Error is a failed C call: its status name ("not_found", ...) and message.
type Error struct {
	Code    string
	Message string
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// call runs f (one C API call returning an sl_status) and, when it fails, reads the
// error on the same OS thread.
func call(f func() C.sl_status) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	status := f()
	if status == C.SL_OK {
		return nil
	}
	return &Error{
		Code:    C.GoString(C.sl_status_name(C.int(status))),
		Message: C.GoString(C.sl_last_error()),
	}
}

// goName is a tensor name of n bytes at p (names carry their length: they may hold NULs).
func goName(p *C.char, n C.size_t) string { return C.GoStringN(p, C.int(n)) }

// Checkpoint is an opened checkpoint; Close frees it.
type Checkpoint struct{ h *C.sl_checkpoint }

// Open opens a .safetensors file, an index .json or a folder.
func Open(path string) (*Checkpoint, error) {
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	var h *C.sl_checkpoint
	if err := call(func() C.sl_status { return C.sl_checkpoint_open(cpath, &h) }); err != nil {
		return nil, err
	}
	return &Checkpoint{h}, nil
}

// Close frees the handle (a second Close does nothing); tensors loaded from it stay
// valid.
func (c *Checkpoint) Close() {
	C.sl_checkpoint_free(c.h)
	c.h = nil
}

// Options are load options; Close frees them.
type Options struct{ h *C.sl_options }

// NewOptions returns the defaults: device cpu, strict, no verification.
func NewOptions() (*Options, error) {
	var h *C.sl_options
	if err := call(func() C.sl_status { return C.sl_options_new(&h) }); err != nil {
		return nil, err
	}
	return &Options{h}, nil
}

// Close frees the options (a second Close does nothing).
func (o *Options) Close() {
	C.sl_options_free(o.h)
	o.h = nil
}

func flag(b bool) C.int {
	if b {
		return 1
	}
	return 0
}

func (o *Options) SetStrict(strict bool) error {
	return call(func() C.sl_status { return C.sl_options_set_strict(o.h, flag(strict)) })
}

func (o *Options) SetVerify(verify bool) error {
	return call(func() C.sl_status { return C.sl_options_set_verify(o.h, flag(verify)) })
}

// Tensor is a loaded F32 tensor viewed in place: Data points into the loader's arena
// and is valid until the Weights it came from is closed.
type Tensor struct {
	Name   string
	Dtype  string
	Shape  []uint64
	Device string
	Data   []float32
}

// Weights are tensors in the loader's arena; Close frees the arena.
type Weights struct {
	h      *C.sl_loaded
	byName map[string]Tensor
}

// Report lists what a load matched, missed and did not expect.
type Report struct{ Matched, Missing, Unexpected []string }

func reportOf(r *C.sl_report) Report {
	list := func(which C.int) []string {
		var names []string
		for i := C.size_t(0); i < C.sl_report_count(r, which); i++ {
			var p *C.char
			var n C.size_t
			C.sl_report_item(r, which, i, &p, &n) // cannot fail for i < count
			names = append(names, goName(p, n))
		}
		return names
	}
	return Report{list(C.SL_REPORT_MATCHED), list(C.SL_REPORT_MISSING), list(C.SL_REPORT_UNEXPECTED)}
}

// f32Targets: one F32 sl_target per name and shape, their names, dtype and shapes in C
// memory (cgo forbids Go memory passed to C from holding Go pointers); data stays nil.
// free releases that memory once the call that takes the targets has returned.
func f32Targets(names []string, shapes [][]uint64) (targets []C.sl_target, free func()) {
	var cmem []unsafe.Pointer
	free = func() {
		for _, p := range cmem {
			C.free(p)
		}
	}
	dtype := C.CString("F32")
	cmem = append(cmem, unsafe.Pointer(dtype))
	for i, name := range names {
		cname := C.CString(name)
		shape := (*C.uint64_t)(C.malloc(C.size_t(8 * (len(shapes[i]) + 1))))
		cmem = append(cmem, unsafe.Pointer(cname), unsafe.Pointer(shape))
		dims := unsafe.Slice(shape, len(shapes[i])+1)
		for k, d := range shapes[i] {
			dims[k] = C.uint64_t(d)
		}
		targets = append(targets, C.sl_target{name: cname, name_len: C.size_t(len(name)),
			dtype: dtype, shape: shape, ndim: C.size_t(len(shapes[i]))})
	}
	return targets, free
}

// takeReport: the report's lists (empty for nil), the C report freed.
func takeReport(r *C.sl_report) Report {
	if r == nil {
		return Report{}
	}
	defer C.sl_report_free(r)
	return reportOf(r)
}

// Load loads every stored tensor (names nil) or the named F32 tensors of the given
// shapes into the loader's arena.
func (c *Checkpoint) Load(o *Options, names []string, shapes [][]uint64) (*Weights, Report, error) {
	targets, free := f32Targets(names, shapes)
	defer free()
	var tp *C.sl_target
	if len(targets) > 0 {
		tp = &targets[0]
	}
	var h *C.sl_loaded
	var r *C.sl_report
	err := call(func() C.sl_status {
		return C.sl_load_all(c.h, o.h, tp, C.size_t(len(targets)), &h, &r)
	})
	report := takeReport(r)
	if err != nil {
		return nil, report, err
	}
	w := &Weights{h: h, byName: map[string]Tensor{}}
	for i := C.size_t(0); i < C.sl_loaded_count(h); i++ {
		var t C.sl_loaded_tensor
		if err := call(func() C.sl_status { return C.sl_loaded_get(h, i, &t) }); err != nil {
			w.Close()
			return nil, report, err
		}
		shape := make([]uint64, int(t.ndim))
		for k, d := range unsafe.Slice(t.shape, int(t.ndim)) {
			shape[k] = uint64(d)
		}
		tensor := Tensor{Name: goName(t.name, t.name_len), Dtype: C.GoString(t.dtype),
			Shape: shape, Device: C.GoString(t.device)}
		if tensor.Dtype == "F32" && tensor.Device == "cpu" && t.bytes > 0 {
			tensor.Data = unsafe.Slice((*float32)(t.data), int(t.bytes/4))
		}
		w.byName[tensor.Name] = tensor
	}
	return w, report, nil
}

// LoadInto loads the named F32 tensors (load_state_dict) into buffers this program
// allocates with C.calloc (cgo lets C write only into C memory, or pinned Go memory
// from Go 1.21), returned as []float32 views; free them with FreeBuffers.
func (c *Checkpoint) LoadInto(o *Options, names []string, shapes [][]uint64) ([][]float32, Report, error) {
	targets, free := f32Targets(names, shapes)
	defer free()
	buffers := make([][]float32, len(names))
	for i := range targets {
		count := 1
		for _, d := range shapes[i] {
			count *= int(d)
		}
		targets[i].data = C.calloc(C.size_t(count), 4)
		buffers[i] = unsafe.Slice((*float32)(targets[i].data), count)
	}
	var r *C.sl_report
	err := call(func() C.sl_status {
		return C.sl_load_into(c.h, &targets[0], C.size_t(len(targets)), o.h, &r)
	})
	report := takeReport(r)
	if err != nil {
		FreeBuffers(buffers)
		return nil, report, err
	}
	return buffers, report, nil
}

// FreeBuffers frees buffers LoadInto allocated.
func FreeBuffers(buffers [][]float32) {
	for _, b := range buffers {
		if len(b) > 0 {
			C.free(unsafe.Pointer(&b[0]))
		}
	}
}

// Close frees the arena; the Tensors' Data must not be used after it.
func (w *Weights) Close() {
	C.sl_loaded_free(w.h)
	w.h = nil
	w.byName = nil
}

func run(path string) error {
	ckpt, err := Open(path)
	if err != nil {
		return err
	}
	defer ckpt.Close()
	fmt.Printf("%d tensors in %d shards\n", C.sl_checkpoint_tensor_count(ckpt.h),
		C.sl_checkpoint_shard_count(ckpt.h))

	opts, err := NewOptions()
	if err != nil {
		return err
	}
	defer opts.Close()
	if err := opts.SetVerify(true); err != nil {
		return err
	}
	weights, report, err := ckpt.Load(opts, nil, nil)
	if err != nil {
		return err
	}
	fmt.Printf("loaded with verify: matched %d, missing %d, unexpected %d\n",
		len(report.Matched), len(report.Missing), len(report.Unexpected))
	for _, name := range []string{"layers.0.weight", "layers.1.weight", "layers.2.weight"} {
		t := weights.byName[name]
		fmt.Printf("  %s %s %v on %s: first %g last %g\n", t.Name, t.Dtype, t.Shape, t.Device,
			t.Data[0], t.Data[len(t.Data)-1])
	}

	// Readers on several goroutines share the arena; each sum is checked against a
	// serial pass over the same tensor.
	var wg sync.WaitGroup
	sums := make([]float64, 8)
	for g := range sums {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for _, v := range weights.byName[fmt.Sprintf("layers.%d.weight", g%3)].Data {
				sums[g] += float64(v)
			}
		}(g)
	}
	wg.Wait()
	same := true
	for g, sum := range sums {
		serial := 0.0
		for _, v := range weights.byName[fmt.Sprintf("layers.%d.weight", g%3)].Data {
			serial += float64(v)
		}
		same = same && sum == serial
	}
	fmt.Printf("goroutine sums: %v, equal to the serial sums: %v\n", sums[:3], same)
	weights.Close()

	// Concurrent loads of one checkpoint handle (it is safe to share).
	errs := make([]error, 4)
	firsts := make([]float32, 4)
	for g := range errs {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			w, _, err := ckpt.Load(opts, nil, nil)
			if err != nil {
				errs[g] = err
				return
			}
			firsts[g] = w.byName["layers.1.weight"].Data[0]
			w.Close()
		}(g)
	}
	wg.Wait()
	fmt.Printf("4 concurrent loads: errors %v, layers.1.weight[0] %v, live arenas %d\n",
		errs, firsts, C.sl_live_arena_sets())

	// load_state_dict into buffers the program owns (C memory), strict by default.
	model := []string{"layers.0.weight", "layers.1.weight", "layers.2.weight"}
	buffers, report, err := ckpt.LoadInto(opts, model, [][]uint64{{8, 8}, {8, 8}, {8, 8}})
	if err != nil {
		return err
	}
	fmt.Printf("load_state_dict into C buffers: matched %d, layers.2.weight[9] = %g\n",
		len(report.Matched), buffers[2][9])
	FreeBuffers(buffers)

	// A named subset, non-strict: what a partial model would take.
	partial, err := NewOptions()
	if err != nil {
		return err
	}
	defer partial.Close()
	if err := partial.SetStrict(false); err != nil {
		return err
	}
	w, report, err := ckpt.Load(partial, []string{"layers.2.weight", "lm_head.weight"},
		[][]uint64{{8, 8}, {8, 8}})
	if err != nil {
		return err
	}
	fmt.Printf("subset: matched %v, missing %v, unexpected %v, loaded %d\n",
		report.Matched, report.Missing, report.Unexpected, len(w.byName))
	w.Close()
	if err := partial.SetStrict(true); err != nil {
		return err
	}
	_, report, err = ckpt.Load(partial, []string{"layers.2.weight", "lm_head.weight"},
		[][]uint64{{8, 8}, {8, 8}})
	fmt.Printf("subset, strict: %v (report missing %v)\n", err, report.Missing)

	// A cancelled token fails the load before anything is allocated.
	var token *C.sl_cancel_token
	if err := call(func() C.sl_status { return C.sl_cancel_token_new(&token) }); err != nil {
		return err
	}
	defer C.sl_cancel_token_free(token)
	if err := call(func() C.sl_status { return C.sl_cancel_token_cancel(token) }); err != nil {
		return err
	}
	if err := call(func() C.sl_status { return C.sl_options_set_cancel_token(partial.h, token) }); err != nil {
		return err
	}
	_, _, err = ckpt.Load(partial, nil, nil)
	fmt.Printf("cancelled: %v\n", err)

	_, err = Open(path + "/missing")
	fmt.Printf("open missing: %v\n", err)
	fmt.Printf("live arenas at the end: %d\n", C.sl_live_arena_sets())
	return nil
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintf(os.Stderr, "usage: %s CHECKPOINT\n", os.Args[0])
		os.Exit(2)
	}
	if err := run(os.Args[1]); err != nil {
		fmt.Fprintf(os.Stderr, "error: %v\n", err)
		os.Exit(1)
	}
}
