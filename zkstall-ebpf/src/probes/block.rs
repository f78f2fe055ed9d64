//! Block requests: for the disks behind the traced files (DISKS, filled by userspace),
//! every request exactly once, keyed by its `struct request *` (tp_btf): who caused it,
//! when it was allocated, queued, issued and completed, its size and flags. Requests on
//! other disks are only counted per (disk, cgroup) in OTHER_IO.
//!
//! With `Config::io_slow_ns` set (`--requests around-calls`), a completed request is sent
//! only where it can matter to a verdict: a target's watched call may have overlapped it
//! (CALL_WATCH), a target submitted it, it was slow, or something about it is unusual.
//! The rest (a busy neighbour while ZooKeeper idles) are summed per disk in IO_SUMMARY,
//! which userspace reads each second.
//!
//! In that mode a request is not even followed from its start while no watched call can be
//! in flight (`quiet_now`): block_getrq, insert and issue return after the cheapest checks,
//! and only a count of such requests issued (IO_SUMMARY's `late_issued`) is kept. One that a
//! call then overlaps is first seen at its completion (RQ_LATE), with the block layer's own
//! start and issue stamps; one still in flight when a running call is explained leaves that
//! disk unknown there (userspace reads the count).
//!
//! Keying by the request pointer (as bcc's biosnoop does) survives front merges, which
//! change the sector, and tells concurrent flushes apart. A request is charged to whoever
//! caused it: its submitter is taken at block_getrq (where the request is allocated for a
//! bio, in the submitting task's context) and looked up through `rq->bio` when the request
//! is first seen, so requests that kblockd or the flush machinery insert later still carry
//! their submitter. When the submitter is itself a kernel thread relaying others' I/O (a
//! flusher, a throttling or loop worker), the inode being written back and the bio's blkcg
//! say on whose behalf.
//!
//! Struct field offsets come from the kernel's BTF through CONFIG.kernel (see userspace's
//! probes/btf.rs); nothing here assumes a kernel's layout. The request, bio and everything
//! reached from them are BTF pointers, read with plain loads (`btf_read`).

use aya_ebpf::{
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_get_current_task, bpf_ktime_get_ns,
    },
    macros::{btf_tracepoint, map},
    maps::PerCpuArray,
    programs::BtfTracePointContext,
};
use zkstall_common::{
    CALL_WATCH_ENTER, CALL_WATCH_EXIT, CALL_WATCH_QUIET, CALL_WATCH_SCANNED, Counter, EventKind,
    IO_HIST_BUCKETS, IO_HIST_FIRST_NS, IoEvent, IoSummary, NO_SLOT, OTHER_IO_WATCHED, OtherIo,
    OtherIoKey, RQ_FROM_GETRQ, RQ_KTHREAD, RQ_LATE, RQ_PAGE_INODE, RQ_PARTIAL, RQ_UNMATCHED,
    Request, Submitter,
};

use aya_log_ebpf::debug;

use crate::{
    emit::{emit, header, log_allowed},
    maps::{
        BIOS, CALL_WATCH, DISK_SLOTS, DISKS, FLUSH_GRACE_NS, FLUSHING, IO_SUMMARY, OTHER_IO,
        OTHER_IO_CACHE, REQUESTS, WATCHED_IO, btf_read, config, count, current_comm, is_target,
        kread, watch_gen,
    },
};

/// task_struct.flags bit of kernel threads.
const PF_KTHREAD: u32 = 0x0020_0000;
/// The op part of cmd_flags (REQ_OP_BITS = 8) and the op of the block layer's own flushes.
const REQ_OP_MASK: u32 = 0xff;
const REQ_OP_FLUSH: u32 = 2;
/// Discard and secure erase (values fixed since 4.10, like REQ_OP_FLUSH's): their length
/// is not data moved.
const REQ_OP_DISCARD: u32 = 3;
const REQ_OP_SECURE_ERASE: u32 = 5;

/// A discard (or secure erase): never summed, since summed its length would count as bytes
/// moved (userspace counts a discard as a request, its length apart). Rare but for fstrim.
#[inline(always)]
fn is_discard(cmd_flags: u32) -> bool {
    matches!(
        cmd_flags & REQ_OP_MASK,
        REQ_OP_DISCARD | REQ_OP_SECURE_ERASE
    )
}

/// The last object each CPU looked at and what it found: a flood of requests comes from a
/// few queues, block devices and blkcgs, so the chains behind "which disk, is it watched,
/// which cgroup" (reads, and a DISKS lookup) are done once per CPU and object, not per
/// request.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Seen {
    /// The object (a request_queue, block_device or blkcg_gq pointer).
    key: u64,
    /// What it resolves to (a dev_t, or a cgroup id).
    value: u64,
    /// For disks: DISKS' generation the verdict was taken at, and the verdict (request
    /// queues: since when the disk is watched, 0 when it is not).
    generation: u64,
    watched: u64,
    /// For request queues: the disk's slot of IO_SUMMARY (NO_SLOT: none).
    slot: u64,
}

