// SPDX-License-Identifier: GPL-2.0

//! Misc devices, after upstream `kernel::miscdevice` (Linux 6.13+, with the
//! per-registration data of 6.16). 6.12 exports `misc_register()` but has no
//! bindings for it, so `struct miscdevice` is declared here by hand.

use core::{
    marker::{PhantomData, PhantomPinned},
    mem::MaybeUninit,
    ptr::{addr_of, addr_of_mut},
};

use kernel::{
    bindings,
    build_error,
    device::Device,
    error::VTABLE_DEFAULT_ERROR,
    ffi::{c_char, c_int, c_long, c_uint, c_ulong, c_void},
    prelude::*,
    str::CStr,
    types::{ForeignOwnable, Opaque},
};

use super::{
    file::File,
    mm::Vma,
    seq_file::SeqFile,
    task::FlOwner,
    uring_cmd::{IoUringCmd, IssueFlags},
};

/// `struct miscdevice` of `include/linux/miscdevice.h` (stable since 5.x).
#[repr(C)]
struct RawMiscDevice {
    minor: c_int,
    name: *const c_char,
    // `const struct file_operations *`, typed void as `parent` below.
    fops: *const c_void,
    list: bindings::list_head,
    // `struct device *`; typed as void so that the lint for FFI-safe types
    // does not wander into `struct device`'s zero-sized members.
    parent: *mut c_void,
    this_device: *mut c_void,
    groups: *mut *const bindings::attribute_group,
    nodename: *const c_char,
    mode: bindings::umode_t,
}

// As helpers.c asserts of the C struct (and of the minor below).
const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(offset_of!(RawMiscDevice, minor) == 0 && offset_of!(RawMiscDevice, name) == 8);
    assert!(offset_of!(RawMiscDevice, fops) == 16 && offset_of!(RawMiscDevice, list) == 24);
    assert!(offset_of!(RawMiscDevice, parent) == 40 && offset_of!(RawMiscDevice, this_device) == 48);
    assert!(offset_of!(RawMiscDevice, groups) == 56 && offset_of!(RawMiscDevice, nodename) == 64);
    assert!(offset_of!(RawMiscDevice, mode) == 72 && size_of::<RawMiscDevice>() == 80);
};

const MISC_DYNAMIC_MINOR: c_int = 255;

extern "C" {
    fn misc_register(misc: *mut RawMiscDevice) -> c_int;
    fn misc_deregister(misc: *mut RawMiscDevice);
}

/// Options of a misc device registration.
pub(crate) struct MiscDeviceOptions {
    /// Node name under `/dev`.
    pub(crate) name: &'static CStr,
    /// Permissions of the node (upstream leaves this to udev; we set it so
    /// devtmpfs-only systems such as our test guest get the intended mode).
    pub(crate) mode: u16,
}

/// A registered misc device; deregistered on drop.
///
/// `file_operations` live inside the registration rather than in a static so
/// that `owner` can be set: an open file then pins the module.
#[repr(C)]
pub(crate) struct MiscDeviceRegistration<T: MiscDevice> {
    // Must stay first: the file operations find the registration from the
    // `struct miscdevice` pointer that misc_open() leaves in `private_data`.
    inner: Opaque<RawMiscDevice>,
    fops: Opaque<bindings::file_operations>,
    data: T::RegistrationData,
    _pin: PhantomPinned,
}

// SAFETY: misc_register()/misc_deregister() may be called from any thread, and
// the raw pointers inside are only used by them and by the VFS.
unsafe impl<T: MiscDevice> Send for MiscDeviceRegistration<T> {}
// SAFETY: `&self` gives access only to `data`, which is `Sync`.
unsafe impl<T: MiscDevice> Sync for MiscDeviceRegistration<T> {}

