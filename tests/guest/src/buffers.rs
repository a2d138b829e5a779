//! Buffer objects: allocation, mapping, zeroing, quota, isolation.

use std::os::fd::AsRawFd;
use std::process::Command;

use anyhow::{bail, ensure, Context, Result};
use m4npu::{uapi, Device, Error};

use crate::raw::{errno_name, ioctl};

const MIB: usize = 1 << 20;

fn bo_create_raw(dev: &Device, size: u64, flags: u32) -> Result<uapi::BoCreate, i32> {
    let mut req = uapi::BoCreate { size, flags, ..Default::default() };
    ioctl(dev, uapi::IOC_BO_CREATE, &mut req as *mut _ as usize).map(|_| req)
}

fn bo_destroy_raw(dev: &Device, handle: u32, pad: u32) -> Result<i32, i32> {
    let req = uapi::BoDestroy { handle, pad };
    ioctl(dev, uapi::IOC_BO_DESTROY, &req as *const _ as usize)
}

fn mmap_raw(dev: &Device, len: usize, offset: u64, flags: i32) -> Result<*mut libc::c_void, i32> {
    // SAFETY: a fresh mapping at a kernel-chosen address.
    let p = unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, flags, dev.as_raw_fd(), offset as i64) };
    if p == libc::MAP_FAILED {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    } else {
        Ok(p)
    }
}

fn pool_used() -> Result<u64> {
    Ok(Device::open()?.info()?.pool_used)
}

pub fn buffer_roundtrip_and_zeroed() -> Result<()> {
    let dev = Device::open()?;
    let before = dev.info()?.pool_used;
    {
        let mut buf = dev.alloc(3 * 4096 + 5)?;
        ensure!(buf.as_slice().iter().all(|&b| b == 0), "a new buffer is not zeroed");
        buf.as_mut_slice().fill(0xa5);
        ensure!(buf.as_slice().iter().all(|&b| b == 0xa5), "a buffer does not read back what was written");
        ensure!(dev.info()?.pool_used == before + 4 * 4096, "pool_used does not count the page-rounded buffer");
        let u = dev.usage()?;
        ensure!(u.memory_bytes == 4 * 4096 && u.buffers == 1, "fdinfo says {u:?}");
    }
    ensure!(dev.info()?.pool_used == before, "destroying the buffer did not return its memory");
    // The same pages come back first (first fit): they must be zero again.
    let buf = dev.alloc(4 * 4096)?;
    ensure!(buf.as_slice().iter().all(|&b| b == 0), "reused NPU memory was not zeroed");
    Ok(())
}

pub fn bad_buffer_arguments() -> Result<()> {
    let dev = Device::open()?;
    let cases: [(&str, u64, u32, i32); 4] = [
        ("size 0", 0, 0, libc::EINVAL),
        ("unknown flags", 4096, 1, libc::EINVAL),
        ("size beyond any quota", u64::MAX, 0, libc::EDQUOT),
        ("size past the quota", 1 << 40, 0, libc::EDQUOT),
    ];
    for (what, size, flags, want) in cases {
        match bo_create_raw(&dev, size, flags) {
            Err(e) if e == want => {}
            other => bail!("BO_CREATE {what}: got {other:?}, want {}", errno_name(want)),
        }
    }
    let h = bo_create_raw(&dev, 4096, 0).map_err(|e| anyhow::anyhow!("create: {}", errno_name(e)))?.handle;
    ensure!(bo_destroy_raw(&dev, h, 1) == Err(libc::EINVAL), "BO_DESTROY with pad != 0 accepted");
    ensure!(bo_destroy_raw(&dev, 0, 0) == Err(libc::ENOENT), "BO_DESTROY of handle 0 not ENOENT");
    ensure!(bo_destroy_raw(&dev, h, 0) == Ok(0), "BO_DESTROY failed");
    ensure!(bo_destroy_raw(&dev, h, 0) == Err(libc::ENOENT), "double BO_DESTROY not ENOENT");
    ensure!(dev.usage()?.memory_bytes == 0, "usage left after destroy");
    Ok(())
}