/// One slot per program and object kind. Programs do nest on one CPU: a block_rq_issue in
/// a task can be interrupted by a completion (or an insert) that runs another of these
/// programs. A slot shared between programs was seen torn that way (one program's key
/// beside another's disk and verdict), which made a neighbour's requests look like a
/// watched disk's. A program never nests with itself (the kernel skips such a run), so a
/// slot that only one program uses is never torn.
#[map]
static SEEN: PerCpuArray<Seen> = PerCpuArray::with_max_entries(SEEN_SLOTS, 0);
/// The last request queue of block_rq_insert, block_rq_issue and block_rq_complete.
const SEEN_QUEUE_INSERT: u32 = 0;
const SEEN_QUEUE_ISSUE: u32 = 1;
const SEEN_QUEUE_COMPLETE: u32 = 2;
/// The last bio's block device (block_getrq).
const SEEN_BDEV: u32 = 3;
/// The last blkg (block_rq_complete).
const SEEN_BLKG: u32 = 4;
/// The last request queue of block_rq_requeue.
const SEEN_QUEUE_REQUEUE: u32 = 5;
const SEEN_SLOTS: u32 = 6;

/// The disk a request belongs to, as [`rq_disk`] finds it.
#[derive(Clone, Copy)]
struct DiskOf {
    /// Its kernel dev_t (`rq->q->disk`).
    dev: u32,
    /// Its slot of IO_SUMMARY (DISK_SLOTS), NO_SLOT when it has none.
    slot: u32,
    /// Since when it is watched (DISKS' value; 0: not watched).
    since: u64,
}

/// The disk request `rq` belongs to, cached in the calling program's own slot `seen`.
#[inline(always)]
fn rq_disk(rq: u64, seen: u32) -> Option<DiskOf> {
    let q = btf_read::<u64>(rq, config!(kernel.rq_q))?;
    let generation = watch_gen();
    let cached = SEEN.get_ptr_mut(seen)?;
    // SAFETY: a per-CPU slot only the calling program uses (see SEEN).
    unsafe {
        if (*cached).key == q && q != 0 && (*cached).generation == generation {
            return Some(DiskOf {
                dev: (*cached).value as u32,
                slot: (*cached).slot as u32,
                since: (*cached).watched,
            });
        }
    }
    let disk = btf_read::<u64>(q, config!(kernel.q_disk))?;
    let major = btf_read::<i32>(disk, config!(kernel.disk_major))?;
    let minor = btf_read::<i32>(disk, config!(kernel.disk_first_minor))?;
    let dev = ((major as u32) << 20) | (minor as u32 & 0xfffff);
    // SAFETY: copied out at once. Userspace stores a nonzero instant.
    let since = unsafe { DISKS.get(dev) }.copied().unwrap_or(0);
    // Userspace gives a disk its slot before it puts it in DISKS.
    let slot = if since != 0 {
        // SAFETY: as above.
        unsafe { DISK_SLOTS.get(dev) }.copied().unwrap_or(NO_SLOT)
    } else {
        NO_SLOT
    };
    // SAFETY: as above.
    unsafe {
        *cached = Seen {
            key: q,
            value: dev as u64,
            generation,
            watched: since,
            slot: slot as u64,
        };
    }
    Some(DiskOf { dev, slot, since })
}

/// Whether the block device a bio was submitted to (a partition or a whole disk) is
/// watched.
#[inline(always)]
fn bdev_watched(bdev: u64) -> Option<bool> {
    let generation = watch_gen();
    let slot = SEEN.get_ptr_mut(SEEN_BDEV)?;
    // SAFETY: a per-CPU slot only the calling program uses (see SEEN).
    unsafe {
        if (*slot).key == bdev && bdev != 0 && (*slot).generation == generation {
            return Some((*slot).watched != 0);
        }
    }
    let dev = btf_read::<u32>(bdev, config!(kernel.bdev_dev))?;
    let w = watched(dev);
    // SAFETY: as above.
    unsafe {
        *slot = Seen {
            key: bdev,
            value: dev as u64,
            generation,
            watched: w as u64,
            slot: NO_SLOT as u64,
        };
    }
    Some(w)
}

#[inline(always)]
fn watched(dev: u32) -> bool {
    // SAFETY: only tested for presence.
    unsafe { DISKS.get(dev) }.is_some()
}

/// Whether request `rq`, allocated at `start` (`rq->start_time_ns`, 0: unknown), was
/// allocated before its disk was watched (`since`), so that its start could not have been
/// seen. Both are CLOCK_MONOTONIC. The kernel may stamp a request from its plug's cached
/// clock, a little earlier than its allocation, but such a request's block_getrq ran in
/// the same plug: if that was after the watch, the request is matched and never asked
/// about. An unknown time (no field, or a queue that keeps no times) answers no, so it
/// counts as missed.
#[inline(always)]
fn allocated_before_watch(start: u64, since: u64) -> bool {
    start != 0 && start < since
}

/// Whether no target's watched call can be in flight now (`--requests around-calls` only):
/// userspace's last look at INFLIGHT found none, and none entered since that look began.
/// A request started now is then not followed (see the module's comment). SCANNED is read
/// before QUIET (see `names::CALL_WATCH`).
#[inline(always)]
fn quiet_now() -> bool {
    if config!(io_slow_ns) == 0 {
        return false;
    }
    let at = |i: u32| CALL_WATCH.get(i).copied().unwrap_or(0);
    let scanned = at(CALL_WATCH_SCANNED);
    at(CALL_WATCH_QUIET) != 0 && at(CALL_WATCH_ENTER) < scanned
}