impl<T: MiscDevice> MiscDeviceRegistration<T> {
    /// Registers a misc device whose files are served by `T`.
    pub(crate) fn register(
        opts: MiscDeviceOptions,
        module: &'static ThisModule,
        data: T::RegistrationData,
    ) -> impl PinInit<Self, Error> {
        let init = move |slot: *mut Self| {
            // SAFETY: `slot` is valid for writes and pinned (pin_init contract).
            unsafe {
                let fops = Opaque::raw_get(addr_of!((*slot).fops));
                fops.write(VtableHelper::<T>::FILE_OPERATIONS);
                (*fops).owner = module.as_ptr();
                addr_of_mut!((*slot).data).write(data);

                let misc = Opaque::raw_get(addr_of!((*slot).inner));
                // SAFETY: all-zero is a valid `struct miscdevice` (null
                // pointers, empty list head that misc_register() initialises).
                misc.write(MaybeUninit::zeroed().assume_init());
                (*misc).minor = MISC_DYNAMIC_MINOR;
                (*misc).name = opts.name.as_char_ptr();
                (*misc).fops = fops.cast();
                (*misc).mode = opts.mode;
                let ret = misc_register(misc);
                if ret != 0 {
                    core::ptr::drop_in_place(addr_of_mut!((*slot).data));
                    return Err(Error::from_errno(ret));
                }
            }
            Ok(())
        };
        // SAFETY: `init` either initialises every field and returns `Ok`, or
        // drops what it wrote and returns `Err`; it never moves `*slot`.
        unsafe { kernel::init::pin_init_from_closure(init) }
    }

    /// The device of the node, e.g. for the firmware loader (upstream:
    /// `MiscDeviceRegistration::device`).
    pub(crate) fn device(&self) -> &Device {
        // SAFETY: registered (type invariant), so misc_register() has set
        // `this_device`, which stays valid until deregistration, which
        // `&self` outlives.
        unsafe { Device::as_ref((*self.inner.get()).this_device.cast()) }
    }

    /// The data given at registration, shared by every open file.
    pub(crate) fn data(&self) -> &T::RegistrationData {
        &self.data
    }
}

impl<T: MiscDevice> Drop for MiscDeviceRegistration<T> {
    fn drop(&mut self) {
        // SAFETY: registered in `register()` (no registration exists
        // otherwise); misc_deregister() takes misc_mtx, so no open() is inside
        // our file operations afterwards, and open files pin the module and
        // with it this registration.
        unsafe { misc_deregister(self.inner.get()) };
    }
}

/// File operations of a misc device. Methods left out are absent from
/// `file_operations` (`#[vtable]`), as in C.
#[vtable]
pub(crate) trait MiscDevice: Sized {
    /// What the driver keeps in `file->private_data`.
    type Ptr: ForeignOwnable + Send + Sync;
    /// Shared by every file of the registration.
    type RegistrationData: Send + Sync;

    /// Called for each `open()`. Runs under the global `misc_mtx`: keep it short.
    fn open(file: &File, misc: &MiscDeviceRegistration<Self>) -> Result<Self::Ptr>;

    /// Called when the last reference to the file is gone.
    fn release(device: Self::Ptr, _file: &File) {
        drop(device);
    }

    /// `flush`: one of the file's descriptors is closed (each `close()`,
    /// unlike `release`), by the task whose file table is `owner`.
    fn flush(_device: <Self::Ptr as ForeignOwnable>::Borrowed<'_>, _file: &File, _owner: FlOwner) {
        build_error!(VTABLE_DEFAULT_ERROR)
    }

    /// `unlocked_ioctl` (and `compat_ioctl` through `compat_ptr_ioctl`: the
    /// UAPI has no pointers or longs, so 32-bit callers need no translation).
    fn ioctl(
        _device: <Self::Ptr as ForeignOwnable>::Borrowed<'_>,
        _file: &File,
        _cmd: u32,
        _arg: usize,
    ) -> Result<isize> {
        build_error!(VTABLE_DEFAULT_ERROR)
    }