pub fn bad_mappings_are_refused() -> Result<()> {
    let dev = Device::open()?;
    let bo = bo_create_raw(&dev, 2 * 4096, 0).map_err(|e| anyhow::anyhow!("create: {}", errno_name(e)))?;
    let shared = libc::MAP_SHARED;
    ensure!(mmap_raw(&dev, 4096, bo.mmap_offset, libc::MAP_PRIVATE) == Err(libc::EINVAL), "MAP_PRIVATE accepted");
    ensure!(mmap_raw(&dev, 3 * 4096, bo.mmap_offset, shared) == Err(libc::EINVAL), "mapping past the end accepted");
    ensure!(mmap_raw(&dev, 2 * 4096, bo.mmap_offset + 4096, shared) == Err(libc::EINVAL), "offset+len past the end accepted");
    ensure!(mmap_raw(&dev, 4096, 0, shared) == Err(libc::EINVAL), "offset 0 (no BO) accepted");
    ensure!(mmap_raw(&dev, 4096, bo.mmap_offset + (1 << 32), shared) == Err(libc::EINVAL), "unknown handle accepted");
    // A sub-range at a page offset inside the BO is fine.
    let p = mmap_raw(&dev, 4096, bo.mmap_offset + 4096, shared).map_err(|e| anyhow::anyhow!("{}", errno_name(e)))?;
    // SAFETY: unmapping our own mapping.
    unsafe { libc::munmap(p, 4096) };
    Ok(())
}

pub fn destroy_while_mapped_keeps_memory() -> Result<()> {
    let dev = Device::open()?;
    let base = pool_used()?;
    let bo = bo_create_raw(&dev, 4096, 0).map_err(|e| anyhow::anyhow!("create: {}", errno_name(e)))?;
    let p = mmap_raw(&dev, 4096, bo.mmap_offset, libc::MAP_SHARED).map_err(|e| anyhow::anyhow!("{}", errno_name(e)))?;
    // SAFETY: a live 4096-byte mapping.
    let page = unsafe { std::slice::from_raw_parts_mut(p.cast::<u8>(), 4096) };
    page.fill(7);
    ensure!(bo_destroy_raw(&dev, bo.handle, 0) == Ok(0));
    // The handle is gone, the mapping and its memory are not.
    ensure!(page.iter().all(|&b| b == 7), "mapping changed after BO_DESTROY");
    ensure!(pool_used()? == base + 4096, "memory freed while still mapped");
    // A fork's copy of the mapping holds its own reference.
    // SAFETY: the child only exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: leave the child at once.
        unsafe { libc::_exit(0) };
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    page[0] = 8;
    // SAFETY: unmapping our own mapping.
    unsafe { libc::munmap(p, 4096) };
    ensure!(pool_used()? == base, "memory not freed after the last unmap");
    Ok(())
}

pub fn quota_and_pool_exhaustion() -> Result<()> {
    let info = Device::open()?.info()?;
    let dev = Device::open()?;
    let quota = dev.usage()?.quota_bytes as usize;
    ensure!(quota == 64 * MIB, "default quota is {quota}");
    let big = dev.alloc(quota - 4096)?;
    match dev.alloc(8192) {
        Err(Error::QuotaExceeded { used, quota: q, requested }) => {
            ensure!(used == (quota - 4096) as u64 && q == quota as u64 && requested == 8192);
        }
        other => bail!("allocation past the quota: got {other:?}"),
    }
    let _fits = dev.alloc(4096).context("the last page within the quota")?;
    drop(big);
    // Fill the pool from several contexts: the one that finds no room gets ENOSPC.
    let free = (info.pool_size - info.pool_used) as usize;
    let mut devs = Vec::new();
    let mut bufs = Vec::new();
    for _ in 0..=free / quota + 1 {
        devs.push(Device::open()?);
    }
    let mut full = false;
    for d in &devs {
        match d.alloc(quota) {
            Ok(b) => bufs.push(b),
            Err(Error::NpuMemoryFull { .. }) => {
                full = true;
                break;
            }
            Err(e) => bail!("unexpected error while filling the pool: {e}"),
        }
    }
    ensure!(full, "filled {} x {quota} bytes of a {free}-byte pool without ENOSPC", bufs.len());
    Ok(())
}