/// The id of the cgroup the block layer charges a bio to (its blkcg's cgroup).
#[inline(always)]
fn blk_cgroup(bio: u64) -> u64 {
    btf_read::<u64>(bio, config!(kernel.bio_blkg)).map_or(0, blkg_cgroup)
}

/// The same through the per-CPU cache, for the summaries of unwatched disks: a blkg's
/// cgroup never changes while it exists, but a freed blkg's address can come back for
/// another cgroup's, so the watched disks' requests, whose cgroups verdicts name, always
/// read the chain.
#[inline(always)]
fn blk_cgroup_cached(bio: u64) -> u64 {
    let Some(blkg) = btf_read::<u64>(bio, config!(kernel.bio_blkg)) else {
        return 0;
    };
    if let Some(slot) = SEEN.get_ptr_mut(SEEN_BLKG) {
        // SAFETY: a per-CPU slot only the calling program uses (see SEEN).
        unsafe {
            if (*slot).key == blkg && blkg != 0 {
                return (*slot).value;
            }
        }
        let id = blkg_cgroup(blkg);
        // SAFETY: as above.
        unsafe {
            *slot = Seen {
                key: blkg,
                value: id,
                generation: 0,
                watched: 0,
                slot: NO_SLOT as u64,
            };
        }
        return id;
    }
    blkg_cgroup(blkg)
}

#[inline(always)]
fn blkg_cgroup(blkg: u64) -> u64 {
    let Some(blkcg) = btf_read::<u64>(blkg, config!(kernel.blkg_blkcg)) else {
        return 0;
    };
    let Some(cgrp) = btf_read::<u64>(blkcg, config!(kernel.blkcg_css_cgroup)) else {
        return 0;
    };
    let Some(kn) = btf_read::<u64>(cgrp, config!(kernel.cgroup_kn)) else {
        return 0;
    };
    btf_read::<u64>(kn, config!(kernel.kn_id)).unwrap_or(0)
}

/// Who the current task is, as the submitter of I/O.
#[inline(always)]
fn current_submitter(now: u64) -> Submitter {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    // SAFETY: plain helper call. Not a BTF pointer (bpf_get_current_task_btf needs 5.11):
    // read through kread.
    let task = unsafe { bpf_get_current_task() };
    let kthread =
        kread::<u32>(task, config!(kernel.task_flags)).is_some_and(|f| f & PF_KTHREAD != 0);
    let mut s = Submitter {
        ts_ns: now,
        ino: 0,
        wb_bdi: [0; 16],
        // SAFETY: plain helper call.
        task_cgroup: unsafe { bpf_get_current_cgroup_id() },
        tgid: (pid_tgid >> 32) as u32,
        tid,
        flags: if kthread { RQ_KTHREAD } else { 0 },
        _pad: [0; 3],
        comm: current_comm(),
    };
    // SAFETY: the value is copied out at once.
    if let Some(f) = unsafe { FLUSHING.get(tid) }
        && (f.end_ns == 0 || now.saturating_sub(f.end_ns) < FLUSH_GRACE_NS)
    {
        s.ino = f.ino;
        s.wb_bdi = f.bdi;
    }
    s
}

/// A new entry for request `rq`, first seen now: its submitter from block_getrq when the
/// request's bio was seen there (RQ_FROM_GETRQ), else the current task. The bio's BIOS
/// entry stays until the request's own entry is stored ([`store`]) or it completes
/// ([`release_bio`]): a request whose entry REQUESTS refused (its lock busy) still has its
/// submitter when it is next seen.
#[inline(always)]
fn new_request(rq: u64, disk: u32, now: u64) -> Request {
    let bio = btf_read::<u64>(rq, config!(kernel.rq_bio)).unwrap_or(0);
    let mut flags = 0u16;
    // SAFETY: copied out at once.
    let sub = match unsafe { BIOS.get(bio) }.copied() {
        Some(s) if bio != 0 => {
            flags |= RQ_FROM_GETRQ;
            s
        }
        _ => current_submitter(now),
    };
    flags |= sub.flags;
    let part = btf_read::<u64>(rq, config!(kernel.rq_part))
        .and_then(|p| btf_read::<u32>(p, config!(kernel.bdev_dev)))
        .unwrap_or(0);
    Request {
        queued_ns: sub.ts_ns,
        insert_ns: 0,
        issue_ns: 0,
        sector: btf_read::<u64>(rq, config!(kernel.rq_sector)).unwrap_or(0),
        ino: sub.ino,
        wb_bdi: sub.wb_bdi,
        task_cgroup: sub.task_cgroup,
        blk_cgroup: blk_cgroup(bio),
        disk,
        part,
        tgid: sub.tgid,
        tid: sub.tid,
        bytes: btf_read::<u32>(rq, config!(kernel.rq_data_len)).unwrap_or(0),
        done_bytes: 0,
        cmd_flags: btf_read::<u32>(rq, config!(kernel.rq_cmd_flags)).unwrap_or(0),
        requeues: 0,
        flags,
        comm: sub.comm,
    }
}

