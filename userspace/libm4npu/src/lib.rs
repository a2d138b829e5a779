//! libm4npu: a thin C API over the m4npu app library (`userspace/m4npu`).
//!
//! The header, `include/m4npu.h`, is generated from this file by cbindgen
//! (`cbindgen.toml`; a test checks that the committed header is its output:
//! `M4NPU_BLESS=1 cargo test -p m4npu-c` rewrites it).
//!
//! Conventions of the API:
//! - Handles are opaque (`struct m4npu_device`, `struct m4npu_adapter`).
//!   An adapter keeps its device's context alive: `m4npu_close` and
//!   `m4npu_adapter_free` may come in any order. A handle is used by one
//!   thread at a time.
//! - Calls that can fail return an `int`: `0` or a count on success,
//!   `-errno` on failure, with `errno` set to the same value and a message
//!   for people in `m4npu_last_error()` (per thread, until the next failure).
//! - No Rust panic crosses the API: one is caught and reported as
//!   `-ENOTRECOVERABLE`.

#![deny(unsafe_op_in_unsafe_fn)]
// The C names of the API (m4npu_device, m4npu_label, ...).
#![allow(non_camel_case_types)]

use std::cell::RefCell;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;
use std::sync::Arc;

use libc::{EINVAL, EIO, ENOTRECOVERABLE, EPROTO};
use m4npu::{Adapter, Device, Error};

/// An open of `/dev/m4npu`: one isolated context in the driver.
pub struct m4npu_device {
    dev: Arc<Device>,
}

/// An adapter loaded into a device's context; holds that context open.
pub struct m4npu_adapter {
    // Dropped before `dev` (declaration order), which it borrows: the
    // `'static` is the lifetime of the `Device` inside the `Arc`, kept alive
    // by `dev` and never moved (an `Arc`'s contents stay where they are).
    adapter: Adapter<'static>,
    dev: Arc<Device>,
    name: CString,
    /// The head's label names, in head order, for `m4npu_label::name`.
    labels: Vec<CString>,
}

/// One label of a classification (best first in `m4npu_classify`'s answer).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct m4npu_label {
    /// Position in the adapter's head.
    pub index: u32,
    /// Softmax probability.
    pub score: f32,
    /// The head's raw output.
    pub logit: f32,
    /// The adapter's name for the label, or NULL if it names none; valid
    /// while the adapter is loaded.
    pub name: *const c_char,
}

/// What `m4npu_device_info` reports.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct m4npu_info {
    /// The driver's UAPI version (major in the high 16 bits).
    pub uapi_version: u32,
    /// 1 if a foundation model is loaded, else 0 (the model fields are then zero).
    pub has_model: u32,
    /// Unique per open for the module's lifetime.
    pub context_id: u64,
    /// Bytes of NPU memory.
    pub pool_size: u64,
    /// Bytes of NPU memory in use.
    pub pool_used: u64,
    /// Bytes of the pinned model.
    pub model_size: u64,
    /// SHA-256 content hash of the pinned model, which adapters are bound to.
    pub model_hash: [u8; 32],
    /// The model's name, NUL-terminated.
    pub model_name: [c_char; 64],
    /// The driver's version, NUL-terminated.
    pub driver_version: [c_char; 32],
}

/// Called with each piece of generated text (`len` bytes at `piece`, also
/// NUL-terminated) and the caller's `user` pointer; a nonzero return stops
/// the generation.
pub type m4npu_token_fn = Option<unsafe extern "C" fn(piece: *const c_char, len: usize, user: *mut c_void) -> c_int>;

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

/// A failure: its errno and message.
struct Failure {
    errno: c_int,
    message: String,
}

impl Failure {
    fn new(errno: c_int, message: impl Into<String>) -> Self {
        Failure { errno, message: message.into() }
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        let errno = match e.errno() {
            Some(errno) => errno as c_int,
            None => match e {
                Error::UapiMismatch { .. } | Error::BadHwJob(_) | Error::ModelMeta(_) => EPROTO,
                Error::FdInfo(_) => EIO,
                _ => EINVAL,
            },
        };
        Failure { errno, message: e.to_string() }
    }
}