pub fn contexts_are_isolated() -> Result<()> {
    let a = Device::open()?;
    let mut bufs = Vec::new();
    for i in 0..8u8 {
        let mut b = a.alloc(4096)?;
        b.as_mut_slice().fill(0xc0 | i);
        bufs.push(b);
    }
    let handles: Vec<u32> = bufs.iter().map(|b| b.handle()).collect();
    // Another process: none of A's handles or offsets resolve there.
    let arg = handles.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
    let out = Command::new("/proc/self/exe").args(["--probe-foreign-handles", &arg]).output()?;
    ensure!(
        out.status.success(),
        "a second process reached A's buffers: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // A second fd of this process is a separate context too.
    probe_foreign_handles(&Device::open()?, &handles)?;
    // A's data survives the probes.
    ensure!(bufs.iter().enumerate().all(|(i, b)| b.as_slice().iter().all(|&x| x == 0xc0 | i as u8)));
    Ok(())
}

/// From a context that is not A's: every handle A has, and many it has not,
/// must neither destroy nor map anything. New buffers must read as zero.
pub fn probe_foreign_handles(dev: &Device, foreign: &[u32]) -> Result<()> {
    let mut tried: Vec<u32> = foreign.to_vec();
    tried.extend(0..=4096);
    tried.extend([u32::MAX, u32::MAX - 1, 1 << 31]);
    for &h in &tried {
        match bo_destroy_raw(dev, h, 0) {
            Err(libc::ENOENT) => {}
            other => bail!("BO_DESTROY of foreign handle {h}: {other:?}, want ENOENT"),
        }
        match mmap_raw(dev, 4096, u64::from(h) << 32, libc::MAP_SHARED) {
            Err(libc::EINVAL) => {}
            other => bail!("mmap of foreign handle {h}'s offset: {other:?}, want EINVAL"),
        }
    }
    let fresh = dev.alloc(64 * 4096)?;
    ensure!(fresh.as_slice().iter().all(|&b| b == 0), "a new buffer shows another context's data");
    Ok(())
}

pub fn fdinfo_reports_context() -> Result<()> {
    let dev = Device::open()?;
    let id = dev.info()?.context_id;
    let _b = dev.alloc(5 * 4096)?;
    let text = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", dev.as_raw_fd()))?;
    for want in [
        "drm-driver:\tm4npu".to_string(),
        format!("drm-client-id:\t{id}"),
        "drm-memory-npu:\t20 KiB".into(),
        format!("m4npu-pid:\t{}", std::process::id()),
        "m4npu-bos:\t1".into(),
        "drm-engine-npu:\t".into(),
    ] {
        ensure!(text.contains(&want), "fdinfo lacks {want:?}:\n{text}");
    }
    Ok(())
}

/// Every `madvise()` advice on a BO mapping: each either works or fails
/// with an errno, and never loses the BO's contents. `MADV_DONTNEED` drops
/// the page tables of a shared mapping; the pages fault back in as the same
/// NPU memory (what another mapping of the BO sees), not fresh zero pages.
/// Run in a child process, so that a SIGBUS shows as a failure here.
pub fn bo_mappings_take_madvise() -> Result<()> {
    let dev = Device::open()?;
    let base = pool_used()?;
    const PAGES: usize = 4;
    let len = PAGES * 4096;
    let bo = bo_create_raw(&dev, len as u64, 0).map_err(|e| anyhow::anyhow!("create: {}", errno_name(e)))?;
    let map = || mmap_raw(&dev, len, bo.mmap_offset, libc::MAP_SHARED).map_err(|e| anyhow::anyhow!("mmap: {}", errno_name(e)));
    let (p, other) = (map()?, map()?);
    // SAFETY: two live mappings of `len` bytes of the same BO.
    let (mem, seen) = unsafe { (std::slice::from_raw_parts_mut(p.cast::<u8>(), len), std::slice::from_raw_parts(other.cast::<u8>(), len)) };
    let fill = |mem: &mut [u8], seed: u8| mem.chunks_mut(4096).enumerate().for_each(|(i, pg)| pg.fill(seed + i as u8));
    let intact = |mem: &[u8], seed: u8| mem.chunks(4096).enumerate().all(|(i, pg)| pg.iter().all(|&b| b == seed + i as u8));
    fill(mem, 1);
    let advices = [
        ("NORMAL", libc::MADV_NORMAL),
        ("RANDOM", libc::MADV_RANDOM),
        ("SEQUENTIAL", libc::MADV_SEQUENTIAL),
        ("WILLNEED", libc::MADV_WILLNEED),
        ("DONTNEED", libc::MADV_DONTNEED),
        ("FREE", libc::MADV_FREE),
        ("REMOVE", libc::MADV_REMOVE),
        ("DONTFORK", libc::MADV_DONTFORK),
        ("DOFORK", libc::MADV_DOFORK),
        ("MERGEABLE", libc::MADV_MERGEABLE),
        ("HUGEPAGE", libc::MADV_HUGEPAGE),
        ("DONTDUMP", libc::MADV_DONTDUMP),
        ("DODUMP", libc::MADV_DODUMP),
        ("WIPEONFORK", libc::MADV_WIPEONFORK),
        ("COLD", libc::MADV_COLD),
        ("PAGEOUT", libc::MADV_PAGEOUT),
        ("POPULATE_READ", libc::MADV_POPULATE_READ),
        ("POPULATE_WRITE", libc::MADV_POPULATE_WRITE),
    ];
    // SAFETY: the child only touches these mappings and exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let mut code = 0;
        for (k, (name, advice)) in advices.iter().enumerate() {
            // SAFETY: advice on our own mapping.
            let r = unsafe { libc::madvise(p, len, *advice) };
            let err = std::io::Error::last_os_error();
            if !intact(mem, 1 + 8 * k as u8) || !intact(seen, 1 + 8 * k as u8) {
                println!("    madvise {name}: the BO's contents changed");
                code = 1;
            }
            if *advice == libc::MADV_DONTNEED && r != 0 {
                println!("    madvise DONTNEED: {err}");
                code = 1;
            }
            // Writes after the advice reach the BO (the other mapping).
            fill(mem, 1 + 8 * (k as u8 + 1));
        }
        // A split mapping faults back the right pages of the BO.
        // SAFETY: unmapping the first page of our mapping, advising the rest.
        unsafe {
            libc::munmap(p, 4096);
            libc::madvise(p.cast::<u8>().add(4096).cast(), len - 4096, libc::MADV_DONTNEED);
        }
        let last = 1 + 8 * advices.len() as u8;
        if !intact(&mem[4096..], last + 1) || !intact(seen, last) {
            println!("    a split mapping lost the BO's contents");
            code = 1;
        }
        // SAFETY: leave the child at once.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    ensure!(!libc::WIFSIGNALED(status), "the child died of signal {} touching its mapping", libc::WTERMSIG(status));
    ensure!(libc::WEXITSTATUS(status) == 0, "the BO's contents did not survive madvise (see above)");
    // Unaffected here: the parent's mappings and the BO.
    ensure!(intact(seen, 1 + 8 * advices.len() as u8), "the BO's contents differ in the parent");
    // SAFETY: unmapping our own mappings.
    unsafe {
        libc::munmap(p, len);
        libc::munmap(other, len);
    }
    ensure!(bo_destroy_raw(&dev, bo.handle, 0) == Ok(0));
    ensure!(pool_used()? == base, "memory not freed after the last unmap");
    Ok(())
}