/// A request first seen at its completion while requests are followed around calls only
/// (unfollowed while quiet, or allocated before its disk was watched): its submitter from
/// block_getrq when its bio was seen there, else unknown (the task interrupted now did not
/// submit it), its start and issue from the block layer's own stamps (`start`:
/// `rq->start_time_ns`).
#[inline(always)]
fn late_request(rq: u64, disk: u32, start: u64) -> Request {
    let bio = btf_read::<u64>(rq, config!(kernel.rq_bio)).unwrap_or(0);
    let part = btf_read::<u64>(rq, config!(kernel.rq_part))
        .and_then(|p| btf_read::<u32>(p, config!(kernel.bdev_dev)))
        .unwrap_or(0);
    let mut r = Request {
        queued_ns: start,
        insert_ns: 0,
        issue_ns: btf_read::<u64>(rq, config!(kernel.rq_io_start_time)).unwrap_or(0),
        sector: btf_read::<u64>(rq, config!(kernel.rq_sector)).unwrap_or(0),
        ino: 0,
        wb_bdi: [0; 16],
        task_cgroup: 0,
        blk_cgroup: blk_cgroup(bio),
        disk,
        part,
        tgid: 0,
        tid: 0,
        bytes: btf_read::<u32>(rq, config!(kernel.rq_data_len)).unwrap_or(0),
        done_bytes: 0,
        cmd_flags: btf_read::<u32>(rq, config!(kernel.rq_cmd_flags)).unwrap_or(0),
        requeues: 0,
        flags: 0,
        comm: [0; 16],
    };
    if bio == 0 {
        return r;
    }
    // SAFETY: read in place (no copy on the stack beside the request), then removed.
    let Some(s) = (unsafe { BIOS.get(bio) }) else {
        // Whose data it is, as the flusher's requests say it (userspace charges the
        // inode to whoever dirtied it): the file its first page belongs to.
        if let Some((ino, bdi)) = page_inode(bio) {
            r.ino = ino;
            r.wb_bdi = bdi;
            r.flags = RQ_PAGE_INODE;
        }
        return r;
    };
    r.queued_ns = s.ts_ns;
    r.ino = s.ino;
    r.wb_bdi = s.wb_bdi;
    r.task_cgroup = s.task_cgroup;
    r.tgid = s.tgid;
    r.tid = s.tid;
    r.flags = RQ_FROM_GETRQ | s.flags;
    r.comm = s.comm;
    let _ = BIOS.remove(bio);
    r
}

/// The inode whose page cache pages `bio` carries (from its first page) and the name of
/// its filesystem's bdi (what writeback's tracepoints print: `MAJ:MIN`); None for any
/// other page (user memory of direct I/O). A filesystem's metadata buffers belong to its
/// block device's inode. Read through the helper: a page's `mapping` lies in a union the
/// verifier cannot type.
#[inline(always)]
fn page_inode(bio: u64) -> Option<(u64, [u8; 16])> {
    let vec = btf_read::<u64>(bio, config!(kernel.bio_io_vec))?;
    let mut page = btf_read::<u64>(vec, config!(kernel.bvec_page))?;
    // A tail page of a large folio: its head holds the mapping.
    let head = kread::<u64>(page, config!(kernel.page_compound_head)).unwrap_or(0);
    if head & 1 != 0 {
        page = head - 1;
    }
    let mapping = kread::<u64>(page, config!(kernel.page_mapping))?;
    // Anonymous memory or a movable page (the low bits say so): no file.
    if mapping == 0 || mapping & 3 != 0 {
        return None;
    }
    let host = kread::<u64>(mapping, config!(kernel.mapping_host))?;
    let ino = kread::<u64>(host, config!(kernel.inode_ino))?;
    let sb = kread::<u64>(host, config!(kernel.inode_sb))?;
    let bdi = kread::<u64>(sb, config!(kernel.sb_bdi))?;
    let name = kread::<[u8; 16]>(bdi, config!(kernel.bdi_dev_name))?;
    Some((ino, name))
}

/// Whether block_getrq followed the bio of request `rq`.
#[inline(always)]
fn bio_seen(rq: u64) -> bool {
    let bio = btf_read::<u64>(rq, config!(kernel.rq_bio)).unwrap_or(0);
    // SAFETY: only tested for presence.
    bio != 0 && unsafe { BIOS.get(bio) }.is_some()
}

/// Whether a request carries data (the block layer's own empty flushes do not): only those
/// are counted in IO_SUMMARY's `late_*` fields, as only those are seen completing exactly
/// once (an empty completion also ends a data request's flush sequence).
#[inline(always)]
fn carries_data(rq: u64) -> bool {
    btf_read::<u32>(rq, config!(kernel.rq_data_len)).unwrap_or(0) != 0
}