type Outcome = Result<c_int, Failure>;

/// Runs `body`, turning a failure or a panic into `-errno`, `errno` and
/// the thread's message.
fn ffi(body: impl FnOnce() -> Outcome) -> c_int {
    let failure = match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(n)) => return n,
        Ok(Err(f)) => f,
        Err(_) => Failure::new(ENOTRECOVERABLE, "internal error: libm4npu panicked (a bug: please report it)"),
    };
    let message = CString::new(failure.message.replace('\0', " ")).unwrap_or_default();
    // Unwinding out of a destructor here is not possible: CString's is plain.
    LAST_ERROR.with(|m| *m.borrow_mut() = message);
    // SAFETY: __errno_location() returns this thread's errno, always valid.
    unsafe { *libc::__errno_location() = failure.errno };
    -failure.errno
}

fn null(what: &str) -> Failure {
    Failure::new(EINVAL, format!("{what} is NULL"))
}

/// A C string argument as UTF-8.
///
/// # Safety
/// `s` is NULL or a NUL-terminated string valid for the call.
unsafe fn text_arg<'a>(s: *const c_char, what: &str) -> Result<&'a str, Failure> {
    if s.is_null() {
        return Err(null(what));
    }
    // SAFETY: non-null and NUL-terminated by the caller's contract.
    let c = unsafe { CStr::from_ptr(s) };
    c.to_str().map_err(|_| Failure::new(EINVAL, format!("{what} is not UTF-8")))
}

/// # Safety
/// `p` is NULL or points to a live `T` for the call.
unsafe fn handle<'a, T>(p: *const T, what: &str) -> Result<&'a T, Failure> {
    // SAFETY: the caller's contract.
    unsafe { p.as_ref() }.ok_or_else(|| null(what))
}

fn count(n: usize) -> Outcome {
    c_int::try_from(n).map_err(|_| Failure::new(libc::EOVERFLOW, format!("{n} does not fit an int")))
}

/// The message of this thread's last failure ("" if none): valid until the
/// thread's next failing call.
#[no_mangle]
pub extern "C" fn m4npu_last_error() -> *const c_char {
    LAST_ERROR.with(|m| m.borrow().as_ptr())
}

/// The library's version, e.g. "0.1.0".
#[no_mangle]
pub extern "C" fn m4npu_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// Opens the device at `path` (NULL: `/dev/m4npu`), a fresh context, into `*out`.
/// Returns 0, or -errno (-ENOENT: the module is not loaded).
///
/// # Safety
/// `path` is NULL or a NUL-terminated string; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn m4npu_open(path: *const c_char, out: *mut *mut m4npu_device) -> c_int {
    ffi(|| {
        if out.is_null() {
            return Err(null("out"));
        }
        let dev = if path.is_null() {
            Device::open()?
        } else {
            // SAFETY: the caller's contract.
            Device::open_path(unsafe { text_arg(path, "path") }?)?
        };
        let handle = Box::into_raw(Box::new(m4npu_device { dev: Arc::new(dev) }));
        // SAFETY: `out` is non-null and writable by the caller's contract.
        unsafe { out.write(handle) };
        Ok(0)
    })
}

/// Closes a device handle (NULL is ignored). Its context ends once its
/// adapters are freed too.
///
/// # Safety
/// `dev` is NULL or a handle from `m4npu_open` not yet closed.
#[no_mangle]
pub unsafe extern "C" fn m4npu_close(dev: *mut m4npu_device) {
    if !dev.is_null() {
        // SAFETY: made by Box::into_raw in m4npu_open, closed once.
        let _ = catch_unwind(AssertUnwindSafe(|| drop(unsafe { Box::from_raw(dev) })));
    }
}