    /// `mmap`: set up `vma` (mmap_lock is held for writing).
    fn mmap(_device: <Self::Ptr as ForeignOwnable>::Borrowed<'_>, _file: &File, _vma: &Vma) -> Result {
        build_error!(VTABLE_DEFAULT_ERROR)
    }

    /// `uring_cmd`: an `IORING_OP_URING_CMD` on the file, or (with
    /// [`IssueFlags::cancel`]) a request to cancel one marked cancelable.
    /// Returns the CQE's result, or `-EIOCBQUEUED` once the command is queued.
    fn uring_cmd(
        _device: <Self::Ptr as ForeignOwnable>::Borrowed<'_>,
        _cmd: &IoUringCmd<Self>,
        _flags: IssueFlags,
    ) -> Result<i32> {
        build_error!(VTABLE_DEFAULT_ERROR)
    }

    /// `show_fdinfo`: extra lines of `/proc/<pid>/fdinfo/<fd>`.
    fn show_fdinfo(_device: <Self::Ptr as ForeignOwnable>::Borrowed<'_>, _m: &SeqFile, _file: &File) {
        build_error!(VTABLE_DEFAULT_ERROR)
    }
}

struct VtableHelper<T: MiscDevice>(PhantomData<T>);

impl<T: MiscDevice> VtableHelper<T> {
    const FILE_OPERATIONS: bindings::file_operations = {
        // SAFETY: an all-zero `file_operations` is C's "no operations".
        let mut fops: bindings::file_operations = unsafe { MaybeUninit::zeroed().assume_init() };
        fops.open = Some(fops_open::<T>);
        fops.release = Some(fops_release::<T>);
        if T::HAS_FLUSH {
            fops.flush = Some(fops_flush::<T>);
        }
        if T::HAS_IOCTL {
            fops.unlocked_ioctl = Some(fops_ioctl::<T>);
            #[cfg(CONFIG_COMPAT)]
            {
                fops.compat_ioctl = Some(bindings::compat_ptr_ioctl);
            }
        }
        if T::HAS_MMAP {
            fops.mmap = Some(fops_mmap::<T>);
        }
        if T::HAS_URING_CMD {
            fops.uring_cmd = Some(fops_uring_cmd::<T>);
        }
        if T::HAS_SHOW_FDINFO {
            fops.show_fdinfo = Some(fops_show_fdinfo::<T>);
        }
        fops
    };
}

/// # Safety
///
/// Called by the VFS through misc_open() only.
unsafe extern "C" fn fops_open<T: MiscDevice>(
    _inode: *mut bindings::inode,
    raw_file: *mut bindings::file,
) -> c_int {
    // SAFETY: misc_open() stored our `struct miscdevice` in `private_data`
    // and holds misc_mtx across this call, so the registration is alive;
    // `inner` is at offset 0 of the `repr(C)` registration.
    let misc = unsafe { &*(*raw_file).private_data.cast::<MiscDeviceRegistration<T>>() };
    // SAFETY: `raw_file` is valid for the duration of this call.
    let file = unsafe { File::from_raw_file(raw_file) };
    match T::open(file, misc) {
        Ok(ptr) => {
            // SAFETY: the file is not yet visible to anyone else.
            unsafe { (*raw_file).private_data = ptr.into_foreign().cast_mut() };
            0
        }
        Err(e) => e.to_errno(),
    }
}

/// # Safety
///
/// Called by the VFS once, after the last operation on a file that
/// `fops_open::<T>` opened successfully.
unsafe extern "C" fn fops_release<T: MiscDevice>(
    _inode: *mut bindings::inode,
    raw_file: *mut bindings::file,
) -> c_int {
    // SAFETY: `private_data` came from `into_foreign()` in `fops_open`, and
    // release is the last user of the file.
    let device = unsafe { <T::Ptr as ForeignOwnable>::from_foreign((*raw_file).private_data) };
    // SAFETY: `raw_file` is valid for the duration of this call.
    T::release(device, unsafe { File::from_raw_file(raw_file) });
    0
}