/// Sums a completion into OTHER_IO (per CPU, by disk and cgroup): at its way of
/// OTHER_IO_CACHE when the way is free or already holds the key, else in the hash.
#[inline(always)]
fn add_other_io(disk: u32, blk_cgroup: u64, last: bool, nr_bytes: u32) {
    let key = OtherIoKey {
        disk,
        _pad: 0,
        blk_cgroup,
    };
    if let Some(c) = OTHER_IO_CACHE.get_ptr_mut(key.way()) {
        // SAFETY: a per-CPU value only this program changes (block_rq_complete, the only
        // caller, never nests with itself).
        unsafe {
            if (*c).key.disk == 0 {
                (*c).key = key;
            }
            if (*c).key.disk == key.disk && (*c).key.blk_cgroup == key.blk_cgroup {
                (*c).io.requests += last as u64;
                (*c).io.bytes += nr_bytes as u64;
                return;
            }
        }
    }
    match OTHER_IO.get_ptr_mut(key) {
        // SAFETY: a per-CPU value, only touched by this CPU.
        Some(v) => unsafe {
            (*v).requests += last as u64;
            (*v).bytes += nr_bytes as u64;
        },
        None => {
            let v = OtherIo {
                requests: last as u64,
                bytes: nr_bytes as u64,
            };
            let _ = OTHER_IO.insert(key, v, 0);
        }
    }
}

/// Counts a completion on a watched disk, like the unwatched disks' (userspace checks both
/// against /proc/diskstats): at the disk's slot of WATCHED_IO (an array, no hash to walk),
/// or in OTHER_IO for a disk without one. Only block_rq_complete calls it.
#[inline(always)]
fn add_watched_io(slot: u32, disk: u32, last: bool, nr_bytes: u32) {
    match WATCHED_IO.get_ptr_mut(slot) {
        // SAFETY: a per-CPU value only this program changes (it never nests with itself).
        Some(w) => unsafe {
            (*w).requests += last as u64;
            (*w).bytes += nr_bytes as u64;
        },
        None => add_other_io(disk, OTHER_IO_WATCHED, last, nr_bytes),
    }
}

/// Whether a completed request is sent one by one (see `Config::io_slow_ns`): anything
/// unusual about it, a target's own, slow, or possibly overlapping a target's watched call.
#[inline(always)]
fn one_by_one(req: &Request, status: u8, nr_bytes: u32, now: u64) -> bool {
    let slow = config!(io_slow_ns);
    if slow == 0 {
        return true;
    }
    let start = req.queued_ns;
    // Not followed by choice: its start is the block layer's stamp, its issue may be
    // unknown; nothing unusual in that.
    let late = req.flags & RQ_LATE != 0;
    if status != 0
        || req.requeues != 0
        || req.flags & RQ_PARTIAL != 0
        || (!late && req.flags & RQ_UNMATCHED != 0)
        // Completed in parts (the earlier parts were sent), or never issued.
        || req.done_bytes != nr_bytes
        || (!late && req.issue_ns == 0)
        || start == 0
        || now.saturating_sub(start) >= slow
        || is_target(req.tgid)
        || is_discard(req.cmd_flags)
    {
        return true;
    }
    may_overlap_call(start)
}

/// Whether a target's watched call may have been in flight at some point since `start`.
#[inline(always)]
fn may_overlap_call(start: u64) -> bool {
    let at = |i: u32| CALL_WATCH.get(i).copied().unwrap_or(0);
    // SCANNED before QUIET (userspace writes them in the other order).
    let scanned = at(CALL_WATCH_SCANNED);
    let quiet = at(CALL_WATCH_QUIET);
    let enter = at(CALL_WATCH_ENTER);
    // A call entered or left while the request was in the block layer, or may have been
    // in flight all along (userspace's last look found one, or one entered since).
    quiet == 0 || enter >= scanned || enter >= start || at(CALL_WATCH_EXIT) >= start
}

/// This CPU's IO_SUMMARY entry at `slot` (a watched disk's, from [`rq_disk`]). None for a
/// disk without one (more devices watched than WATCH_SLOTS: userspace said so), counted as
/// a full map.
#[inline(always)]
fn summary(slot: u32) -> Option<*mut IoSummary> {
    let v = IO_SUMMARY.get_ptr_mut(slot);
    if v.is_none() {
        count(Counter::MapFull);
    }
    v
}

/// Counts one request not followed in the field `field` of this CPU's IO_SUMMARY entry at
/// `slot`: the calling program's own field (see `IoSummary::late_issued`).
macro_rules! count_late {
    ($slot:expr, $field:ident) => {
        if let Some(v) = summary($slot) {
            // SAFETY: a per-CPU value whose field only the calling program changes, and a
            // program never nests with itself.
            unsafe { (*v).$field += 1 }
        }
    };
}

/// Sums a completed request into its disk's IO_SUMMARY entry at `slot` (this CPU's).
#[inline(always)]
fn summarize(slot: u32, req: &Request, nr_bytes: u32, now: u64) {
    // A request not followed whose queue keeps no issue stamp: from its start.
    let from = if req.issue_ns != 0 {
        req.issue_ns
    } else {
        req.queued_ns
    };
    if let Some(v) = summary(slot) {
        sum_into(v, nr_bytes, now.saturating_sub(from));
    }
}

