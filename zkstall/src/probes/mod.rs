//! Loading and attaching the kernel programs, and talking to their maps: the target set,
//! the ring buffer, the drop counters.

pub mod btf;
pub mod floor;
mod jvm;
pub mod layout;
pub mod tracefs;
pub mod usdt;

use std::error::Error as StdError;

use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{HashMap, MapData, PerCpuArray, PerCpuHashMap, RingBuf},
    programs::{
        BtfTracePoint, PerfEvent, TracePoint,
        perf_event::{PerfEventConfig, PerfEventScope, SamplePolicy, SoftwareEvent},
    },
};
use thiserror::Error;
use zkstall_common::{
    Counter, Inflight, IoSummary, OtherIo, OtherIoKey, Request, ThreadState, names,
};

use crate::clock::MonoNs;

pub use layout::{Disabled, HookKind, Layout, ReqBits, Signal};

/// The eBPF object, built by build.rs and embedded: one file to copy to a host.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/zkstall"));

/// Errors a caller may want to tell apart.
#[derive(Debug, Error)]
pub enum ProbeError {
    #[error(
        "loading the eBPF programs was refused ({detail}): zkstall needs root, or CAP_BPF and CAP_PERFMON (CAP_SYS_ADMIN on kernels before 5.8); run it with sudo"
    )]
    Permission { detail: String },
    #[error("loading the eBPF programs failed: {0}")]
    Load(String),
    #[error("program {program} failed to load or attach to {hook}: {detail}")]
    Attach {
        program: String,
        hook: String,
        detail: String,
    },
    #[error("map {0}: {1}")]
    Map(&'static str, String),
}