/// # Safety
///
/// Called by the VFS from `filp_flush()` on a file opened by `fops_open::<T>`.
unsafe extern "C" fn fops_flush<T: MiscDevice>(raw_file: *mut bindings::file, id: bindings::fl_owner_t) -> c_int {
    // SAFETY: the closing descriptor still holds a reference to the file,
    // so release has not run; `private_data` is as in `fops_ioctl`.
    let device = unsafe { <T::Ptr as ForeignOwnable>::borrow((*raw_file).private_data) };
    // SAFETY: `raw_file` is valid for the duration of this call.
    let file = unsafe { File::from_raw_file(raw_file) };
    T::flush(device, file, FlOwner::from_raw(id.cast()));
    0
}

/// # Safety
///
/// Called by the VFS on a file opened by `fops_open::<T>`.
unsafe extern "C" fn fops_ioctl<T: MiscDevice>(
    raw_file: *mut bindings::file,
    cmd: c_uint,
    arg: c_ulong,
) -> c_long {
    // SAFETY: between open and release `private_data` holds the value from
    // `into_foreign()`, and `from_foreign()` only runs in release.
    let device = unsafe { <T::Ptr as ForeignOwnable>::borrow((*raw_file).private_data) };
    // SAFETY: `raw_file` is valid for the duration of this call.
    let file = unsafe { File::from_raw_file(raw_file) };
    match T::ioctl(device, file, cmd, arg) {
        Ok(ret) => ret as c_long,
        Err(e) => e.to_errno() as c_long,
    }
}

/// # Safety
///
/// Called by the VFS for `mmap()` on a file opened by `fops_open::<T>`.
unsafe extern "C" fn fops_mmap<T: MiscDevice>(
    raw_file: *mut bindings::file,
    vma: *mut bindings::vm_area_struct,
) -> c_int {
    // SAFETY: as in `fops_ioctl`.
    let device = unsafe { <T::Ptr as ForeignOwnable>::borrow((*raw_file).private_data) };
    // SAFETY: `raw_file` is valid for the duration of this call.
    let file = unsafe { File::from_raw_file(raw_file) };
    // SAFETY: the VFS calls mmap with a VMA under construction and mmap_lock
    // held for writing, for the duration of this call.
    let vma = unsafe { Vma::from_raw(vma) };
    match T::mmap(device, file, vma) {
        Ok(()) => 0,
        Err(e) => e.to_errno(),
    }
}

/// # Safety
///
/// Called by io_uring for a command on a file opened by `fops_open::<T>`.
unsafe extern "C" fn fops_uring_cmd<T: MiscDevice>(cmd: *mut bindings::io_uring_cmd, flags: c_uint) -> c_int {
    // SAFETY: io_uring passes a live command that it does not complete
    // before we return, on a file of `T` (these are `T`'s operations).
    let cmd = unsafe { IoUringCmd::<T>::from_raw(cmd.cast()) };
    let flags = IssueFlags::from_raw(flags);
    if !flags.cancel() {
        cmd.clear_pdu();
    }
    match T::uring_cmd(cmd.data(), cmd, flags) {
        Ok(ret) => ret,
        Err(e) => e.to_errno(),
    }
}

/// # Safety
///
/// Called by procfs for an open file opened by `fops_open::<T>`.
unsafe extern "C" fn fops_show_fdinfo<T: MiscDevice>(m: *mut bindings::seq_file, raw_file: *mut bindings::file) {
    // SAFETY: procfs holds a reference to the file, so release has not run.
    let device = unsafe { <T::Ptr as ForeignOwnable>::borrow((*raw_file).private_data) };
    // SAFETY: `raw_file` is valid for the duration of this call.
    let file = unsafe { File::from_raw_file(raw_file) };
    // SAFETY: `m` is the seq_file of this show call.
    T::show_fdinfo(device, unsafe { SeqFile::from_raw(m) }, file);
}