/// Sums one completed request of `nr_bytes` and device service time `service` into `v`,
/// its disk's IO_SUMMARY entry (this CPU's, from [`summary`]).
#[inline(always)]
fn sum_into(v: *mut IoSummary, nr_bytes: u32, service: u64) {
    let mut k = 0usize;
    let mut bound = IO_HIST_FIRST_NS;
    while k < IO_HIST_BUCKETS - 1 && service > bound {
        bound <<= 1;
        k += 1;
    }
    // SAFETY: a per-CPU value; these fields are only touched by this program on this CPU
    // (a program never nests with itself).
    unsafe {
        (*v).requests += 1;
        (*v).bytes += nr_bytes as u64;
        (*v).service_ns += service;
        if let Some(h) = (*v).hist.get_mut(k) {
            *h += 1;
        }
    }
}

/// The map helpers' errors that mean "full" (-E2BIG, -ENOMEM); "no such entry" (-ENOENT).
/// Any other refusal is a bucket lock held on this CPU ([`Counter::MapBusy`]).
const E2BIG: i32 = 7;
const ENOMEM: i32 = 12;
const ENOENT: i32 = 2;

/// Counts a map's refusal as full or busy; true if full.
#[inline(always)]
fn count_refusal(e: i32) -> bool {
    let full = e == -E2BIG || e == -ENOMEM;
    count(if full {
        Counter::MapFull
    } else {
        Counter::MapBusy
    });
    full
}

/// Forgets request `rq`'s entry. One the map refuses to remove (its bucket lock held by
/// a program this one interrupted) outlives its request: counted, and found stale later.
#[inline(always)]
fn forget(rq: u64) {
    if let Err(e) = REQUESTS.remove(rq)
        && e != -ENOENT
    {
        count(Counter::MapBusy);
    }
}

/// Forgets the BIOS entry of request `rq`'s bio, once `r`, the request's entry, took its
/// submitter from it.
#[inline(always)]
fn release_bio(rq: u64, r: &Request) {
    if r.flags & RQ_FROM_GETRQ != 0
        && let Some(bio) = btf_read::<u64>(rq, config!(kernel.rq_bio))
    {
        let _ = BIOS.remove(bio);
    }
}

/// Stores request `rq`'s entry `r`, releasing its bio's BIOS entry once it is stored; a
/// refusal is counted (full or busy) and logged.
#[inline(always)]
fn store(ctx: &BtfTracePointContext, rq: u64, r: &Request) {
    match REQUESTS.insert(rq, r, 0) {
        Ok(()) => release_bio(rq, r),
        Err(e) => {
            let full = count_refusal(e);
            if log_allowed() {
                if full {
                    debug!(
                        ctx,
                        target: "zkstall::kernel",
                        "REQUESTS is full: a request on disk {} is not followed (counted as map_full)",
                        r.disk
                    );
                } else {
                    debug!(
                        ctx,
                        target: "zkstall::kernel",
                        "REQUESTS refused an entry ({}), its lock busy: a request on disk {} is followed from its next sighting, its submitter kept (counted as map_busy)",
                        e,
                        r.disk
                    );
                }
            }
        }
    }
}

/* TP_PROTO(struct bio *bio). In the submitting task's context, right after a request was
 * allocated for `bio` (blk_mq_submit_bio). */
#[btf_tracepoint(function = "block_getrq")]
pub fn block_getrq(ctx: BtfTracePointContext) -> i32 {
    let bio: u64 = ctx.arg(0);
    let Some(bdev) = btf_read::<u64>(bio, config!(kernel.bio_bdev)) else {
        return 0;
    };
    // The bio's device is the partition (or whole disk) it was submitted to: DISKS holds
    // the watched disks' partitions too.
    if bdev_watched(bdev) != Some(true) {
        return 0;
    }
    // A target's own requests are followed even then: its I/O is never summed.
    if quiet_now() && !is_target((bpf_get_current_pid_tgid() >> 32) as u32) {
        return 0;
    }
    // SAFETY: plain helper call.
    let now = unsafe { bpf_ktime_get_ns() };
    if let Err(e) = BIOS.insert(bio, current_submitter(now), 0) {
        let _ = count_refusal(e);
    }
    0
}

/* TP_PROTO(struct request *rq): into a scheduler or software queue. Also fires when kblockd
 * re-inserts a requeued request or the flush machinery inserts a data request: an existing,
 * not-yet-issued entry keeps its submitter. */
#[btf_tracepoint(function = "block_rq_insert")]
pub fn block_rq_insert(ctx: BtfTracePointContext) -> i32 {
    let rq: u64 = ctx.arg(0);
    let Some(DiskOf {
        dev: disk, since, ..
    }) = rq_disk(rq, SEEN_QUEUE_INSERT)
    else {
        return 0;
    };
    if since == 0 {
        return 0;
    }
    // The clock is read only where it is stored: a request not followed needs none.
    // SAFETY (both): plain helper call.
    let now = || unsafe { bpf_ktime_get_ns() };
    match REQUESTS.get_ptr_mut(rq) {
        // SAFETY: a valid map value pointer.
        Some(r) if unsafe { (*r).issue_ns } == 0 => unsafe { (*r).insert_ns = now() },
        found => {
            if quiet_now() && !bio_seen(rq) {
                // Not followed (counted at its issue); a reused entry must not match it.
                if found.is_some() {
                    forget(rq);
                }
                return 0;
            }
            if found.is_some() {
                // Issued, never completed nor requeued, and now inserted again: the
                // struct was reused after a completion we missed.
                count(Counter::IoStale);
                if log_allowed() {
                    debug!(
                        &ctx,
                        target: "zkstall::kernel",
                        "a request on disk {} was reused before its completion was seen (a program run the kernel skipped?)",
                        disk
                    );
                }
            }
            let now = now();
            let mut r = new_request(rq, disk, now);
            r.insert_ns = now;
            store(&ctx, rq, &r);
        }
    }
    0
}

