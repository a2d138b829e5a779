//! Job descriptors: what the NPU runs, on which of the context's buffers.

use std::marker::PhantomData;

use m4npu_uapi as uapi;

use crate::{Adapter, Buffer, Device, Error, Result};

/// What a job asks of the foundation model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// Pooled embedding of the input.
    Embed,
    /// The adapter's task head on the input; needs an adapter.
    Classify,
    /// One generation step; needs a state range (the session's KV cache).
    Generate,
    /// The input copied to the output (bring-up and tests).
    Echo,
}

impl Op {
    /// The `JOB_OP_*` value.
    ///
    /// ```
    /// assert_eq!(m4npu::Op::Echo.raw(), m4npu::uapi::JOB_OP_ECHO);
    /// ```
    pub const fn raw(self) -> u16 {
        match self {
            Op::Embed => uapi::JOB_OP_EMBED,
            Op::Classify => uapi::JOB_OP_CLASSIFY,
            Op::Generate => uapi::JOB_OP_GENERATE,
            Op::Echo => uapi::JOB_OP_ECHO,
        }
    }

    /// The op of a `JOB_OP_*` value, if it is one.
    ///
    /// ```
    /// use m4npu::Op;
    /// assert_eq!(Op::from_raw(Op::Generate.raw()), Some(Op::Generate));
    /// assert_eq!(Op::from_raw(0), None);
    /// ```
    pub const fn from_raw(op: u16) -> Option<Self> {
        Some(match op {
            uapi::JOB_OP_EMBED => Op::Embed,
            uapi::JOB_OP_CLASSIFY => Op::Classify,
            uapi::JOB_OP_GENERATE => Op::Generate,
            uapi::JOB_OP_ECHO => Op::Echo,
            _ => return None,
        })
    }
}

/// Dispatch order among waiting jobs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Priority {
    #[default]
    Normal,
    /// Before every normal and low job. Needs `CAP_SYS_NICE`
    /// ([`Error::PriorityNotPermitted`] otherwise).
    High,
    /// Only when nothing else waits.
    Low,
}

impl Priority {
    /// The `JOB_PRIO_*` value.
    ///
    /// ```
    /// assert_eq!(m4npu::Priority::default().raw(), m4npu::uapi::JOB_PRIO_NORMAL);
    /// ```
    pub const fn raw(self) -> u8 {
        match self {
            Priority::Normal => uapi::JOB_PRIO_NORMAL,
            Priority::High => uapi::JOB_PRIO_HIGH,
            Priority::Low => uapi::JOB_PRIO_LOW,
        }
    }
}

/// The buffer behind a range: its size and the [`Device`] (context) it
/// belongs to, by address, which is stable while the buffer borrows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Extent {
    size: u64,
    owner: usize,
}

const INPUT: usize = 0;
const OUTPUT: usize = 1;
const STATE: usize = 2;
const RANGE_NAMES: [&str; 3] = ["input", "output", "state"];

fn owner_of(dev: &Device) -> usize {
    dev as *const Device as usize
}

/// A job descriptor, built from the context's buffers and adapter, which it
/// borrows so that none of them can be dropped while it exists.
///
/// The library checks it before submission, so mistakes are reported in
/// words instead of a bare `EINVAL`; the driver checks it again.
///
/// ```no_run
/// use m4npu::{Device, JobDesc, Op};
/// let dev = Device::open()?;
/// let mut input = dev.alloc(4096)?;
/// input.as_mut_slice()[..5].copy_from_slice(b"hello");
/// let output = dev.alloc(4096)?;
/// let job = JobDesc::new(Op::Echo).input(&input, 0, 5).output(&output, 0, 4096);
/// let n = dev.run(&job)?;
/// assert_eq!(&output.as_slice()[..n], b"hello");
/// # Ok::<(), m4npu::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct JobDesc<'a> {
    raw: uapi::Job,
    extents: [Option<Extent>; 3],
    adapter_owner: Option<usize>,
    _borrows: PhantomData<&'a ()>,
}

