// SPDX-License-Identifier: GPL-2.0

//! Module parameters. 6.12's `module!` has no `params:` block (upstream
//! gained one later), so a parameter is declared by hand the way C's
//! `module_param()` does: a `struct kernel_param` in the `__param` section
//! that points at our storage, plus `parm`/`parmtype` modinfo for modinfo(8).

use core::cell::UnsafeCell;

use kernel::{ffi::c_char, str::CStr};

/// Storage of a read-only (mode 0444) parameter.
///
/// The kernel's parameter parser writes it while loading the module, before
/// `init` runs; with no sysfs write permission nothing writes it afterwards,
/// so reads need no lock.
#[repr(transparent)]
pub(crate) struct ModuleParam<T>(UnsafeCell<T>);

// SAFETY: written only before `init` (see above), read-only afterwards.
unsafe impl<T> Sync for ModuleParam<T> {}

impl<T: Copy> ModuleParam<T> {
    pub(crate) const fn new(default: T) -> Self {
        Self(UnsafeCell::new(default))
    }

    /// Where `param_ops_*` store the value.
    pub(crate) const fn as_arg(&self) -> *mut kernel::ffi::c_void {
        self.0.get().cast()
    }

    pub(crate) fn get(&self) -> T {
        // SAFETY: no writer after load (type invariant).
        unsafe { *self.0.get() }
    }
}

impl ModuleParam<*const c_char> {
    /// A `charp` parameter's string.
    pub(crate) fn as_cstr(&self) -> &CStr {
        // SAFETY: `param_ops_charp` stores a NUL-terminated string that lives
        // until the module is unloaded; the default is a static C string.
        unsafe { CStr::from_char_ptr(self.get()) }
    }
}

/// A `struct kernel_param`, made `Sync` to live in a static.
#[repr(transparent)]
pub(crate) struct KernelParam(pub(crate) kernel::bindings::kernel_param);

// SAFETY: read-only after load; the kernel owns all access to it.
unsafe impl Sync for KernelParam {}

/// Copies `s` into a byte array, for `.modinfo` strings.
pub(crate) const fn modinfo<const N: usize>(s: &str) -> [u8; N] {
    let b = s.as_bytes();
    let mut a = [0u8; N];
    let mut i = 0;
    while i < N {
        a[i] = b[i];
        i += 1;
    }
    a
}

/// `module_param!(STATIC, "name", Type = default, param_ops_x, "type", "description")`
/// declares a read-only parameter `name`, read through `STATIC.get()`.
macro_rules! module_param {
    ($static:ident, $name:literal, $ty:ty = $default:expr, $ops:ident, $tname:literal, $desc:literal) => {
        pub(crate) static $static: $crate::compat::module_param::ModuleParam<$ty> =
            $crate::compat::module_param::ModuleParam::new($default);

        const _: () = {
            extern "C" {
                // Typed as a byte so that the lint for FFI-safe types does
                // not look into `struct module`, whose members are empty
                // structs in some configurations.
                static __this_module: ::kernel::types::Opaque<u8>;
            }

            #[link_section = "__param"]
            #[used(compiler)]
            static PARAM: $crate::compat::module_param::KernelParam =
                $crate::compat::module_param::KernelParam(::kernel::bindings::kernel_param {
                    name: concat!($name, "\0").as_ptr().cast(),
                    // SAFETY: only the address of the module's own `struct module` is taken.
                    mod_: unsafe { __this_module.get().cast() },
                    ops: ::core::ptr::addr_of!(::kernel::bindings::$ops),
                    perm: 0o444,
                    level: -1,
                    flags: 0,
                    __bindgen_anon_1: ::kernel::bindings::kernel_param__bindgen_ty_1 { arg: $static.as_arg() },
                });

            const TYPE: &str = concat!("parmtype=", $name, ":", $tname, "\0");
            #[link_section = ".modinfo"]
            #[used(compiler)]
            static PARMTYPE: [u8; TYPE.len()] = $crate::compat::module_param::modinfo(TYPE);

            const DESC: &str = concat!("parm=", $name, ":", $desc, "\0");
            #[link_section = ".modinfo"]
            #[used(compiler)]
            static PARM: [u8; DESC.len()] = $crate::compat::module_param::modinfo(DESC);
        };
    };
}

pub(crate) use module_param;