/// Renders an error and all its sources on one line.
fn chain(e: &(dyn StdError + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// True when an error chain bottoms out in EPERM or EACCES.
fn is_permission(e: &(dyn StdError + 'static)) -> bool {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(c) = cur {
        if let Some(io) = c.downcast_ref::<std::io::Error>()
            && matches!(io.raw_os_error(), Some(libc::EPERM | libc::EACCES))
        {
            return true;
        }
        cur = c.source();
    }
    let s = chain(e);
    s.contains("Operation not permitted") || s.contains("Permission denied")
}

fn load_error(e: &(dyn StdError + 'static)) -> ProbeError {
    if is_permission(e) {
        ProbeError::Permission { detail: chain(e) }
    } else {
        ProbeError::Load(chain(e))
    }
}

/// Kernel-side drop and error counters, summed over CPUs (indexed like [`Counter`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelCounters(pub [u64; zkstall_common::COUNTER_COUNT as usize]);

impl KernelCounters {
    pub fn get(&self, c: Counter) -> u64 {
        self.0[c as usize]
    }

    /// Records lost in the kernel (never delivered to userspace).
    pub fn dropped(&self) -> u64 {
        self.get(Counter::RingbufFull)
    }
}

/// The loaded programs.
pub struct Probes {
    bpf: Ebpf,
    pub layout: Layout,
    /// HotSpot's USDT probes (attached per traced JVM).
    jvm: jvm::JvmState,
    /// The per-CPU heartbeat: why it is off, or how many CPUs it runs on once attached.
    heartbeat_off: Option<String>,
    heartbeat_cpus: Option<u32>,
    /// The kernel programs' rare diagnostics (aya-log), read on each tick.
    logger: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
    /// Each device ever watched (kernel dev_t) -> its slot of IO_SUMMARY (DISK_SLOTS).
    /// A slot is never given to another device: a device watched again counts on.
    slots: std::collections::BTreeMap<u32, u32>,
}

impl Probes {
    /// Loads (verifies) every program of the enabled signals, with the offsets of `layout`.
    /// Nothing is attached yet, so a caller can start its reader first.
    pub fn load(layout: Layout) -> Result<Self, ProbeError> {
        raise_memlock_limit();
        let mut loader = EbpfLoader::new();
        loader.override_global(names::CONFIG, &layout.config, true);
        // Tests shrink the request table to see what a full one does (ZKSTALL_REQUESTS_MAX).
        if let Some(n) = std::env::var("ZKSTALL_REQUESTS_MAX")
            .ok()
            .and_then(|v| v.parse::<u32>().ok())
        {
            loader.map_max_entries(names::REQUESTS, n);
        }
        let mut bpf = loader.load(OBJECT).map_err(|e| load_error(&e))?;
        let mut btf: Option<Btf> = None;
        for sig in &layout.enabled {
            for hook in &sig.hooks {
                let err = |e: &(dyn StdError + 'static)| match load_error(e) {
                    p @ ProbeError::Permission { .. } => p,
                    _ => ProbeError::Attach {
                        program: hook.program.into(),
                        hook: format!("{}:{}", hook.category, hook.name),
                        detail: chain(e),
                    },
                };
                let prog = bpf.program_mut(hook.program).ok_or_else(|| {
                    ProbeError::Load(format!("program {} missing from the object", hook.program))
                })?;
                match hook.kind {
                    HookKind::TracePoint => {
                        let p: &mut TracePoint = prog
                            .try_into()
                            .map_err(|e: aya::programs::ProgramError| err(&e))?;
                        p.load().map_err(|e| err(&e))?;
                    }
                    HookKind::BtfTracePoint => {
                        if btf.is_none() {
                            btf = Some(Btf::from_sys_fs().map_err(|e| err(&e))?);
                        }
                        let p: &mut BtfTracePoint = prog
                            .try_into()
                            .map_err(|e: aya::programs::ProgramError| err(&e))?;
                        let btf = btf.as_ref().ok_or_else(|| ProbeError::Load("BTF".into()))?;
                        p.load(&hook.name, btf).map_err(|e| err(&e))?;
                    }
                }
            }
        }
        let mut probes = Probes {
            bpf,
            layout,
            jvm: jvm::JvmState::default(),
            heartbeat_off: None,
            heartbeat_cpus: None,
            logger: None,
            slots: Default::default(),
        };
        // Their records go to the log facade, which tracing shows at -v (target
        // zkstall::kernel).
        probes.logger = aya_log::EbpfLogger::init(&mut probes.bpf)
            .map_err(|e| tracing::debug!("no kernel diagnostics: {e}"))
            .ok();
        probes.load_jvm();
        probes.load_heartbeat();
        Ok(probes)
    }

    /// Runs of the loaded programs that the kernel skipped, by program: a tracepoint that
    /// fired while the same program was already running on that CPU (a block completion
    /// in an interrupt, say) is not run again (`recursion_misses` of bpf_prog_info, from
    /// 5.12 on; 0 where the kernel does not report it). Those events are lost without a
    /// trace inside the program, so they are counted here.
    pub fn recursion_misses(&self) -> Vec<(String, u64)> {
        use std::os::fd::{AsFd as _, AsRawFd as _};
        let mut out = Vec::new();
        for (name, prog) in self.bpf.programs() {
            let Ok(fd) = prog.fd() else { continue };
            let fd = fd.as_fd().as_raw_fd();
            // SAFETY: bpf_prog_info is plain integers and pointers-as-u64: all zeros is valid.
            let mut info: aya_obj::generated::bpf_prog_info = unsafe { std::mem::zeroed() };
            // The `info` member of union bpf_attr for BPF_OBJ_GET_INFO_BY_FD.
            #[repr(C)]
            struct InfoAttr {
                bpf_fd: u32,
                info_len: u32,
                info: u64,
            }
            let mut attr = [0u8; 128];
            let a = InfoAttr {
                bpf_fd: fd as u32,
                info_len: size_of::<aya_obj::generated::bpf_prog_info>() as u32,
                info: &mut info as *mut _ as u64,
            };
            // SAFETY: InfoAttr is plain data no larger than `attr`.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    &a as *const InfoAttr as *const u8,
                    attr.as_mut_ptr(),
                    size_of::<InfoAttr>(),
                );
            }
            // SAFETY: `attr` is a zeroed bpf_attr whose info member points at `info`, which
            // outlives the call; the kernel writes at most info_len bytes there.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_bpf,
                    aya_obj::generated::bpf_cmd::BPF_OBJ_GET_INFO_BY_FD as libc::c_long,
                    attr.as_mut_ptr(),
                    attr.len() as libc::c_long,
                )
            };
            if rc == 0 && info.recursion_misses > 0 {
                out.push((name.to_string(), info.recursion_misses));
            }
        }
        out
    }

    /// Detaches and unloads every program, many at once. A BTF tracepoint detaches in
    /// ~100 µs; a classic tracepoint's perf event waits for an RCU grace period under the
    /// kernel's event_mutex (~50 ms each, one at a time: ~2.5 s for all of them here), so
    /// callers finish their output first.
    pub fn close(mut self) {
        let mut progs: Vec<&mut aya::programs::Program> =
            self.bpf.programs_mut().map(|(_, p)| p).collect();
        let per = progs.len().div_ceil(16).max(1);
        std::thread::scope(|s| {
            for chunk in progs.chunks_mut(per) {
                s.spawn(move || {
                    for p in chunk.iter_mut() {
                        let _ = match &mut **p {
                            aya::programs::Program::TracePoint(t) => t.unload(),
                            aya::programs::Program::BtfTracePoint(t) => t.unload(),
                            aya::programs::Program::UProbe(t) => t.unload(),
                            aya::programs::Program::PerfEvent(t) => t.unload(),
                            _ => Ok(()),
                        };
                    }
                });
            }
        });
    }

    /// Number of programs loaded.
    pub fn program_count(&self) -> usize {
        self.layout.enabled.iter().map(|s| s.hooks.len()).sum()
    }

    fn load_heartbeat(&mut self) {
        if std::env::var("ZKSTALL_SIGNALS_OFF")
            .unwrap_or_default()
            .split(',')
            .any(|s| s.trim() == "heartbeat")
        {
            self.heartbeat_off = Some("left out (ZKSTALL_SIGNALS_OFF)".into());
            return;
        }
        let r = match self.bpf.program_mut(names::HEARTBEAT_PROG) {
            None => Err("the program is missing from the object".to_string()),
            Some(p) => match <&mut PerfEvent>::try_from(p) {
                Ok(pe) => pe.load().map_err(|e| chain(&e)),
                Err(e) => Err(chain(&e)),
            },
        };
        if let Err(e) = r {
            self.heartbeat_off = Some(format!("the perf-event program did not load: {e}"));
        }
    }

    /// Starts each online CPU's heartbeat; returns how many CPUs, or why not.
    pub fn attach_heartbeat(&mut self) -> Result<u32, String> {
        if let Some(off) = &self.heartbeat_off {
            return Err(off.clone());
        }
        let cpus = aya::util::online_cpus().map_err(|(_, e)| e.to_string())?;
        let prog: &mut PerfEvent = self
            .bpf
            .program_mut(names::HEARTBEAT_PROG)
            .ok_or("the program is missing from the object")?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| chain(&e))?;
        for cpu in &cpus {
            prog.attach(
                PerfEventConfig::Software(SoftwareEvent::CpuClock),
                PerfEventScope::AllProcessesOneCpu { cpu: *cpu },
                SamplePolicy::Frequency(zkstall_common::HEARTBEAT_HZ),
                false,
            )
            .map_err(|e| format!("perf_event_open on CPU {cpu}: {}", chain(&e)))?;
        }
        let n = cpus.iter().max().map_or(0, |m| m + 1);
        self.heartbeat_cpus = Some(n);
        Ok(n)
    }

    /// Passes on the kernel programs' diagnostics (rate-limited there).
    pub fn flush_logs(&mut self) {
        if let Some(l) = &mut self.logger {
            l.flush();
        }
    }

    /// Why the heartbeat is off here (None: available).
    pub fn heartbeat_off(&self) -> Option<&str> {
        self.heartbeat_off.as_deref()
    }

    /// Attaches every loaded program to its tracepoint.
    pub fn attach(&mut self) -> Result<(), ProbeError> {
        for sig in &self.layout.enabled {
            for hook in &sig.hooks {
                let attach_err = |detail: String| ProbeError::Attach {
                    program: hook.program.into(),
                    hook: format!("{}:{}", hook.category, hook.name),
                    detail,
                };
                let prog = self
                    .bpf
                    .program_mut(hook.program)
                    .ok_or_else(|| attach_err("not in the object".into()))?;
                match hook.kind {
                    HookKind::TracePoint => {
                        let p: &mut TracePoint = prog
                            .try_into()
                            .map_err(|e: aya::programs::ProgramError| attach_err(chain(&e)))?;
                        p.attach(hook.category, &hook.name)
                            .map_err(|e| attach_err(chain(&e)))?;
                    }
                    HookKind::BtfTracePoint => {
                        let p: &mut BtfTracePoint = prog
                            .try_into()
                            .map_err(|e: aya::programs::ProgramError| attach_err(chain(&e)))?;
                        p.attach().map_err(|e| attach_err(chain(&e)))?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Takes the ring buffer, for the reader.
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>, ProbeError> {
        let map = self.bpf.take_map(names::EVENTS).ok_or(ProbeError::Map(
            names::EVENTS,
            "missing from the object".into(),
        ))?;
        RingBuf::try_from(map).map_err(|e| ProbeError::Map(names::EVENTS, chain(&e)))
    }

    fn targets(&mut self) -> Result<HashMap<&mut MapData, u32, u32>, ProbeError> {
        self.hash_map_mut(names::TARGETS)
    }

    /// Starts tracing every thread of process `pid`, present and future.
    pub fn add_target(&mut self, pid: u32) -> Result<(), ProbeError> {
        self.targets()?.insert(pid, 1, 0).map_err(|e| {
            ProbeError::Map(names::TARGETS, format!("adding pid {pid}: {}", chain(&e)))
        })?;
        self.set_target_bit(pid, true)
    }

    /// Keeps TARGET_BITS equal to TARGETS (only userspace writes either).
    fn set_target_bit(&mut self, pid: u32, on: bool) -> Result<(), ProbeError> {
        if pid >= zkstall_common::PID_BITS {
            return Ok(());
        }
        let bit = 1u64 << (pid & 63);
        self.update_u64(names::TARGET_BITS, pid >> 6, |w| {
            if on { w | bit } else { w & !bit }
        })
    }

    /// Rewrites entry `index` of a u64 array map (only userspace writes these).
    fn update_u64(
        &mut self,
        name: &'static str,
        index: u32,
        f: impl FnOnce(u64) -> u64,
    ) -> Result<(), ProbeError> {
        let map = self
            .bpf
            .map_mut(name)
            .ok_or(ProbeError::Map(name, "missing from the object".into()))?;
        let mut a: aya::maps::Array<&mut MapData, u64> =
            aya::maps::Array::try_from(map).map_err(|e| ProbeError::Map(name, chain(&e)))?;
        let v = a
            .get(&index, 0)
            .map_err(|e| ProbeError::Map(name, chain(&e)))?;
        a.set(index, f(v), 0)
            .map_err(|e| ProbeError::Map(name, chain(&e)))
    }

    /// Stops tracing `pid` (it exited; its pid may be reused by an unrelated process).
    pub fn remove_target(&mut self, pid: u32) -> Result<(), ProbeError> {
        self.set_target_bit(pid, false)?;
        // Calls it was killed inside never reach their exit: their entries would keep every
        // request on its disks sent one by one (see `look_for_calls`).
        if let Some(map) = self.bpf.map_mut(names::INFLIGHT)
            && let Ok(mut m) = HashMap::<&mut MapData, u32, Inflight>::try_from(map)
        {
            let gone: Vec<u32> = m
                .iter()
                .filter_map(Result::ok)
                .filter(|(_, c)| c.tgid == pid)
                .map(|(tid, _)| tid)
                .collect();
            for tid in gone {
                let _ = m.remove(&tid);
            }
        }
        match self.targets()?.remove(&pid) {
            Ok(()) => Ok(()),
            Err(e) => Err(ProbeError::Map(
                names::TARGETS,
                format!("removing pid {pid}: {}", chain(&e)),
            )),
        }
    }

    /// Reads the kernel-side counters, summed over CPUs.
    pub fn counters(&self) -> Result<KernelCounters, ProbeError> {
        let map = self.bpf.map(names::COUNTERS).ok_or(ProbeError::Map(
            names::COUNTERS,
            "missing from the object".into(),
        ))?;
        let arr: PerCpuArray<&MapData, u64> =
            PerCpuArray::try_from(map).map_err(|e| ProbeError::Map(names::COUNTERS, chain(&e)))?;
        let mut out = KernelCounters::default();
        for c in Counter::ALL {
            let values = arr
                .get(&(c as u32), 0)
                .map_err(|e| ProbeError::Map(names::COUNTERS, chain(&e)))?;
            out.0[c as usize] = values.iter().sum();
        }
        Ok(out)
    }

    /// Watches a disk (or partition): its requests are traced one by one from now on.
    pub fn watch_dev(&mut self, kernel_dev: u32) -> Result<(), ProbeError> {
        self.set_watched(kernel_dev, true)
    }

    /// Stops watching a disk (or partition): its requests are only summed from now on.
    pub fn unwatch_dev(&mut self, kernel_dev: u32) -> Result<(), ProbeError> {
        self.set_watched(kernel_dev, false)
    }

    /// DISKS, writable.
    fn disks(&mut self) -> Result<HashMap<&mut MapData, u32, u64>, ProbeError> {
        self.hash_map_mut(names::DISKS)
    }

    fn set_watched(&mut self, kernel_dev: u32, on: bool) -> Result<(), ProbeError> {
        if on {
            self.give_slot(kernel_dev)?;
        }
        {
            let mut m = self.disks()?;
            if on {
                if m.get(&kernel_dev, 0).is_ok() {
                    // Watched already: since when stays as it was.
                    return Ok(());
                }
                // In first with "since" at the end of time (see below).
                m.insert(kernel_dev, u64::MAX, 0)
                    .map_err(|e| ProbeError::Map(names::DISKS, chain(&e)))?;
            } else {
                // Absent already is fine.
                let _ = m.remove(&kernel_dev);
            }
        }
        // The programs' cached verdicts ("this queue is not watched") are stale now.
        self.update_u64(names::WATCH_GEN, 0, |g| g + 1)?;
        if on {
            // DISKS holds since when each disk is watched, which the programs compare with
            // an unpaired request's allocation time. The clock is read only after the entry
            // is in and the cached verdicts are dropped: a request allocated after this
            // time is seen whole, and one allocated before (its start possibly unseen, or
            // issued while a CPU still had "not watched" cached) never looks newer than
            // the watch. The price is the few microseconds between the writes, in which a
            // request whose start the probes did miss counts as in flight before the watch.
            self.disks()?
                .insert(kernel_dev, MonoNs::now().0, 0)
                .map_err(|e| ProbeError::Map(names::DISKS, chain(&e)))?;
        }
        Ok(())
    }

    /// Gives `kernel_dev` its slot of IO_SUMMARY (once; before it is in DISKS, where the
    /// programs look for it). With every slot taken the device is watched without one:
    /// its requests not sent one by one are not summed (and count as `map_full`), said
    /// once here.
    fn give_slot(&mut self, kernel_dev: u32) -> Result<(), ProbeError> {
        if self.slots.contains_key(&kernel_dev) {
            return Ok(());
        }
        let slot = self.slots.len() as u32;
        if slot >= zkstall_common::WATCH_SLOTS {
            if slot == zkstall_common::WATCH_SLOTS {
                tracing::warn!(
                    "more than {} devices watched: the requests of {} and of any watched after \
                     it that are not sent one by one are not summed",
                    zkstall_common::WATCH_SLOTS,
                    crate::enrich::DevId::from_kernel(kernel_dev)
                );
                // Said once.
                self.slots.insert(kernel_dev, zkstall_common::NO_SLOT);
            }
            return Ok(());
        }
        let mut m: HashMap<&mut MapData, u32, u32> = self.hash_map_mut(names::DISK_SLOTS)?;
        m.insert(kernel_dev, slot, 0)
            .map_err(|e| ProbeError::Map(names::DISK_SLOTS, chain(&e)))?;
        self.slots.insert(kernel_dev, slot);
        Ok(())
    }

    /// Completions the probes counted on a watched disk so far (summed over CPUs): at its
    /// slot of WATCHED_IO, or under OTHER_IO_WATCHED in OTHER_IO for a disk without one
    /// (an LRU entry, so that count can go back to zero).
    pub fn watched_completions(&self, disk: u32) -> u64 {
        if let Some((_, slot)) = self.slotted().find(|(d, _)| *d == disk) {
            return self.watched_io(slot).requests;
        }
        let Some(map) = self.bpf.map(names::OTHER_IO) else {
            return 0;
        };
        let Ok(m) = PerCpuHashMap::<&MapData, OtherIoKey, OtherIo>::try_from(map) else {
            return 0;
        };
        let key = OtherIoKey {
            disk,
            _pad: 0,
            blk_cgroup: zkstall_common::OTHER_IO_WATCHED,
        };
        let cached: u64 = self
            .other_io_cached()
            .filter(|(k, _)| *k == key)
            .map(|(_, io)| io.requests)
            .sum();
        cached
            + m.get(&key, 0)
                .map(|v| v.iter().map(|o| o.requests).sum())
                .unwrap_or(0)
    }

    /// OTHER_IO_CACHE's taken ways, each CPU's apart (none when unreadable).
    fn other_io_cached(&self) -> impl Iterator<Item = (OtherIoKey, OtherIo)> {
        let m = self.map(names::OTHER_IO_CACHE).ok().and_then(|map| {
            PerCpuArray::<&MapData, zkstall_common::OtherIoCached>::try_from(map).ok()
        });
        let ways: Vec<(OtherIoKey, OtherIo)> = m
            .iter()
            .flat_map(|m| (0..zkstall_common::OTHER_IO_WAYS).filter_map(|w| m.get(&w, 0).ok()))
            .flat_map(|vals| vals.iter().copied().collect::<Vec<_>>())
            .filter(|c| c.key.disk != 0)
            .map(|c| (c.key, c.io))
            .collect();
        ways.into_iter()
    }

    /// WATCHED_IO's entry at `slot`, summed over CPUs (zeros when unreadable).
    fn watched_io(&self, slot: u32) -> OtherIo {
        let mut sum = OtherIo::default();
        if let Ok(map) = self.map(names::WATCHED_IO)
            && let Ok(m) = PerCpuArray::<&MapData, OtherIo>::try_from(map)
            && let Ok(vals) = m.get(&slot, 0)
        {
            for v in vals.iter() {
                sum.requests += v.requests;
                sum.bytes += v.bytes;
            }
        }
        sum
    }

    /// Forgets a request the kernel's map holds (one whose completion was never seen).
    pub fn remove_request(&mut self, rq: u64) {
        if let Some(map) = self.bpf.map_mut(names::REQUESTS)
            && let Ok(mut m) = HashMap::<&mut MapData, u64, Request>::try_from(map)
        {
            let _ = m.remove(&rq);
        }
    }

    /// The devices (disks and partitions) watched now.
    pub fn watched_devs(&self) -> Result<std::collections::BTreeSet<u32>, ProbeError> {
        let m: HashMap<&MapData, u32, u64> = self.hash_map(names::DISKS)?;
        Ok(m.keys().filter_map(Result::ok).collect())
    }

    /// The map `name` of the object.
    fn map(&self, name: &'static str) -> Result<&aya::maps::Map, ProbeError> {
        self.bpf
            .map(name)
            .ok_or(ProbeError::Map(name, "missing from the object".into()))
    }

    /// The hash map `name`, to read.
    fn hash_map<K: aya::Pod, V: aya::Pod>(
        &self,
        name: &'static str,
    ) -> Result<HashMap<&MapData, K, V>, ProbeError> {
        HashMap::try_from(self.map(name)?).map_err(|e| ProbeError::Map(name, chain(&e)))
    }

    /// The hash map `name`, to write.
    fn hash_map_mut<K: aya::Pod, V: aya::Pod>(
        &mut self,
        name: &'static str,
    ) -> Result<HashMap<&mut MapData, K, V>, ProbeError> {
        let map = self
            .bpf
            .map_mut(name)
            .ok_or(ProbeError::Map(name, "missing from the object".into()))?;
        HashMap::try_from(map).map_err(|e| ProbeError::Map(name, chain(&e)))
    }

    /// Each watched device that has a slot of IO_SUMMARY and WATCHED_IO, with it.
    fn slotted(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        self.slots
            .iter()
            .map(|(&dev, &slot)| (dev, slot))
            .filter(|(_, slot)| *slot < zkstall_common::WATCH_SLOTS)
    }

    /// Calls in progress (tid -> call), as the kernel sees them now.
    pub fn inflight(&self) -> Result<Vec<(u32, Inflight)>, ProbeError> {
        let m: HashMap<&MapData, u32, Inflight> = self.hash_map(names::INFLIGHT)?;
        Ok(once_each(m.iter()))
    }

    /// Seeds a call already running when tracing began, so its exit is timed.
    pub fn seed_call(&mut self, tid: u32, call: Inflight) -> Result<(), ProbeError> {
        let mut m: HashMap<&mut MapData, u32, Inflight> = self.hash_map_mut(names::INFLIGHT)?;
        m.insert(tid, call, 0)
            .map_err(|e| ProbeError::Map(names::INFLIGHT, chain(&e)))
    }

    /// Forgets a seeded call (the thread left the syscall while it was being seeded).
    pub fn unseed_call(&mut self, tid: u32) {
        if let Some(map) = self.bpf.map_mut(names::INFLIGHT)
            && let Ok(mut m) = HashMap::<&mut MapData, u32, Inflight>::try_from(map)
        {
            let _ = m.remove(&tid);
        }
    }

    /// Per-thread state (tid -> state), as the kernel holds it now.
    pub fn threads(&self) -> Result<Vec<(u32, ThreadState)>, ProbeError> {
        let m: HashMap<&MapData, u32, ThreadState> = self.hash_map(names::THREADS)?;
        Ok(once_each(m.iter()))
    }

    /// Seeds the state of a thread already off CPU when tracing began.
    pub fn seed_thread(&mut self, tid: u32, st: ThreadState) -> Result<(), ProbeError> {
        let mut m: HashMap<&mut MapData, u32, ThreadState> = self.hash_map_mut(names::THREADS)?;
        m.insert(tid, st, 0)
            .map_err(|e| ProbeError::Map(names::THREADS, chain(&e)))
    }

    /// Requests in flight on watched disks now.
    pub fn requests(&self) -> Result<Vec<(u64, Request)>, ProbeError> {
        let m: HashMap<&MapData, u64, Request> = self.hash_map(names::REQUESTS)?;
        Ok(once_each(m.iter()))
    }

    /// Looks at INFLIGHT for the programs' choice of which requests to send one by one
    /// (see `names::CALL_WATCH`): `quiet` when no watched call is in it. The instant is
    /// taken before the walk, less [`LOOK_SLACK_NS`], QUIET written before SCANNED. A walk
    /// that failed anywhere is not quiet.
    pub fn look_for_calls(&mut self) -> Result<bool, ProbeError> {
        let at = crate::clock::MonoNs(crate::clock::MonoNs::now().0.saturating_sub(LOOK_SLACK_NS));
        let quiet = {
            let m: HashMap<&MapData, u32, Inflight> = self.hash_map(names::INFLIGHT)?;
            m.keys().next().is_none()
        };
        self.update_u64(names::CALL_WATCH, zkstall_common::CALL_WATCH_QUIET, |_| {
            quiet as u64
        })?;
        if quiet {
            self.update_u64(
                names::CALL_WATCH,
                zkstall_common::CALL_WATCH_SCANNED,
                |_| at.0,
            )?;
        }
        Ok(quiet)
    }

    /// The watched disks' requests summed in the kernel, by kernel dev_t, over CPUs: every
    /// device ever watched that has a slot.
    pub fn io_summaries(&self) -> Result<Vec<(u32, IoSummary)>, ProbeError> {
        let m: PerCpuArray<&MapData, IoSummary> =
            PerCpuArray::try_from(self.map(names::IO_SUMMARY)?)
                .map_err(|e| ProbeError::Map(names::IO_SUMMARY, chain(&e)))?;
        let add = |sum: &mut IoSummary, v: &IoSummary| {
            sum.requests += v.requests;
            sum.bytes += v.bytes;
            sum.service_ns += v.service_ns;
            for (a, b) in sum.hist.iter_mut().zip(v.hist.iter()) {
                *a += *b;
            }
            sum.late_issued = sum.late_issued.wrapping_add(v.late_issued);
            sum.late_requeued = sum.late_requeued.wrapping_add(v.late_requeued);
            sum.late_done = sum.late_done.wrapping_add(v.late_done);
        };
        let mut out = Vec::with_capacity(self.slots.len());
        for (dev, slot) in self.slotted() {
            let vals = m
                .get(&slot, 0)
                .map_err(|e| ProbeError::Map(names::IO_SUMMARY, chain(&e)))?;
            let mut sum = IoSummary::default();
            for v in vals.iter() {
                add(&mut sum, v);
            }
            out.push((dev, sum));
        }
        Ok(out)
    }

    /// Completions counted per disk, summed over CPUs: OTHER_IO's entries (unwatched
    /// disks by cgroup), and each watched disk's under OTHER_IO_WATCHED (from WATCHED_IO,
    /// once it counted one).
    pub fn other_io(&self) -> Result<Vec<(OtherIoKey, OtherIo)>, ProbeError> {
        let mut all = self.per_cpu_sums(names::OTHER_IO, |sum: &mut OtherIo, v| {
            sum.requests += v.requests;
            sum.bytes += v.bytes;
        })?;
        let mut add = |key: OtherIoKey, io: OtherIo| match all.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => {
                v.requests += io.requests;
                v.bytes += io.bytes;
            }
            None => all.push((key, io)),
        };
        for (key, io) in self.other_io_cached() {
            add(key, io);
        }
        for (disk, slot) in self.slotted() {
            let w = self.watched_io(slot);
            if w.requests == 0 && w.bytes == 0 {
                continue;
            }
            let key = OtherIoKey {
                disk,
                _pad: 0,
                blk_cgroup: zkstall_common::OTHER_IO_WATCHED,
            };
            add(key, w);
        }
        Ok(all)
    }

    /// Every entry of a per-CPU hash map, its CPUs' values added up by `add`.
    fn per_cpu_sums<K: aya::Pod + Eq + std::hash::Hash, V: aya::Pod + Default>(
        &self,
        name: &'static str,
        add: impl Fn(&mut V, &V),
    ) -> Result<Vec<(K, V)>, ProbeError> {
        let map = self
            .bpf
            .map(name)
            .ok_or(ProbeError::Map(name, "missing from the object".into()))?;
        let m: PerCpuHashMap<&MapData, K, V> =
            PerCpuHashMap::try_from(map).map_err(|e| ProbeError::Map(name, chain(&e)))?;
        Ok(once_each(m.iter())
            .into_iter()
            .map(|(k, vals)| {
                let mut sum = V::default();
                for v in vals.iter() {
                    add(&mut sum, v);
                }
                (k, sum)
            })
            .collect())
    }
}

/// A hash map's entries as one walk found them, each key once (the value read last). A
/// walk is no snapshot: when the entry it stands on is deleted under it (a request
/// completing, a call ending), the kernel's next-key starts over from the first bucket
/// and the keys already walked come again. Under a flood most walks of REQUESTS did (58
/// entries for 21 requests), which made the requests of a stopped disk outnumber the
/// block layer's count and one of them look completed unseen. Entries that failed to
/// read (deleted between next-key and lookup) are left out.
fn once_each<K: Eq + std::hash::Hash + Copy, V>(
    walk: impl Iterator<Item = Result<(K, V), aya::maps::MapError>>,
) -> Vec<(K, V)> {
    let mut at: std::collections::HashMap<K, usize> = std::collections::HashMap::new();
    let mut out: Vec<(K, V)> = Vec::new();
    for (k, v) in walk.filter_map(Result::ok) {
        match at.get(&k) {
            Some(&i) => out[i].1 = v,
            None => {
                at.insert(k, out.len());
                out.push((k, v));
            }
        }
    }
    out
}

/// A call's entry program reads the clock before it inserts the call into INFLIGHT, and
/// stamps that instant after: a look whose walk falls in between misses the call, and
/// began after the stamp's instant. Dating each look this much earlier keeps such a call's
/// stamp at or after it (a program runs for microseconds, with preemption off), without a
/// second clock read on every traced call.
const LOOK_SLACK_NS: u64 = 1_000_000;

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK; later ones to the memory cgroup.
/// Raising the limit can fail without CAP_SYS_RESOURCE; that only matters on old kernels.
fn raise_memlock_limit() {
    let rlim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: `rlim` is a valid rlimit for the duration of the call.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) };
    if rc != 0 {
        tracing::debug!(
            "could not raise RLIMIT_MEMLOCK ({}); fine on kernels >= 5.11, which charge BPF memory to the cgroup",
            std::io::Error::last_os_error()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::once_each;
    use aya::maps::MapError;

    /// A walk the kernel restarted twice (its key deleted under it), with an entry gone
    /// between next-key and lookup: each key once, its last value, in first-seen order.
    #[test]
    fn a_restarted_walk_yields_each_key_once() {
        let walk: Vec<Result<(u64, u32), MapError>> = vec![
            Ok((7, 1)),
            Ok((3, 1)),
            Err(MapError::KeyNotFound),
            Ok((7, 2)),
            Ok((3, 2)),
            Ok((9, 1)),
            Ok((7, 3)),
        ];
        assert_eq!(once_each(walk.into_iter()), vec![(7, 3), (3, 2), (9, 1)]);
    }
}