/// Driver, firmware and context information into `*info`.
///
/// # Safety
/// `dev` is NULL or a live handle; `info` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn m4npu_device_info(dev: *const m4npu_device, info: *mut m4npu_info) -> c_int {
    ffi(|| {
        // SAFETY: the caller's contract.
        let dev = unsafe { handle(dev, "dev") }?;
        if info.is_null() {
            return Err(null("info"));
        }
        let i = dev.dev.info()?;
        let mut c = m4npu_info {
            uapi_version: i.uapi_version,
            has_model: i.model.is_some() as u32,
            context_id: i.context_id,
            pool_size: i.pool_size,
            pool_used: i.pool_used,
            model_size: 0,
            model_hash: [0; 32],
            model_name: [0; 64],
            driver_version: [0; 32],
        };
        copy_str(&mut c.driver_version, &i.driver_version);
        if let Some(m) = i.model {
            c.model_size = m.size;
            c.model_hash = m.hash;
            copy_str(&mut c.model_name, &m.name);
        }
        // SAFETY: `info` is non-null and writable by the caller's contract.
        unsafe { info.write(c) };
        Ok(0)
    })
}

/// Copies `s` into `dst`, truncated, always NUL-terminated.
fn copy_str(dst: &mut [c_char], s: &str) {
    let n = s.len().min(dst.len() - 1);
    for (d, &b) in dst.iter_mut().zip(&s.as_bytes()[..n]) {
        *d = b as c_char;
    }
    dst[n] = 0;
}

fn adapter_handle(dev: &m4npu_device, load: impl FnOnce(&Device) -> m4npu::Result<Adapter<'_>>) -> Result<*mut m4npu_adapter, Failure> {
    let arc = Arc::clone(&dev.dev);
    let adapter = load(&arc)?;
    // SAFETY: the adapter borrows the Device inside `arc`, whose address is
    // stable; the handle keeps `arc` and drops the adapter first (see
    // m4npu_adapter), so the borrow never outlives the Device.
    let adapter: Adapter<'static> = unsafe { std::mem::transmute::<Adapter<'_>, Adapter<'static>>(adapter) };
    let cstring = |s: &str| CString::new(s.replace('\0', " ")).unwrap_or_default();
    let name = cstring(adapter.name());
    let labels = adapter.meta().map(|m| m.labels.iter().map(|l| cstring(l)).collect()).unwrap_or_default();
    Ok(Box::into_raw(Box::new(m4npu_adapter { adapter, dev: arc, name, labels })))
}

/// Loads the adapter file at `path` (`.m4a`) into the device's context.
/// Returns 0 and the handle in `*out`, or -errno (-EMEDIUMTYPE: trained
/// for another foundation model; -EINVAL: not an adapter).
///
/// # Safety
/// `dev` is NULL or a live handle; `path` NULL or NUL-terminated; `out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn m4npu_adapter_load_file(dev: *const m4npu_device, path: *const c_char, out: *mut *mut m4npu_adapter) -> c_int {
    ffi(|| {
        // SAFETY: the caller's contract.
        let (dev, path) = unsafe { (handle(dev, "dev")?, text_arg(path, "path")?) };
        if out.is_null() {
            return Err(null("out"));
        }
        let h = adapter_handle(dev, |d| d.load_adapter_file(path))?;
        // SAFETY: `out` is non-null and writable by the caller's contract.
        unsafe { out.write(h) };
        Ok(0)
    })
}

/// Loads an adapter from `len` bytes at `data` (copied; the buffer may be
/// freed on return). Returns as `m4npu_adapter_load_file`.
///
/// # Safety
/// `dev` is NULL or a live handle; `data` NULL or `len` readable bytes; `out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn m4npu_adapter_load(dev: *const m4npu_device, data: *const c_void, len: usize, out: *mut *mut m4npu_adapter) -> c_int {
    ffi(|| {
        // SAFETY: the caller's contract.
        let dev = unsafe { handle(dev, "dev") }?;
        if data.is_null() {
            return Err(null("data"));
        }
        if out.is_null() {
            return Err(null("out"));
        }
        // SAFETY: `data` is non-null with `len` readable bytes by the caller's contract.
        let bytes = unsafe { std::slice::from_raw_parts(data.cast::<u8>(), len) };
        let h = adapter_handle(dev, |d| d.load_adapter(bytes))?;
        // SAFETY: `out` is non-null and writable by the caller's contract.
        unsafe { out.write(h) };
        Ok(0)
    })
}