/* TP_PROTO(struct request *rq): handed to the driver. */
#[btf_tracepoint(function = "block_rq_issue")]
pub fn block_rq_issue(ctx: BtfTracePointContext) -> i32 {
    let rq: u64 = ctx.arg(0);
    let Some(DiskOf {
        dev: disk,
        slot,
        since,
    }) = rq_disk(rq, SEEN_QUEUE_ISSUE)
    else {
        return 0;
    };
    if since == 0 {
        return 0;
    }
    // As in block_rq_insert.
    // SAFETY (both): plain helper call.
    let now = || unsafe { bpf_ktime_get_ns() };
    match REQUESTS.get_ptr_mut(rq) {
        // SAFETY: a valid map value pointer; a request is issued by one CPU at a time.
        Some(r) if unsafe { (*r).issue_ns } == 0 => unsafe {
            (*r).issue_ns = now();
            // Merges since insert change the size and (front merges) the sector.
            if let Some(b) = btf_read::<u32>(rq, config!(kernel.rq_data_len)) {
                (*r).bytes = b;
            }
            if let Some(s) = btf_read::<u64>(rq, config!(kernel.rq_sector)) {
                (*r).sector = s;
            }
        },
        found => {
            if found.is_some() {
                count(Counter::IoStale);
            }
            // Not followed: only counted, as in flight unseen until its completion. Unless
            // block_getrq followed its bio (a target's, or one started before the quiet).
            if quiet_now() && !bio_seen(rq) {
                if found.is_some() {
                    forget(rq);
                }
                if carries_data(rq) {
                    count_late!(slot, late_issued);
                }
                return 0;
            }
            // Issued directly (no insert), or a reused struct: a new request.
            let now = now();
            let mut r = new_request(rq, disk, now);
            r.issue_ns = now;
            store(&ctx, rq, &r);
        }
    }
    0
}

/* TP_PROTO(struct request *rq): back from the driver, to be issued again. */
#[btf_tracepoint(function = "block_rq_requeue")]
pub fn block_rq_requeue(ctx: BtfTracePointContext) -> i32 {
    let rq: u64 = ctx.arg(0);
    if let Some(r) = REQUESTS.get_ptr_mut(rq) {
        // SAFETY: a valid map value pointer.
        unsafe {
            (*r).requeues = (*r).requeues.saturating_add(1);
            (*r).issue_ns = 0;
        }
    } else if config!(io_slow_ns) != 0
        && let Some(d) = rq_disk(rq, SEEN_QUEUE_REQUEUE)
        && d.since != 0
        && carries_data(rq)
    {
        // Back from the driver unfollowed: counted again when it is issued again (or
        // followed from then on).
        count_late!(d.slot, late_requeued);
    }
    0
}

/* TP_PROTO(struct request *rq): `rq` was merged into another request and is freed without
 * completing; its bytes complete with the other one. */
#[btf_tracepoint(function = "block_rq_merge")]
pub fn block_rq_merge(ctx: BtfTracePointContext) -> i32 {
    let rq: u64 = ctx.arg(0);
    if REQUESTS.remove(rq).is_ok() {
        count(Counter::IoMerged);
    }
    0
}

/* TP_PROTO(struct request *rq, blk_status_t error, unsigned int nr_bytes). Runs in IRQ
 * (or the completing worker's) context: the current task means nothing here, everything
 * comes from the entry. `nr_bytes` may be less than what is left of the request (a partial
 * completion; more follow). */
