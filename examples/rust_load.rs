//! examples/rust_load.rs — shardload's C API from Rust, with no crates: a few `extern "C"`
//! declarations from capi/shardload.h, RAII wrappers that free every handle, and a
//! `load_state_dict`-style load of a checkpoint into the program's own `Vec<f32>`
//! buffers (non-strict, then strict to show the error), then a `load_file`-style load
//! into the loader's arena with one tensor handed out as DLPack.
//!
//! Built and run by //examples:ffi_examples_test on the checkpoint examples/c_load
//! writes (three F32 [8, 8] tensors, `layers.{0,1,2}.weight`):
//!
//!   rustc --edition 2021 -L native=DIR_OF_LIBSHARDLOAD -l dylib=shardload \
//!     -C link-arg=-Wl,-rpath,DIR_OF_LIBSHARDLOAD examples/rust_load.rs -o rust_load
//!   ./rust_load /tmp/ckpt
//!
//! Written for Rust 1.63 (Debian 12's rustc) and later.

use std::ffi::{CStr, CString};
use std::fmt;
use std::os::raw::{c_char, c_int, c_void};
use std::ptr;

/// The C declarations this program uses (capi/shardload.h, version 0.1.5). Struct
/// layouts match the header's; the header promises they never change.
mod ffi {
    use std::os::raw::{c_char, c_int, c_void};

    #[repr(C)]
    pub struct Checkpoint {
        _opaque: [u8; 0],
    }
    #[repr(C)]
    pub struct Options {
        _opaque: [u8; 0],
    }
    #[repr(C)]
    pub struct Report {
        _opaque: [u8; 0],
    }
    #[repr(C)]
    pub struct Loaded {
        _opaque: [u8; 0],
    }

    #[repr(C)]
    pub struct TensorInfo {
        pub name: *const c_char,
        pub name_len: usize,
        pub dtype: *const c_char,
        pub shape: *const u64,
        pub ndim: usize,
        pub file: *const c_char,
        pub file_offset: u64,
        pub bytes: u64,
    }

    #[repr(C)]
    pub struct Target {
        pub name: *const c_char,
        pub name_len: usize,
        pub dtype: *const c_char,
        pub shape: *const u64,
        pub ndim: usize,
        pub device: *const c_char,
        pub data: *mut c_void,
    }

    #[repr(C)]
    pub struct LoadedTensor {
        pub name: *const c_char,
        pub name_len: usize,
        pub dtype: *const c_char,
        pub shape: *const u64,
        pub ndim: usize,
        pub device: *const c_char,
        pub data: *mut c_void,
        pub bytes: u64,
    }

    // DLPack (capi/dlpack.h), only as far as this program reads it.
    #[repr(C)]
    pub struct DLDevice {
        pub device_type: c_int,
        pub device_id: i32,
    }
    #[repr(C)]
    pub struct DLDataType {
        pub code: u8,
        pub bits: u8,
        pub lanes: u16,
    }
    #[repr(C)]
    pub struct DLTensor {
        pub data: *mut c_void,
        pub device: DLDevice,
        pub ndim: i32,
        pub dtype: DLDataType,
        pub shape: *mut i64,
        pub strides: *mut i64,
        pub byte_offset: u64,
    }
    #[repr(C)]
    pub struct DLManagedTensor {
        pub dl_tensor: DLTensor,
        pub manager_ctx: *mut c_void,
        pub deleter: Option<unsafe extern "C" fn(*mut DLManagedTensor)>,
    }

    pub const REPORT_MATCHED: c_int = 0;
    pub const REPORT_MISSING: c_int = 1;
    pub const REPORT_UNEXPECTED: c_int = 2;