impl<'a> JobDesc<'a> {
    /// A job running `op`, with no ranges yet and normal priority.
    ///
    /// ```
    /// use m4npu::{JobDesc, Op, Priority};
    /// let job = JobDesc::new(Op::Embed);
    /// assert_eq!(job.as_raw().op, Op::Embed.raw());
    /// assert_eq!(job.as_raw().priority, Priority::Normal.raw());
    /// ```
    pub fn new(op: Op) -> Self {
        Self {
            raw: uapi::Job { op: op.raw(), ..Default::default() },
            extents: [None; 3],
            adapter_owner: None,
            _borrows: PhantomData,
        }
    }

    /// What the device reads: `len` bytes at `offset` of `buf`.
    ///
    /// Jobs may each take a slice of one buffer:
    ///
    /// ```no_run
    /// use m4npu::{Device, JobDesc, Op};
    /// let dev = Device::open()?;
    /// let (input, output) = (dev.alloc(8192)?, dev.alloc(8192)?);
    /// let first = JobDesc::new(Op::Echo).input(&input, 0, 4096).output(&output, 0, 4096);
    /// let second = JobDesc::new(Op::Echo).input(&input, 4096, 4096).output(&output, 4096, 4096);
    /// # Ok::<(), m4npu::Error>(())
    /// ```
    pub fn input(self, buf: &'a Buffer<'_>, offset: usize, len: usize) -> Self {
        self.range(INPUT, buf.handle(), buf.len() as u64, owner_of(buf.device()), offset, len)
    }

    /// Where the device writes its result: at most `len` bytes at `offset`
    /// of `buf`. The job's result is how many it wrote (see [`JobDesc::input`]).
    pub fn output(self, buf: &'a Buffer<'_>, offset: usize, len: usize) -> Self {
        self.range(OUTPUT, buf.handle(), buf.len() as u64, owner_of(buf.device()), offset, len)
    }

    /// What the device reads and writes back (a generation session's KV
    /// cache): `len` bytes at `offset` of `buf`. A zeroed range (a fresh
    /// buffer) is an empty session; [`Device::generate`] manages all this.
    ///
    /// ```no_run
    /// # fn f(dev: &m4npu::Device, input: &m4npu::Buffer<'_>, len: usize) -> m4npu::Result<()> {
    /// use m4npu::{JobDesc, Op};
    /// let output = dev.alloc(64 * 1024)?;
    /// let kv = dev.alloc(8 << 20)?;
    /// let step = JobDesc::new(Op::Generate)
    ///     .input(input, 0, len)
    ///     .output(&output, 0, output.len())
    ///     .state(&kv, 0, kv.len());
    /// dev.run(&step)?;
    /// # Ok(()) }
    /// ```
    pub fn state(self, buf: &'a Buffer<'_>, offset: usize, len: usize) -> Self {
        self.range(STATE, buf.handle(), buf.len() as u64, owner_of(buf.device()), offset, len)
    }

    /// Runs the job with `adapter` on the foundation model (CLASSIFY needs
    /// one: its task head).
    ///
    /// ```no_run
    /// # fn f(dev: &m4npu::Device, input: &m4npu::Buffer<'_>, len: usize) -> m4npu::Result<()> {
    /// use m4npu::{JobDesc, Op};
    /// let sentiment = dev.load_adapter_file("sentiment.m4a")?;
    /// let logits = dev.alloc(4096)?;
    /// let job = JobDesc::new(Op::Classify).adapter(&sentiment).input(input, 0, len).output(&logits, 0, 4096);
    /// let n = dev.run(&job)?;
    /// # Ok(()) }
    /// ```
    pub fn adapter(mut self, adapter: &'a Adapter<'_>) -> Self {
        self.raw.adapter = adapter.handle();
        self.adapter_owner = Some(owner_of(adapter.device()));
        self
    }

    /// Where the job queues among the context's waiting jobs (default
    /// [`Priority::Normal`]).
    ///
    /// ```
    /// use m4npu::{JobDesc, Op, Priority};
    /// let urgent = JobDesc::new(Op::Embed).priority(Priority::High);
    /// assert_eq!(urgent.as_raw().priority, Priority::High.raw());
    /// ```
    pub fn priority(mut self, priority: Priority) -> Self {
        self.raw.priority = priority.raw();
        self
    }