/// Unloads an adapter (NULL is ignored).
///
/// # Safety
/// `adapter` is NULL or a handle from `m4npu_adapter_load*` not yet freed.
#[no_mangle]
pub unsafe extern "C" fn m4npu_adapter_free(adapter: *mut m4npu_adapter) {
    if !adapter.is_null() {
        // SAFETY: made by Box::into_raw in adapter_handle, freed once.
        let _ = catch_unwind(AssertUnwindSafe(|| drop(unsafe { Box::from_raw(adapter) })));
    }
}

/// The adapter's name ("" for NULL); valid while the adapter is loaded.
///
/// # Safety
/// `adapter` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn m4npu_adapter_name(adapter: *const m4npu_adapter) -> *const c_char {
    // SAFETY: the caller's contract.
    match unsafe { adapter.as_ref() } {
        Some(a) => a.name.as_ptr(),
        None => c"".as_ptr(),
    }
}

/// Writes the best `max_labels` labels (best first) to `labels`; returns
/// how many labels the head has (may exceed `max_labels`), or -errno.
fn write_labels(adapter: &m4npu_adapter, got: Vec<m4npu::Label>, labels: *mut m4npu_label, max_labels: usize) -> Outcome {
    if labels.is_null() && max_labels > 0 {
        return Err(null("labels"));
    }
    for (i, l) in got.iter().take(max_labels).enumerate() {
        let name = adapter.labels.get(l.index).map_or(ptr::null(), |n| n.as_ptr());
        let c = m4npu_label { index: l.index as u32, score: l.score, logit: l.logit, name };
        // SAFETY: `labels` has room for `max_labels` entries (caller's
        // contract) and i < max_labels.
        unsafe { labels.add(i).write(c) };
    }
    count(got.len())
}

/// The device and adapter of a task call, checked to be one context.
///
/// # Safety
/// Both are NULL or live handles.
unsafe fn pair<'a>(dev: *const m4npu_device, adapter: *const m4npu_adapter) -> Result<(&'a m4npu_device, &'a m4npu_adapter), Failure> {
    // SAFETY: the caller's contract.
    let (d, a) = unsafe { (handle(dev, "dev")?, handle(adapter, "adapter")?) };
    if !Arc::ptr_eq(&d.dev, &a.dev) {
        return Err(Failure::new(EINVAL, "the adapter was loaded through another device handle (adapters belong to one context)"));
    }
    Ok((d, a))
}

/// Classifies `text` with a classify adapter: up to `max_labels` labels,
/// best first, into `labels`. Returns the number of labels of the head
/// (call with `max_labels` 0 to size the array), or -errno (-ENXIO: no
/// NPU device serves jobs; -EINVAL: not a text classifier).
///
/// # Safety
/// `dev`, `adapter`: NULL or live handles; `text` NULL or NUL-terminated;
/// `labels` NULL or room for `max_labels` entries.
#[no_mangle]
pub unsafe extern "C" fn m4npu_classify(
    dev: *const m4npu_device,
    adapter: *const m4npu_adapter,
    text: *const c_char,
    labels: *mut m4npu_label,
    max_labels: usize,
) -> c_int {
    ffi(|| {
        // SAFETY: the caller's contract.
        let ((d, a), text) = unsafe { (pair(dev, adapter)?, text_arg(text, "text")?) };
        let got = d.dev.classify(&a.adapter, text)?;
        write_labels(a, got, labels, max_labels)
    })
}

/// Classifies `len` feature values at `features`, rows of `dim` values,
/// with an adapter that takes feature vectors. Returns as `m4npu_classify`.
///
/// # Safety
/// As `m4npu_classify`; `features` NULL or `len` readable floats.
#[no_mangle]
pub unsafe extern "C" fn m4npu_classify_features(
    dev: *const m4npu_device,
    adapter: *const m4npu_adapter,
    features: *const f32,
    len: usize,
    dim: usize,
    labels: *mut m4npu_label,
    max_labels: usize,
) -> c_int {
    ffi(|| {
        // SAFETY: the caller's contract.
        let (d, a) = unsafe { pair(dev, adapter) }?;
        if features.is_null() {
            return Err(null("features"));
        }
        // SAFETY: non-null with `len` readable floats by the caller's contract.
        let values = unsafe { std::slice::from_raw_parts(features, len) };
        let got = d.dev.classify_features(&a.adapter, values, dim)?;
        write_labels(a, got, labels, max_labels)
    })
}