    #[link(name = "shardload")]
    extern "C" {
        pub fn sl_version() -> *const c_char;
        pub fn sl_status_name(status: c_int) -> *const c_char;
        pub fn sl_last_error() -> *const c_char;
        pub fn sl_checkpoint_open(path: *const c_char, out: *mut *mut Checkpoint) -> c_int;
        pub fn sl_checkpoint_free(checkpoint: *mut Checkpoint);
        pub fn sl_checkpoint_tensor_count(checkpoint: *const Checkpoint) -> usize;
        pub fn sl_checkpoint_tensor(
            checkpoint: *const Checkpoint,
            index: usize,
            out: *mut TensorInfo,
        ) -> c_int;
        pub fn sl_options_new(out: *mut *mut Options) -> c_int;
        pub fn sl_options_free(options: *mut Options);
        pub fn sl_options_set_strict(options: *mut Options, strict: c_int) -> c_int;
        pub fn sl_options_set_device(options: *mut Options, device: *const c_char) -> c_int;
        pub fn sl_load_into(
            checkpoint: *const Checkpoint,
            targets: *const Target,
            target_count: usize,
            options: *const Options,
            report_out: *mut *mut Report,
        ) -> c_int;
        pub fn sl_load_all(
            checkpoint: *const Checkpoint,
            options: *const Options,
            targets: *const Target,
            target_count: usize,
            out: *mut *mut Loaded,
            report_out: *mut *mut Report,
        ) -> c_int;
        pub fn sl_report_count(report: *const Report, list: c_int) -> usize;
        pub fn sl_report_item(
            report: *const Report,
            list: c_int,
            index: usize,
            name: *mut *const c_char,
            len: *mut usize,
        ) -> c_int;
        pub fn sl_report_free(report: *mut Report);
        pub fn sl_loaded_count(loaded: *const Loaded) -> usize;
        pub fn sl_loaded_find(
            loaded: *const Loaded,
            name: *const c_char,
            name_len: usize,
            index: *mut usize,
        ) -> c_int;
        pub fn sl_loaded_get(loaded: *const Loaded, index: usize, out: *mut LoadedTensor) -> c_int;
        pub fn sl_loaded_export_dlpack(
            loaded: *mut Loaded,
            index: usize,
            flags: c_int,
            out: *mut *mut DLManagedTensor,
        ) -> c_int;
        pub fn sl_loaded_free(loaded: *mut Loaded);
        pub fn sl_live_arena_sets() -> usize;
    }
}