    fn range(mut self, which: usize, handle: u32, size: u64, owner: usize, offset: usize, len: usize) -> Self {
        let r = uapi::BoRange { handle, pad: 0, offset: offset as u64, length: len as u64 };
        match which {
            INPUT => self.raw.input = r,
            OUTPUT => self.raw.output = r,
            _ => self.raw.state = r,
        }
        self.extents[which] = Some(Extent { size, owner });
        self
    }

    /// The descriptor as the driver receives it.
    ///
    /// ```
    /// let raw = *m4npu::JobDesc::new(m4npu::Op::Echo).as_raw();
    /// assert_eq!((raw.op, raw.adapter), (m4npu::uapi::JOB_OP_ECHO, 0));
    /// ```
    pub fn as_raw(&self) -> &uapi::Job {
        &self.raw
    }

    fn raw_range(&self, which: usize) -> &uapi::BoRange {
        match which {
            INPUT => &self.raw.input,
            OUTPUT => &self.raw.output,
            _ => &self.raw.state,
        }
    }

    /// The library's checks for a job run on `dev`: the driver's rules, in words.
    pub(crate) fn check_for(&self, dev: &Device) -> Result<()> {
        self.check_owner(owner_of(dev)).map_err(Error::InvalidJob)
    }

    fn check_owner(&self, dev: usize) -> std::result::Result<(), String> {
        for which in [INPUT, OUTPUT] {
            if self.extents[which].is_none() {
                return Err(format!("a job needs an {} range", RANGE_NAMES[which]));
            }
        }
        let mut spans = Vec::new();
        for (which, extent) in self.extents.iter().enumerate() {
            let Some(extent) = extent else { continue };
            let name = RANGE_NAMES[which];
            let r = self.raw_range(which);
            if extent.owner != dev {
                return Err(format!("the {name} buffer belongs to another Device (handles are per open of /dev/m4npu)"));
            }
            if r.length == 0 {
                return Err(format!("the {name} range is empty"));
            }
            let end = r.offset.checked_add(r.length).filter(|&e| e <= extent.size).ok_or_else(|| {
                format!("the {name} range ({} bytes at {}) lies outside its {}-byte buffer", r.length, r.offset, extent.size)
            })?;
            spans.push((name, r.handle, r.offset, end));
        }
        for (i, a) in spans.iter().enumerate() {
            for b in &spans[i + 1..] {
                if a.1 == b.1 && a.2 < b.3 && b.2 < a.3 {
                    return Err(format!("the {} and {} ranges overlap in the same buffer", a.0, b.0));
                }
            }
        }
        if self.adapter_owner.is_some_and(|o| o != dev) {
            return Err("the adapter belongs to another Device (handles are per open of /dev/m4npu)".into());
        }
        match Op::from_raw(self.raw.op) {
            Some(Op::Classify) if self.raw.adapter == 0 => Err("CLASSIFY needs an adapter (its task head)".into()),
            Some(Op::Generate) if self.extents[STATE].is_none() => {
                Err("GENERATE needs a state range (the session's KV cache)".into())
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEV: usize = 0x1000;
    const OTHER: usize = 0x2000;

    /// A job on fake buffers: (handle, size) pairs of device `DEV`.
    fn job(op: Op) -> JobDesc<'static> {
        JobDesc::new(op).range(INPUT, 1, 4096, DEV, 0, 100).range(OUTPUT, 2, 8192, DEV, 0, 8192)
    }

    fn refusal(j: &JobDesc<'_>) -> String {
        j.check_owner(DEV).expect_err("accepted")
    }

    #[test]
    fn builds_the_raw_descriptor() {
        let j = JobDesc::new(Op::Generate)
            .range(INPUT, 3, 4096, DEV, 16, 32)
            .range(OUTPUT, 4, 4096, DEV, 0, 64)
            .range(STATE, 5, 1 << 20, DEV, 4096, 8192)
            .priority(Priority::High);
        let raw = j.as_raw();
        assert_eq!(raw.op, uapi::JOB_OP_GENERATE);
        assert_eq!(raw.priority, uapi::JOB_PRIO_HIGH);
        assert_eq!((raw.flags, raw.adapter), (0, 0));
        assert_eq!(raw.input, uapi::BoRange { handle: 3, pad: 0, offset: 16, length: 32 });
        assert_eq!(raw.output, uapi::BoRange { handle: 4, pad: 0, offset: 0, length: 64 });
        assert_eq!(raw.state, uapi::BoRange { handle: 5, pad: 0, offset: 4096, length: 8192 });
        assert_eq!(j.check_owner(DEV), Ok(()));
    }

    #[test]
    fn ops_and_priorities_match_the_uapi() {
        for op in [Op::Embed, Op::Classify, Op::Generate, Op::Echo] {
            assert_eq!(Op::from_raw(op.raw()), Some(op));
            assert!(op.raw() < uapi::JOB_OP_COUNT);
        }
        assert_eq!(Op::from_raw(0), None);
        assert_eq!(Op::from_raw(uapi::JOB_OP_COUNT), None);
        assert_eq!(JobDesc::new(Op::Echo).as_raw().priority, uapi::JOB_PRIO_NORMAL);
        assert_eq!(Priority::Low.raw(), uapi::JOB_PRIO_LOW);
    }

    #[test]
    fn missing_or_empty_ranges_are_refused() {
        let no_output = JobDesc::new(Op::Echo).range(INPUT, 1, 4096, DEV, 0, 1);
        assert!(refusal(&no_output).contains("output range"));
        let no_input = JobDesc::new(Op::Echo).range(OUTPUT, 1, 4096, DEV, 0, 1);
        assert!(refusal(&no_input).contains("input range"));
        assert!(refusal(&job(Op::Echo).range(INPUT, 1, 4096, DEV, 0, 0)).contains("input range is empty"));
        assert!(refusal(&job(Op::Echo).range(STATE, 7, 4096, DEV, 0, 0)).contains("state range is empty"));
    }

    #[test]
    fn ranges_must_lie_inside_their_buffer() {
        assert_eq!(job(Op::Echo).range(INPUT, 1, 4096, DEV, 4000, 96).check_owner(DEV), Ok(()));
        let past = refusal(&job(Op::Echo).range(INPUT, 1, 4096, DEV, 4000, 97));
        assert!(past.contains("97 bytes at 4000") && past.contains("4096-byte buffer"), "{past}");
        assert!(refusal(&job(Op::Echo).range(OUTPUT, 2, 8192, DEV, usize::MAX, 2)).contains("outside"));
        assert!(refusal(&job(Op::Generate).range(STATE, 9, 64, DEV, 8, 64)).contains("state range"));
    }

    #[test]
    fn overlaps_in_one_buffer_are_refused() {
        let same = JobDesc::new(Op::Echo).range(INPUT, 1, 8192, DEV, 0, 4096).range(OUTPUT, 1, 8192, DEV, 4095, 10);
        assert!(refusal(&same).contains("input and output ranges overlap"));
        let adjacent = JobDesc::new(Op::Echo).range(INPUT, 1, 8192, DEV, 0, 4096).range(OUTPUT, 1, 8192, DEV, 4096, 10);
        assert_eq!(adjacent.check_owner(DEV), Ok(()));
        let state = job(Op::Generate).range(STATE, 2, 8192, DEV, 100, 8);
        assert!(refusal(&state).contains("output and state ranges overlap"));
        // Equal offsets in different buffers are fine.
        assert_eq!(job(Op::Generate).range(STATE, 3, 8192, DEV, 0, 8).check_owner(DEV), Ok(()));
    }

    #[test]
    fn ops_get_what_they_need() {
        assert!(refusal(&job(Op::Classify)).contains("CLASSIFY needs an adapter"));
        assert!(refusal(&job(Op::Generate)).contains("GENERATE needs a state range"));
        let mut with_adapter = job(Op::Classify);
        with_adapter.raw.adapter = 1;
        with_adapter.adapter_owner = Some(DEV);
        assert_eq!(with_adapter.check_owner(DEV), Ok(()));
        with_adapter.adapter_owner = Some(OTHER);
        assert!(refusal(&with_adapter).contains("adapter belongs to another Device"));
    }

    #[test]
    fn buffers_of_another_device_are_refused() {
        let foreign = job(Op::Echo).range(OUTPUT, 2, 8192, OTHER, 0, 64);
        assert!(refusal(&foreign).contains("output buffer belongs to another Device"));
        assert!(Error::InvalidJob(refusal(&foreign)).to_string().starts_with("invalid job: "));
    }
}