/// The sentence embedding of `text` (text encoder, L2-normalised): up to
/// `cap` values into `out`. Returns the embedding's dimension (may exceed
/// `cap`; `out` may be NULL with `cap` 0), or -errno.
///
/// # Safety
/// `dev` NULL or a live handle; `text` NULL or NUL-terminated; `out` NULL or room for `cap` floats.
#[no_mangle]
pub unsafe extern "C" fn m4npu_embed(dev: *const m4npu_device, text: *const c_char, out: *mut f32, cap: usize) -> c_int {
    ffi(|| {
        // SAFETY: the caller's contract.
        let (d, text) = unsafe { (handle(dev, "dev")?, text_arg(text, "text")?) };
        if out.is_null() && cap > 0 {
            return Err(null("out"));
        }
        let v = d.dev.embed(text)?;
        let n = v.len().min(cap);
        if n > 0 {
            // SAFETY: `out` has room for `cap` >= n floats (caller's contract).
            unsafe { ptr::copy_nonoverlapping(v.as_ptr(), out, n) };
        }
        count(v.len())
    })
}

/// Generates text after `prompt` (greedy), through `adapter`'s LoRA if not
/// NULL, with room for `max_tokens` tokens (prompt and generated): calls
/// `on_token` with each piece as it comes. Ends at an end-of-text token,
/// at `max_tokens`, or when `on_token` returns nonzero. Returns the number
/// of tokens generated, or -errno.
///
/// # Safety
/// `dev` NULL or a live handle; `adapter` NULL or a live handle of the same
/// device; `prompt` NULL or NUL-terminated; `on_token` NULL or a function
/// safe to call with `user`.
#[no_mangle]
pub unsafe extern "C" fn m4npu_generate(
    dev: *const m4npu_device,
    adapter: *const m4npu_adapter,
    prompt: *const c_char,
    max_tokens: usize,
    on_token: m4npu_token_fn,
    user: *mut c_void,
) -> c_int {
    ffi(|| {
        // SAFETY: the caller's contract.
        let prompt = unsafe { text_arg(prompt, "prompt") }?;
        let (d, a) = if adapter.is_null() {
            // SAFETY: the caller's contract.
            (unsafe { handle(dev, "dev") }?, None)
        } else {
            // SAFETY: the caller's contract.
            let (d, a) = unsafe { pair(dev, adapter) }?;
            (d, Some(a))
        };
        let on_token = on_token.ok_or_else(|| null("on_token"))?;
        let mut session = match a {
            Some(a) => d.dev.generate_with(&a.adapter, prompt, max_tokens)?,
            None => d.dev.generate(prompt, max_tokens)?,
        };
        let mut tokens = 0usize;
        for piece in session.by_ref() {
            let piece = piece?;
            tokens += 1;
            let c = CString::new(piece.replace('\0', " ")).unwrap_or_default();
            // SAFETY: the caller's contract on `on_token` and `user`; `c`
            // is NUL-terminated and lives across the call.
            if unsafe { on_token(c.as_ptr(), c.as_bytes().len(), user) } != 0 {
                break;
            }
        }
        count(tokens)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn last_error() -> String {
        // SAFETY: m4npu_last_error returns a valid NUL-terminated string.
        unsafe { CStr::from_ptr(m4npu_last_error()) }.to_string_lossy().into_owned()
    }

    fn errno() -> c_int {
        // SAFETY: this thread's errno.
        unsafe { *libc::__errno_location() }
    }

    #[test]
    fn missing_device_is_enoent_with_a_message() {
        let mut dev = ptr::null_mut();
        // SAFETY: valid string and out pointer.
        let r = unsafe { m4npu_open(c"/nonexistent/m4npu".as_ptr(), &mut dev) };
        assert_eq!(r, -libc::ENOENT);
        assert_eq!(errno(), libc::ENOENT);
        assert!(dev.is_null());
        let msg = last_error();
        assert!(msg.contains("/nonexistent/m4npu") && msg.contains("is the m4npu module loaded?"), "{msg}");
    }

    #[test]
    fn a_file_that_is_not_the_device_is_refused() {
        let mut dev = ptr::null_mut();
        // SAFETY: valid string and out pointer.
        let r = unsafe { m4npu_open(c"/dev/null".as_ptr(), &mut dev) };
        assert!(r < 0 && r == -errno(), "{r}");
        assert!(dev.is_null());
        assert!(last_error().contains("GET_INFO"), "{}", last_error());
    }

    #[test]
    fn null_arguments_are_einval() {
        let mut adapter = ptr::null_mut();
        // SAFETY: NULL handles are part of the contract.
        unsafe {
            assert_eq!(m4npu_open(ptr::null(), ptr::null_mut()), -EINVAL);
            assert_eq!(last_error(), "out is NULL");
            assert_eq!(m4npu_adapter_load_file(ptr::null(), c"x.m4a".as_ptr(), &mut adapter), -EINVAL);
            assert_eq!(last_error(), "dev is NULL");
            assert_eq!(m4npu_embed(ptr::null(), c"hi".as_ptr(), ptr::null_mut(), 0), -EINVAL);
            assert_eq!(m4npu_classify(ptr::null(), ptr::null(), c"hi".as_ptr(), ptr::null_mut(), 0), -EINVAL);
            assert_eq!(m4npu_generate(ptr::null(), ptr::null(), c"hi".as_ptr(), 8, None, ptr::null_mut()), -EINVAL);
            assert_eq!(m4npu_device_info(ptr::null(), ptr::null_mut()), -EINVAL);
            assert_eq!(errno(), EINVAL);
            // Freeing NULL is a no-op, as free(3).
            m4npu_close(ptr::null_mut());
            m4npu_adapter_free(ptr::null_mut());
            assert_eq!(CStr::from_ptr(m4npu_adapter_name(ptr::null())), c"");
        }
        assert!(adapter.is_null());
    }

    #[test]
    fn errors_are_per_thread() {
        // SAFETY: NULL out pointer is part of the contract.
        unsafe { m4npu_open(ptr::null(), ptr::null_mut()) };
        let other = std::thread::spawn(last_error).join().unwrap();
        assert_eq!(other, "");
        assert_eq!(last_error(), "out is NULL");
    }

    #[test]
    fn errno_of_every_library_error() {
        let f = Failure::from(Error::NoNpuDevice);
        assert_eq!((f.errno, f.message.contains("vnpud")), (libc::ENXIO, true));
        assert_eq!(Failure::from(Error::InvalidAdapter("bad magic".into())).errno, EINVAL);
        assert_eq!(Failure::from(Error::UapiMismatch { driver: 2 << 16, library: 1 << 16 }).errno, EPROTO);
        assert_eq!(Failure::from(Error::Tokenizer("x".into())).errno, EINVAL);
    }

    #[test]
    fn panics_do_not_cross_the_api() {
        let r = ffi(|| panic!("boom"));
        assert_eq!(r, -ENOTRECOVERABLE);
        assert!(last_error().contains("panicked"));
    }

    #[test]
    fn version_is_the_crate_version() {
        // SAFETY: a static NUL-terminated string.
        assert_eq!(unsafe { CStr::from_ptr(m4npu_version()) }.to_str().unwrap(), env!("CARGO_PKG_VERSION"));
    }

    /// The committed header is cbindgen's output for this crate
    /// (`M4NPU_BLESS=1` rewrites it).
    #[test]
    fn header_is_cbindgen_output() {
        let dir = env!("CARGO_MANIFEST_DIR");
        let config = cbindgen::Config::from_file(format!("{dir}/cbindgen.toml")).unwrap();
        let mut out = Vec::new();
        cbindgen::Builder::new().with_crate(dir).with_config(config).generate().expect("cbindgen").write(&mut out);
        let path = format!("{dir}/include/m4npu.h");
        if std::env::var_os("M4NPU_BLESS").is_some() {
            std::fs::write(&path, &out).unwrap();
        }
        let committed = std::fs::read(&path).unwrap_or_default();
        assert!(committed == out, "{path} is not cbindgen's output: run M4NPU_BLESS=1 cargo test -p m4npu-c header");
    }
}