/// Error: a failed call's status (as its name, "not_found", "invalid_argument", ...)
/// and message, copied from the calling thread's last error right after the call.
#[derive(Debug)]
struct Error {
    code: String,
    message: String,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

/// Text from a borrowed C string, decoded lossily (names may hold any bytes).
/// Safety: `p` is NULL or a NUL-terminated string valid for the call.
unsafe fn text(p: *const c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    CStr::from_ptr(p).to_string_lossy().into_owned()
}

/// Text of `len` bytes at `p` (tensor names carry their length; they may hold NULs).
/// Safety: `p` points at `len` readable bytes (any pointer when `len` is 0).
unsafe fn text_n(p: *const c_char, len: usize) -> String {
    if len == 0 {
        return String::new();
    }
    String::from_utf8_lossy(std::slice::from_raw_parts(p as *const u8, len)).into_owned()
}

/// Ok for SL_OK (0), otherwise the thread's last error.
fn check(status: c_int) -> Result<(), Error> {
    if status == 0 {
        return Ok(());
    }
    // Both strings are static or the thread's last error, valid until its next failure.
    unsafe {
        Err(Error {
            code: text(ffi::sl_status_name(status)),
            message: text(ffi::sl_last_error()),
        })
    }
}

/// The `ndim` dimensions at `p`, copied.
/// Safety: `p` points at `ndim` readable u64 (any pointer when `ndim` is 0).
unsafe fn shape_of(p: *const u64, ndim: usize) -> Vec<u64> {
    if ndim == 0 {
        return Vec::new();
    }
    std::slice::from_raw_parts(p, ndim).to_vec()
}

/// owned_handle!(Name, ffi::Type, free_fn): a wrapper owning one C handle, freed on drop.
macro_rules! owned_handle {
    ($(#[$doc:meta])* $name:ident, $ffi:ty, $free:path) => {
        $(#[$doc])*
        struct $name(*mut $ffi);

        impl Drop for $name {
            fn drop(&mut self) {
                unsafe { $free(self.0) }
            }
        }
    };
}

owned_handle!(
    /// Checkpoint: an opened checkpoint (headers only), freed on drop. The C handle may
    /// be used from several threads at once, so the wrapper is Send + Sync.
    Checkpoint,
    ffi::Checkpoint,
    ffi::sl_checkpoint_free
);
unsafe impl Send for Checkpoint {}
unsafe impl Sync for Checkpoint {}

impl Checkpoint {
    fn open(path: &str) -> Result<Checkpoint, Error> {
        let c_path = CString::new(path).map_err(|_| Error {
            code: "invalid_argument".into(),
            message: "path holds a NUL byte".into(),
        })?;
        let mut handle = ptr::null_mut();
        check(unsafe { ffi::sl_checkpoint_open(c_path.as_ptr(), &mut handle) })?;
        Ok(Checkpoint(handle))
    }

    /// tensors: (name, dtype, shape, shard file) of every stored tensor, in name order.
    fn tensors(&self) -> Result<Vec<(String, String, Vec<u64>, String)>, Error> {
        let n = unsafe { ffi::sl_checkpoint_tensor_count(self.0) };
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let mut info = ffi::TensorInfo {
                name: ptr::null(),
                name_len: 0,
                dtype: ptr::null(),
                shape: ptr::null(),
                ndim: 0,
                file: ptr::null(),
                file_offset: 0,
                bytes: 0,
            };
            check(unsafe { ffi::sl_checkpoint_tensor(self.0, i, &mut info) })?;
            // Borrowed from the checkpoint, which outlives this call: copied now.
            out.push(unsafe {
                (
                    text_n(info.name, info.name_len),
                    text(info.dtype),
                    shape_of(info.shape, info.ndim),
                    text(info.file),
                )
            });
        }
        Ok(out)
    }
}

owned_handle!(
    /// Options: load options (device "cpu", strict by default), freed on drop.
    Options,
    ffi::Options,
    ffi::sl_options_free
);

impl Options {
    fn new() -> Result<Options, Error> {
        let mut handle = ptr::null_mut();
        check(unsafe { ffi::sl_options_new(&mut handle) })?;
        Ok(Options(handle))
    }
    fn strict(self, strict: bool) -> Result<Options, Error> {
        check(unsafe { ffi::sl_options_set_strict(self.0, strict as c_int) })?;
        Ok(self)
    }
    fn device(self, device: &str) -> Result<Options, Error> {
        let c_device = CString::new(device).expect("device without NUL");
        check(unsafe { ffi::sl_options_set_device(self.0, c_device.as_ptr()) })?;
        Ok(self)
    }
}

owned_handle!(
    /// Report: a load's match report, freed on drop.
    Report,
    ffi::Report,
    ffi::sl_report_free
);

impl Report {
    fn names(&self, list: c_int) -> Vec<String> {
        let n = unsafe { ffi::sl_report_count(self.0, list) };
        (0..n)
            .map(|i| {
                let mut name = ptr::null();
                let mut len = 0usize;
                // Cannot fail for i < count; the name lives as long as the report.
                unsafe {
                    let _ = ffi::sl_report_item(self.0, list, i, &mut name, &mut len);
                    text_n(name, len)
                }
            })
            .collect()
    }
}

/// Parameter: one tensor of the program's "model": an F32 buffer it owns.
struct Parameter {
    name: String,
    shape: Vec<u64>,
    data: Vec<f32>,
}

impl Parameter {
    fn zeros(name: &str, shape: &[u64]) -> Parameter {
        let count = shape.iter().product::<u64>() as usize;
        Parameter {
            name: name.to_string(),
            shape: shape.to_vec(),
            data: vec![0.0; count],
        }
    }
}

/// load_state_dict: load the checkpoint into the parameters' own memory. Returns the
/// report whenever matching ran, and the load's outcome.
fn load_state_dict(
    checkpoint: &Checkpoint,
    model: &mut [Parameter],
    options: &Options,
) -> (Option<Report>, Result<(), Error>) {
    let f32_name = b"F32\0";
    let targets: Vec<ffi::Target> = model
        .iter_mut()
        .map(|p| ffi::Target {
            name: p.name.as_ptr() as *const c_char,
            name_len: p.name.len(),
            dtype: f32_name.as_ptr() as *const c_char,
            shape: p.shape.as_ptr(),
            ndim: p.shape.len(),
            device: ptr::null(),
            data: p.data.as_mut_ptr() as *mut c_void,
        })
        .collect();
    let mut report = ptr::null_mut();
    let status = unsafe {
        ffi::sl_load_into(
            checkpoint.0,
            targets.as_ptr(),
            targets.len(),
            options.0,
            &mut report,
        )
    };
    let outcome = check(status);
    let report = if report.is_null() {
        None
    } else {
        Some(Report(report))
    };
    (report, outcome)
}

owned_handle!(
    /// Loaded: tensors in the loader's own arena (one reference), freed on drop; DLPack
    /// exports keep the arena alive after that.
    Loaded,
    ffi::Loaded,
    ffi::sl_loaded_free
);

impl Loaded {
    /// index_of: the position of tensor `name`.
    fn index_of(&self, name: &str) -> Result<usize, Error> {
        let mut index = 0usize;
        check(unsafe {
            ffi::sl_loaded_find(
                self.0,
                name.as_ptr() as *const c_char,
                name.len(),
                &mut index,
            )
        })?;
        Ok(index)
    }

    fn find(&self, name: &str) -> Result<ffi::LoadedTensor, Error> {
        let index = self.index_of(name)?;
        let mut t = ffi::LoadedTensor {
            name: ptr::null(),
            name_len: 0,
            dtype: ptr::null(),
            shape: ptr::null(),
            ndim: 0,
            device: ptr::null(),
            data: ptr::null_mut(),
            bytes: 0,
        };
        check(unsafe { ffi::sl_loaded_get(self.0, index, &mut t) })?;
        Ok(t)
    }

    /// export: tensor `name` as a DLPack tensor that owns a reference to the arena.
    fn export(&self, name: &str) -> Result<DlPack, Error> {
        let index = self.index_of(name)?;
        let mut dl = ptr::null_mut();
        check(unsafe { ffi::sl_loaded_export_dlpack(self.0, index, 0, &mut dl) })?;
        Ok(DlPack(dl))
    }
}

/// DlPack: an exported DLManagedTensor; its deleter runs on drop (exactly once).
struct DlPack(*mut ffi::DLManagedTensor);

impl Drop for DlPack {
    fn drop(&mut self) {
        unsafe {
            if let Some(deleter) = (*self.0).deleter {
                deleter(self.0);
            }
        }
    }
}

fn run(path: &str) -> Result<(), Error> {
    println!("shardload {}", unsafe { text(ffi::sl_version()) });
    let checkpoint = Checkpoint::open(path)?;
    for (name, dtype, shape, file) in checkpoint.tensors()? {
        println!("  {} {} {:?} in {}", name, dtype, shape, file);
    }

    // A model with the checkpoint's three layers, one it lacks, and a shorter one.
    let mut model = vec![
        Parameter::zeros("layers.0.weight", &[8, 8]),
        Parameter::zeros("layers.1.weight", &[8, 8]),
        Parameter::zeros("layers.2.weight", &[8, 8]),
        Parameter::zeros("head.weight", &[8]),
    ];
    let (report, outcome) =
        load_state_dict(&checkpoint, &mut model, &Options::new()?.strict(false)?);
    outcome?;
    let report = report.expect("a report");
    println!(
        "non-strict: matched {:?}, missing {:?}, unexpected {:?}",
        report.names(ffi::REPORT_MATCHED),
        report.names(ffi::REPORT_MISSING),
        report.names(ffi::REPORT_UNEXPECTED)
    );
    println!(
        "layers.1.weight[9] = {}, head.weight untouched = {}",
        model[1].data[9],
        model[3].data.iter().all(|&x| x == 0.0)
    );

    // Strict (the default): the same model fails, naming the missing key.
    let (report, outcome) = load_state_dict(&checkpoint, &mut model, &Options::new()?);
    match outcome {
        Ok(()) => panic!("a strict load with a missing key succeeded"),
        Err(e) => println!("strict: {}", e),
    }
    println!(
        "strict report missing {:?}",
        report.map(|r| r.names(ffi::REPORT_MISSING))
    );

    // A bad device string is refused by the options, with the C API's message.
    match Options::new()?.device("gpu:0") {
        Ok(_) => panic!("device gpu:0 accepted"),
        Err(e) => println!("device: {}", e),
    }

    // load_file-style: every tensor into the loader's arena; one handed out as DLPack.
    let defaults = Options::new()?;
    let mut loaded = ptr::null_mut();
    check(unsafe {
        ffi::sl_load_all(
            checkpoint.0,
            defaults.0,
            ptr::null(),
            0,
            &mut loaded,
            ptr::null_mut(),
        )
    })?;
    let loaded = Loaded(loaded);
    let t = loaded.find("layers.2.weight")?;
    // Host memory of t.bytes bytes (the device is "cpu"), alive as long as `loaded`.
    let (name, device, dtype) =
        unsafe { (text_n(t.name, t.name_len), text(t.device), text(t.dtype)) };
    assert!(device == "cpu" && dtype == "F32" && t.bytes == 256 && !t.data.is_null());
    let values = unsafe { std::slice::from_raw_parts(t.data as *const f32, 64) };
    println!(
        "loaded {} tensors; {} on {}: first {} last {}",
        unsafe { ffi::sl_loaded_count(loaded.0) },
        name,
        device,
        values[0],
        values[63]
    );
    let dl = loaded.export("layers.0.weight")?;
    drop(loaded); // the export keeps the arena
    let tensor = unsafe { &(*dl.0).dl_tensor };
    let shape = unsafe { std::slice::from_raw_parts(tensor.shape, tensor.ndim as usize) };
    println!(
        "dlpack: shape {:?} code {} bits {} device {}; element 9 = {}; live arenas {}",
        shape,
        tensor.dtype.code,
        tensor.dtype.bits,
        tensor.device.device_type,
        unsafe { *(tensor.data as *const f32).add(9) },
        unsafe { ffi::sl_live_arena_sets() }
    );
    drop(dl);
    println!("after the deleter: live arenas {}", unsafe {
        ffi::sl_live_arena_sets()
    });
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 2 {
        eprintln!("usage: {} CHECKPOINT", args[0]);
        std::process::exit(2);
    }
    if let Err(e) = run(&args[1]) {
        eprintln!("error: {}", e);
        std::process::exit(1);
    }
}