#[btf_tracepoint(function = "block_rq_complete")]
pub fn block_rq_complete(ctx: BtfTracePointContext) -> i32 {
    let rq: u64 = ctx.arg(0);
    let status: u8 = ctx.arg(1);
    let nr_bytes: u32 = ctx.arg(2);
    let Some(DiskOf {
        dev: disk,
        slot,
        since,
    }) = rq_disk(rq, SEEN_QUEUE_COMPLETE)
    else {
        return 0;
    };
    // Bytes left before this completion: the request is done when they are all done.
    let left = btf_read::<u32>(rq, config!(kernel.rq_data_len)).unwrap_or(0);
    let last = nr_bytes >= left;
    if since == 0 {
        count(Counter::IoOther);
        let bio = btf_read::<u64>(rq, config!(kernel.rq_bio)).unwrap_or(0);
        add_other_io(disk, blk_cgroup_cached(bio), last, nr_bytes);
        return 0;
    }
    count(Counter::IoWatched);
    add_watched_io(slot, disk, last, nr_bytes);
    // SAFETY: plain helper call.
    let now = unsafe { bpf_ktime_get_ns() };
    let followed = REQUESTS.get_ptr_mut(rq);
    let found = followed.is_some();
    let mut req = match followed {
        // SAFETY: a valid map value pointer; copied out.
        Some(r) => unsafe {
            (*r).done_bytes = (*r).done_bytes.saturating_add(nr_bytes);
            *r
        },
        None if config!(io_slow_ns) != 0 => {
            // Requests followed around calls only: not followed by choice (issued while
            // quiet), or allocated before the watch. The cheap case first, read from the
            // request alone: quick, whole, nothing unusual, and no call can have been in
            // flight since its start: summed.
            let start = btf_read::<u64>(rq, config!(kernel.rq_start_time)).unwrap_or(0);
            let before = allocated_before_watch(start, since);
            let data = nr_bytes != 0 || left != 0;
            // One lookup of the disk's summary for both its uses below.
            let v = if data { summary(slot) } else { None };
            if before {
                count(Counter::IoBeforeWatch);
            } else if data {
                count(Counter::IoLate);
                // First seen now, and only now (a partial one is followed from here on).
                if let Some(v) = v {
                    // SAFETY: as in count_late.
                    unsafe { (*v).late_done += 1 }
                }
            }
            if let Some(v) = v
                && last
                && status == 0
                && start != 0
                && now.saturating_sub(start) < config!(io_slow_ns)
                && !may_overlap_call(start)
                && !is_discard(btf_read::<u32>(rq, config!(kernel.rq_cmd_flags)).unwrap_or(0))
            {
                // Service from the issue stamp where the queue keeps one, else from the
                // start (an upper bound).
                let issued = btf_read::<u64>(rq, config!(kernel.rq_io_start_time))
                    .filter(|t| *t != 0)
                    .unwrap_or(start);
                count(Counter::IoSummed);
                sum_into(v, nr_bytes, now.saturating_sub(issued));
                return 0;
            }
            let mut r = late_request(rq, disk, start);
            r.done_bytes = nr_bytes;
            if r.flags & RQ_FROM_GETRQ == 0 && !data && r.cmd_flags & REQ_OP_MASK != REQ_OP_FLUSH {
                // The end of a data request's flush sequence (see below).
                count(Counter::IoFlushSeqEnd);
                return 0;
            }
            r.flags |= RQ_UNMATCHED;
            if !before {
                r.flags |= RQ_LATE;
                if !data {
                    count(Counter::IoLate);
                }
            }
            r
        }
        None => {
            // Never seen before: allocated before this disk was watched, or an empty
            // PREFLUSH request that the flush machinery completes without issuing it
            // (its submitter is still known from block_getrq).
            let mut r = new_request(rq, disk, now);
            // Completing: its bio's entry is not needed again (a partial completion's
            // entry, stored below, keeps the submitter).
            release_bio(rq, &r);
            r.done_bytes = nr_bytes;
            if r.flags & RQ_FROM_GETRQ == 0 && nr_bytes == 0 && left == 0 {
                // No entry, no data, and not a new empty flush: a request whose data
                // already completed (and was sent), completing again at the end of its
                // flush sequence (the device emulates PREFLUSH/FUA with flush requests).
                count(Counter::IoFlushSeqEnd);
                return 0;
            }
            if r.flags & RQ_FROM_GETRQ == 0 {
                let start = btf_read::<u64>(rq, config!(kernel.rq_start_time)).unwrap_or(0);
                count(if allocated_before_watch(start, since) {
                    Counter::IoBeforeWatch
                } else {
                    Counter::IoUnmatched
                });
                // What the request itself says: when it was allocated and issued, and
                // whose file its pages are. Not the task this completion interrupts, nor
                // now: one in flight when tracing began (a call stuck on a stopped disk)
                // was in flight all along, and a stop that held it shows as one.
                r = late_request(rq, disk, start);
                r.done_bytes = nr_bytes;
                r.flags |= RQ_UNMATCHED;
            } else if nr_bytes != 0 || left != 0 {
                // Followed from block_getrq, but its entry was refused since (counted as
                // map_busy or map_full then): its submitter is known, its issue only from
                // the block layer's own stamp.
                r.issue_ns = btf_read::<u64>(rq, config!(kernel.rq_io_start_time)).unwrap_or(0);
                r.flags |= RQ_UNMATCHED;
            }
            r
        }
    };
    if req.cmd_flags & REQ_OP_MASK == REQ_OP_FLUSH {
        count(Counter::IoFlush);
    }
    if last {
        if found {
            forget(rq);
        }
    } else {
        req.flags |= RQ_PARTIAL;
        count(Counter::IoPartial);
        if req.flags & RQ_UNMATCHED != 0 {
            // Keep it, so the rest of it completes matched.
            let mut keep = req;
            keep.flags &= !RQ_PARTIAL;
            store(&ctx, rq, &keep);
        }
    }
    if last && !one_by_one(&req, status, nr_bytes, now) {
        count(Counter::IoSummed);
        summarize(slot, &req, nr_bytes, now);
        return 0;
    }
    let mut hdr = header::<IoEvent>(EventKind::Io, now, 0);
    hdr.tgid = req.tgid;
    hdr.tid = req.tid;
    emit(IoEvent {
        hdr,
        rq: req,
        nr_bytes,
        status: status as u32,
    });
    0
}
