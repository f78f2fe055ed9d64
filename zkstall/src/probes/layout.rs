//! Which signal needs which tracepoint, and the load-time [`Config`] built from the
//! tracefs formats (tracepoint field offsets) and the kernel's BTF (struct field offsets).
//! This is the one place that knows kernels differ: a tracepoint missing or renamed on
//! this kernel disables only the signal that needs it (or, for an optional hook, only that
//! hook), alternatives cover renames (`writeback_dirty_page` before 5.16, classic
//! `sched_switch` without BTF); `check` and the run's summary name what is off.

use serde::{Deserialize, Serialize};
use zkstall_common::{ArgKind, Config, FIELD_COUNT, Field, KernelOffsets, NO_OFFSET, Syscall};

use super::{
    btf::Btf,
    tracefs::{Format, Tracefs, TracefsError},
};

/// How a program attaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HookKind {
    /// A classic tracepoint (tracefs category/name).
    TracePoint,
    /// A BTF tracepoint (tp_btf): needs /sys/kernel/btf/vmlinux.
    BtfTracePoint,
}

/// Whether a signal can run without a hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// Without it the signal is off.
    Required,
    /// Without it the signal is degraded (and says how).
    Optional,
    /// One hook of the group is needed; the first usable one (in table order) is used.
    OneOf(&'static str),
}

/// One tracepoint a program attaches to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hook {
    pub category: &'static str,
    pub name: String,
    /// The eBPF program attached there.
    pub program: &'static str,
    pub kind: HookKind,
    pub need: Need,
}

impl Hook {
    fn tp(category: &'static str, name: &str, program: &'static str) -> Self {
        Hook {
            category,
            name: name.into(),
            program,
            kind: HookKind::TracePoint,
            need: Need::Required,
        }
    }
    fn btf(category: &'static str, name: &str, program: &'static str) -> Self {
        Hook {
            kind: HookKind::BtfTracePoint,
            ..Hook::tp(category, name, program)
        }
    }
    fn optional(mut self) -> Self {
        self.need = Need::Optional;
        self
    }
    fn one_of(mut self, group: &'static str) -> Self {
        self.need = Need::OneOf(group);
        self
    }
}

/// A signal zkstall observes, and the tracepoints it needs.
#[derive(Clone, Debug)]
pub struct Signal {
    /// Short name used in `check` and the summary ("fdatasync", "block", "sched").
    pub name: &'static str,
    /// What it is for, in a few words.
    pub purpose: &'static str,
    pub hooks: Vec<Hook>,
    /// For syscall signals: which syscall.
    pub syscall: Option<Syscall>,
}

/// The interrupt and timer tracepoints: (category, tracepoint = its classic program, its
/// BTF program).
const IRQ_HOOKS: [(&str, &str, &str); 8] = [
    ("irq", "irq_handler_entry", "irq_handler_entry_btf"),
    ("irq", "irq_handler_exit", "irq_handler_exit_btf"),
    ("irq", "softirq_entry", "softirq_entry_btf"),
    ("irq", "softirq_exit", "softirq_exit_btf"),
    ("timer", "hrtimer_expire_entry", "hrtimer_expire_entry_btf"),
    ("timer", "hrtimer_expire_exit", "hrtimer_expire_exit_btf"),
    ("timer", "timer_expire_entry", "timer_expire_entry_btf"),
    ("timer", "timer_expire_exit", "timer_expire_exit_btf"),
];

/// Every signal of this build.
pub fn signals() -> Vec<Signal> {
    let mut out: Vec<Signal> = Syscall::ALL
        .iter()
        .map(|&sc| {
            let (enter, exit) = sc.programs();
            Signal {
                name: sc.name(),
                purpose: if sc.is_write() {
                    "write-family timing"
                } else {
                    "fsync-family timing"
                },
                syscall: Some(sc),
                hooks: vec![
                    Hook::tp("syscalls", &format!("sys_enter_{}", sc.name()), enter),
                    Hook::tp("syscalls", &format!("sys_exit_{}", sc.name()), exit),
                ],
            }
        })
        .collect();
    let sig = |name, purpose, hooks| Signal {
        name,
        purpose,
        hooks,
        syscall: None,
    };
    out.push(sig(
        "block",
        "block requests on the disks behind traced files, one by one (by struct request *)",
        vec![
            Hook::btf("block", "block_rq_issue", "block_rq_issue"),
            Hook::btf("block", "block_rq_complete", "block_rq_complete"),
            Hook::btf("block", "block_rq_insert", "block_rq_insert").optional(),
            Hook::btf("block", "block_rq_requeue", "block_rq_requeue").optional(),
            Hook::btf("block", "block_rq_merge", "block_rq_merge").optional(),
            Hook::btf("block", "block_getrq", "block_getrq").optional(),
        ],
    ));
    out.push(sig(
        "sched",
        "off-CPU intervals of the target's threads, on-CPU time, wakers, D-state stacks",
        vec![
            // tp_btf first: it also sees the syscall each interval is spent in.
            Hook::btf("sched", "sched_switch", "sched_switch_btf").one_of("switch"),
            Hook::tp("sched", "sched_switch", "sched_switch").one_of("switch"),
            // Every wakeup of the host: tp_btf builds no event record (the classic one
            // is the fallback without BTF).
            Hook::btf("sched", "sched_waking", "sched_waking_btf").optional(),
            Hook::tp("sched", "sched_waking", "sched_waking").optional(),
        ],
    ));
    // Every interrupt, softirq and timer of the host: tp_btf first, as above.
    out.push(sig(
        "wakers",
        "interrupt and timer context of wakeups (irq, softirq, timer instead of a bystander)",
        IRQ_HOOKS
            .iter()
            .flat_map(|&(cat, tp, btf)| {
                [
                    Hook::btf(cat, tp, btf).one_of(tp),
                    Hook::tp(cat, tp, tp).one_of(tp),
                ]
            })
            .collect(),
    ));
    out.push(sig(
        "threads",
        "thread creation, exit and renaming",
        vec![
            Hook::tp("task", "task_newtask", "task_newtask").optional(),
            Hook::tp("sched", "sched_process_exit", "sched_process_exit").optional(),
            Hook::tp("task", "task_rename", "task_rename").optional(),
        ],
    ));
    out.push(sig(
        "dirty",
        "who dirties pages of which inode",
        vec![
            Hook::tp(
                "writeback",
                "writeback_dirty_folio",
                "writeback_dirty_folio",
            )
            .one_of("dirty"),
            // Before 5.16 the same event is per page.
            Hook::tp("writeback", "writeback_dirty_page", "writeback_dirty_page").one_of("dirty"),
        ],
    ));
    out.push(sig(
        "writeback",
        "flusher writeback of inodes (charges flusher I/O to dirtiers)",
        vec![
            Hook::tp(
                "writeback",
                "writeback_single_inode_start",
                "writeback_single_inode_start",
            ),
            Hook::tp(
                "writeback",
                "writeback_single_inode",
                "writeback_single_inode",
            ),
        ],
    ));
    out.push(sig(
        "low_space",
        "writeback the target's threads forced for low free space (its reason, from the format's symbol table)",
        vec![Hook::tp("writeback", "writeback_queue", "writeback_queue")],
    ));
    out.push(sig(
        "throttle",
        "balance_dirty_pages pauses of any task",
        vec![Hook::tp(
            "writeback",
            "balance_dirty_pages",
            "balance_dirty_pages",
        )],
    ));
    out.push(sig(
        "reclaim",
        "memory reclaim done by the target's threads (direct, and their memory cgroup's)",
        vec![
            Hook::tp(
                "vmscan",
                "mm_vmscan_direct_reclaim_begin",
                "mm_vmscan_direct_reclaim_begin",
            ),
            Hook::tp(
                "vmscan",
                "mm_vmscan_direct_reclaim_end",
                "mm_vmscan_direct_reclaim_end",
            ),
            Hook::tp(
                "vmscan",
                "mm_vmscan_memcg_reclaim_begin",
                "mm_vmscan_memcg_reclaim_begin",
            )
            .optional(),
            Hook::tp(
                "vmscan",
                "mm_vmscan_memcg_reclaim_end",
                "mm_vmscan_memcg_reclaim_end",
            )
            .optional(),
        ],
    ));
    out.push(sig(
        "journal",
        "jbd2 commits and their phases",
        vec![
            Hook::tp("jbd2", "jbd2_start_commit", "jbd2_start_commit"),
            Hook::tp("jbd2", "jbd2_commit_locking", "jbd2_commit_locking").optional(),
            Hook::tp("jbd2", "jbd2_commit_flushing", "jbd2_commit_flushing").optional(),
            Hook::tp("jbd2", "jbd2_commit_logging", "jbd2_commit_logging").optional(),
            Hook::tp("jbd2", "jbd2_end_commit", "jbd2_end_commit"),
            Hook::tp("jbd2", "jbd2_run_stats", "jbd2_run_stats").optional(),
        ],
    ));
    out
}

/// Why a signal (or one optional hook of it) is off on this kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Disabled {
    pub signal: &'static str,
    pub reason: String,
}

/// How the kernel numbers request ops and flags (`enum req_op`, `enum req_flag_bits`),
/// from BTF: userspace decodes `cmd_flags` with these, and recordings carry them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReqBits {
    pub op_read: u32,
    pub op_write: u32,
    pub op_flush: u32,
    pub op_discard: u32,
    pub op_secure_erase: u32,
    pub op_write_zeroes: u32,
    pub sync: u32,
    pub meta: u32,
    pub fua: u32,
    pub preflush: u32,
    pub rahead: u32,
    pub background: u32,
}

impl Default for ReqBits {
    /// Linux 6.x's numbering.
    fn default() -> Self {
        ReqBits {
            op_read: 0,
            op_write: 1,
            op_flush: 2,
            op_discard: 3,
            op_secure_erase: 5,
            op_write_zeroes: 9,
            sync: 11,
            meta: 12,
            fua: 17,
            preflush: 18,
            rahead: 19,
            background: 20,
        }
    }
}

impl ReqBits {
    fn from_btf(btf: &Btf) -> ReqBits {
        let d = ReqBits::default();
        let e = |name: &str, dflt: u32| btf.enumerator(name).map_or(dflt, |v| v as u32);
        ReqBits {
            op_read: e("REQ_OP_READ", d.op_read),
            op_write: e("REQ_OP_WRITE", d.op_write),
            op_flush: e("REQ_OP_FLUSH", d.op_flush),
            op_discard: e("REQ_OP_DISCARD", d.op_discard),
            op_secure_erase: e("REQ_OP_SECURE_ERASE", d.op_secure_erase),
            op_write_zeroes: e("REQ_OP_WRITE_ZEROES", d.op_write_zeroes),
            sync: e("__REQ_SYNC", d.sync),
            meta: e("__REQ_META", d.meta),
            fua: e("__REQ_FUA", d.fua),
            preflush: e("__REQ_PREFLUSH", d.preflush),
            rahead: e("__REQ_RAHEAD", d.rahead),
            background: e("__REQ_BACKGROUND", d.background),
        }
    }
}

/// The result of reading the formats: the config for the programs, the signals that can
/// run (with only their usable hooks), and what cannot (with the reason).
#[derive(Clone, Debug)]
pub struct Layout {
    pub config: Config,
    pub enabled: Vec<Signal>,
    pub disabled: Vec<Disabled>,
    pub req_bits: ReqBits,
}

impl Layout {
    pub fn has(&self, signal: &str) -> bool {
        self.enabled.iter().any(|s| s.name == signal)
    }

    /// Is program `program` among the enabled hooks?
    pub fn has_program(&self, program: &str) -> bool {
        self.enabled
            .iter()
            .any(|s| s.hooks.iter().any(|h| h.program == program))
    }
}

/// One struct field a program reads: (struct, member path, size the program reads,
/// where it goes in [`KernelOffsets`]).
type KField = (
    &'static str,
    &'static str,
    u32,
    fn(&mut KernelOffsets) -> &mut u16,
);

const KERNEL_FIELDS: &[KField] = &[
    ("request", "q", 8, |k| &mut k.rq_q),
    ("request", "cmd_flags", 4, |k| &mut k.rq_cmd_flags),
    ("request", "__data_len", 4, |k| &mut k.rq_data_len),
    ("request", "__sector", 8, |k| &mut k.rq_sector),
    ("request", "bio", 8, |k| &mut k.rq_bio),
    ("request", "part", 8, |k| &mut k.rq_part),
    ("request", "start_time_ns", 8, |k| &mut k.rq_start_time),
    ("request", "io_start_time_ns", 8, |k| {
        &mut k.rq_io_start_time
    }),
    ("bio", "bi_io_vec", 8, |k| &mut k.bio_io_vec),
    ("bio_vec", "bv_page", 8, |k| &mut k.bvec_page),
    ("page", "compound_head", 8, |k| &mut k.page_compound_head),
    ("page", "mapping", 8, |k| &mut k.page_mapping),
    ("address_space", "host", 8, |k| &mut k.mapping_host),
    ("inode", "i_ino", 8, |k| &mut k.inode_ino),
    ("inode", "i_sb", 8, |k| &mut k.inode_sb),
    ("super_block", "s_bdi", 8, |k| &mut k.sb_bdi),
    ("backing_dev_info", "dev_name", 64, |k| &mut k.bdi_dev_name),
    ("request_queue", "disk", 8, |k| &mut k.q_disk),
    ("gendisk", "major", 4, |k| &mut k.disk_major),
    ("gendisk", "first_minor", 4, |k| &mut k.disk_first_minor),
    ("block_device", "bd_dev", 4, |k| &mut k.bdev_dev),
    ("bio", "bi_bdev", 8, |k| &mut k.bio_bdev),
    ("bio", "bi_blkg", 8, |k| &mut k.bio_blkg),
    ("blkcg_gq", "blkcg", 8, |k| &mut k.blkg_blkcg),
    ("blkcg", "css.cgroup", 8, |k| &mut k.blkcg_css_cgroup),
    ("cgroup", "kn", 8, |k| &mut k.cgroup_kn),
    ("kernfs_node", "id", 8, |k| &mut k.kn_id),
    ("task_struct", "pid", 4, |k| &mut k.task_pid),
    ("task_struct", "tgid", 4, |k| &mut k.task_tgid),
    ("task_struct", "flags", 4, |k| &mut k.task_flags),
    ("task_struct", "files", 8, |k| &mut k.task_files),
    ("files_struct", "fdt", 8, |k| &mut k.files_fdt),
    ("fdtable", "max_fds", 4, |k| &mut k.fdt_max_fds),
    ("fdtable", "fd", 8, |k| &mut k.fdt_fd),
    ("file", "f_inode", 8, |k| &mut k.file_inode),
    ("inode", "i_mode", 2, |k| &mut k.inode_mode),
    ("super_block", "s_dev", 4, |k| &mut k.sb_dev),
];

/// Offsets of the struct fields the programs read, from BTF; NO_OFFSET for each field
/// this kernel lacks (or has with another size). Also lists what is missing.
pub fn kernel_offsets(btf: &Btf) -> (KernelOffsets, Vec<String>) {
    let mut k = KernelOffsets::NONE;
    let mut missing = Vec::new();
    for (st, path, size, slot) in KERNEL_FIELDS {
        match btf.member(st, path) {
            Some(m) if m.size == *size && m.offset < NO_OFFSET as u32 => {
                *slot(&mut k) = m.offset as u16;
            }
            Some(m) => missing.push(format!(
                "struct {st}.{path} has size {} (zkstall reads {size})",
                m.size
            )),
            None => missing.push(format!("struct {st} has no field {path}")),
        }
    }
    (k, missing)
}

/// The write filter (`writes_to_storage` in the programs) calls bpf_get_current_task_btf,
/// which kernels before 5.11 lack (their BTF's `enum bpf_func_id` has no such helper): there
/// its offsets are cleared, the programs skip the call (dead code the verifier removes)
/// and every write is followed, as before the filter.
fn write_filter_needs_helper(k: &mut KernelOffsets, btf: &Btf) {
    if btf.enumerator("BPF_FUNC_get_current_task_btf").is_none() {
        k.task_files = NO_OFFSET;
        k.files_fdt = NO_OFFSET;
        k.fdt_max_fds = NO_OFFSET;
        k.fdt_fd = NO_OFFSET;
        k.file_inode = NO_OFFSET;
        k.inode_mode = NO_OFFSET;
    }
}

/// What each tp_btf program needs from BTF, beyond the tracepoint itself.
fn btf_needs(program: &str, k: &KernelOffsets) -> Result<(), String> {
    let need = |pairs: &[(&str, u16)]| -> Result<(), String> {
        match pairs.iter().find(|(_, o)| *o == NO_OFFSET) {
            Some((what, _)) => Err(format!("BTF lacks {what}")),
            None => Ok(()),
        }
    };
    let rq_disk = [
        ("struct request.q", k.rq_q),
        ("struct request_queue.disk", k.q_disk),
        ("struct gendisk.major", k.disk_major),
        ("struct gendisk.first_minor", k.disk_first_minor),
    ];
    match program {
        "block_rq_issue" | "block_rq_insert" | "block_rq_complete" => {
            need(&rq_disk)?;
            need(&[
                ("struct request.__data_len", k.rq_data_len),
                ("struct request.__sector", k.rq_sector),
                ("struct request.cmd_flags", k.rq_cmd_flags),
                ("struct request.bio", k.rq_bio),
            ])
        }
        "block_rq_requeue" | "block_rq_merge" => Ok(()),
        "block_getrq" => need(&[
            ("struct bio.bi_bdev", k.bio_bdev),
            ("struct block_device.bd_dev", k.bdev_dev),
            ("struct request.bio", k.rq_bio),
        ]),
        "sched_switch_btf" | "sched_waking_btf" => need(&[("struct task_struct.pid", k.task_pid)]),
        _ => Ok(()),
    }
}

/// Reads every needed format file (and BTF, when there is one) and builds the
/// [`Config`]. Fails only when tracefs itself cannot be read; a missing or odd tracepoint
/// disables its signal or hook.
pub fn build(tracefs: &Tracefs, btf: Option<&Btf>) -> Result<Layout, TracefsError> {
    let mut config = Config::default();
    let mut enabled = Vec::new();
    let mut disabled = Vec::new();
    let mut ret_offset: Option<u32> = None;
    let (kernel, _missing) = match btf {
        Some(b) => kernel_offsets(b),
        None => (KernelOffsets::NONE, Vec::new()),
    };
    config.kernel = kernel;
    if let Some(b) = btf {
        write_filter_needs_helper(&mut config.kernel, b);
    }
    if let Some(b) = btf {
        // (void *ctx, bool preempt, prev, next[, unsigned int prev_state]): since 5.18.
        config.switch_has_state_arg =
            (b.typedef_fn_params("btf_trace_sched_switch").unwrap_or(0) >= 5) as u32;
    }
    // ZKSTALL_SIGNALS_OFF=irq,wakers,...: signals left out on purpose (to measure what each
    // costs, or to spare a host one); said like any other disabled signal.
    let off: Vec<String> = std::env::var("ZKSTALL_SIGNALS_OFF")
        .unwrap_or_default()
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    for mut sig in signals() {
        if off
            .iter()
            .any(|o| o == sig.name || (o == "syscalls" && sig.syscall.is_some()))
        {
            disabled.push(Disabled {
                signal: sig.name,
                reason: "turned off by ZKSTALL_SIGNALS_OFF".into(),
            });
            continue;
        }
        if let Some(sc) = sig.syscall {
            match syscall_offsets(tracefs, sc) {
                Ok((arg_off, ret_off)) => {
                    // Every sys_exit_* shares one `ret` offset in the config.
                    if let Some(r) = ret_offset.filter(|r| *r != ret_off) {
                        disabled.push(Disabled {
                            signal: sig.name,
                            reason: format!(
                                "sys_exit_{}: ret at offset {ret_off}, others at {r}",
                                sig.name
                            ),
                        });
                        continue;
                    }
                    ret_offset = Some(ret_off);
                    config.arg_offset[sc as usize] = arg_off;
                    enabled.push(sig);
                }
                Err(e @ TracefsError::Unreadable(..)) => return Err(e),
                Err(e) => disabled.push(Disabled {
                    signal: sig.name,
                    reason: e.to_string(),
                }),
            }
            continue;
        }
        // Other signals: each hook's fields must be present with the sizes the programs read.
        let mut usable: Vec<Hook> = Vec::new();
        let mut off_reason = None;
        let mut group_misses: Vec<(&'static str, String)> = Vec::new();
        for hook in sig.hooks.drain(..) {
            if let Need::OneOf(g) = hook.need
                && usable.iter().any(|h| h.need == Need::OneOf(g))
            {
                continue; // an earlier alternative is already in use
            }
            if hook.need == Need::Optional
                && usable
                    .iter()
                    .any(|h| h.category == hook.category && h.name == hook.name)
            {
                continue; // this tracepoint already has its program (the BTF one)
            }
            let problem = match hook_usable(tracefs, btf, &hook, &mut config) {
                Ok(()) => None,
                Err(HookProblem::Fatal(e)) => return Err(e),
                Err(HookProblem::Unusable(why)) => Some(why),
            };
            match (problem, hook.need) {
                (None, _) => usable.push(hook),
                (Some(reason), Need::Required) => {
                    off_reason = Some(reason);
                    break;
                }
                (Some(reason), Need::Optional) => disabled.push(Disabled {
                    signal: sig.name,
                    reason: format!(
                        "degraded, {}:{} ({}) unusable: {reason}",
                        hook.category, hook.name, hook.program
                    ),
                }),
                (Some(reason), Need::OneOf(g)) => group_misses.push((
                    g,
                    format!(
                        "{}:{} ({}): {reason}",
                        hook.category, hook.name, hook.program
                    ),
                )),
            }
        }
        if off_reason.is_none() {
            // A group none of whose alternatives is usable turns the signal off; one that
            // fell back to a later alternative says what it lost.
            let mut groups: Vec<&'static str> = group_misses.iter().map(|(g, _)| *g).collect();
            groups.dedup();
            for g in groups {
                let whys: Vec<String> = group_misses
                    .iter()
                    .filter(|(x, _)| *x == g)
                    .map(|(_, w)| w.clone())
                    .collect();
                if usable.iter().any(|h| h.need == Need::OneOf(g)) {
                    disabled.push(Disabled {
                        signal: sig.name,
                        reason: format!("degraded, using an alternative: {}", whys.join("; ")),
                    });
                } else {
                    off_reason = Some(whys.join("; "));
                }
            }
        }
        match off_reason {
            Some(reason) => {
                // Clear what this signal's hooks wrote, so its programs read nothing stale.
                for f in Field::ALL {
                    if sig_uses(&sig, f) {
                        config.field[f as usize] = 0;
                    }
                }
                disabled.retain(|d| d.signal != sig.name);
                disabled.push(Disabled {
                    signal: sig.name,
                    reason,
                });
            }
            None => {
                sig.hooks = usable;
                enabled.push(sig);
            }
        }
    }
    config.ret_offset = ret_offset.unwrap_or(0);
    // D-sleep stacks are taken at the wakeup when sched_waking has its BTF program (it
    // passes the woken task), else at the switch-out.
    config.stack_at_wake = enabled
        .iter()
        .any(|s| s.hooks.iter().any(|h| h.program == "sched_waking_btf"))
        as u32;
    // Which writeback_queue reason is "low free space" on this kernel.
    if enabled.iter().any(|s| s.name == "low_space") {
        match tracefs
            .format("writeback", "writeback_queue")
            .ok()
            .and_then(|f| f.symbol_value("reason", "fs_free_space"))
        {
            Some(v) if v >= 0 => config.wb_reason_free_space = v as u32,
            _ => {
                enabled.retain(|s| s.name != "low_space");
                disabled.push(Disabled {
                    signal: "low_space",
                    reason: "writeback:writeback_queue's format names no fs_free_space reason"
                        .into(),
                });
            }
        }
    }
    Ok(Layout {
        config,
        enabled,
        disabled,
        req_bits: btf.map(ReqBits::from_btf).unwrap_or_default(),
    })
}

enum HookProblem {
    Fatal(TracefsError),
    Unusable(String),
}

fn hook_usable(
    tracefs: &Tracefs,
    btf: Option<&Btf>,
    hook: &Hook,
    config: &mut Config,
) -> Result<(), HookProblem> {
    match hook.kind {
        HookKind::BtfTracePoint => {
            let Some(btf) = btf else {
                return Err(HookProblem::Unusable(
                    "no BTF (/sys/kernel/btf/vmlinux; CONFIG_DEBUG_INFO_BTF)".into(),
                ));
            };
            // The tracepoint must exist (its format is also where `check` looks).
            match tracefs.format(hook.category, &hook.name) {
                Ok(_) => {}
                Err(e @ TracefsError::Unreadable(..)) => return Err(HookProblem::Fatal(e)),
                Err(e) => return Err(HookProblem::Unusable(e.to_string())),
            }
            if btf
                .typedef_fn_params(&format!("btf_trace_{}", hook.name))
                .is_none()
            {
                return Err(HookProblem::Unusable(format!(
                    "BTF has no btf_trace_{} (tp_btf cannot attach)",
                    hook.name
                )));
            }
            btf_needs(hook.program, &config.kernel).map_err(HookProblem::Unusable)
        }
        HookKind::TracePoint => match hook_fields(tracefs, hook, config) {
            Ok(()) => Ok(()),
            Err(e @ TracefsError::Unreadable(..)) => Err(HookProblem::Fatal(e)),
            Err(e) => Err(HookProblem::Unusable(e.to_string())),
        },
    }
}

fn sig_uses(sig: &Signal, f: Field) -> bool {
    let (cat, tp, _, _) = f.spec();
    signals()
        .into_iter()
        .find(|s| s.name == sig.name)
        .is_some_and(|s| s.hooks.iter().any(|h| h.category == cat && h.name == tp))
}

/// Fills the offsets of every field the hook's program reads.
fn hook_fields(tracefs: &Tracefs, hook: &Hook, config: &mut Config) -> Result<(), TracefsError> {
    let format = tracefs.format(hook.category, &hook.name)?;
    for f in Field::ALL {
        let (cat, tp, _, _) = f.spec();
        if cat == hook.category && tp == hook.name {
            config.field[f as usize] = field_offset(tracefs, &format, f)?;
        }
    }
    Ok(())
}

/// The offset of `f` in `format`, if its size fits what the program reads.
fn field_offset(tracefs: &Tracefs, format: &Format, f: Field) -> Result<u16, TracefsError> {
    let (cat, tp, name, size) = f.spec();
    let bad = |what: String| TracefsError::Parse(tracefs.format_path(cat, tp), what);
    let fld = format
        .field(name)
        .ok_or_else(|| bad(format!("no field {name}")))?;
    // Scalars must match exactly; character arrays may be longer than what is read.
    let is_array = matches!(name, "rwbs" | "comm" | "newcomm" | "name" | "bdi");
    let fits = if is_array {
        fld.size >= size
    } else {
        fld.size == size
    };
    if !fits || fld.offset == 0 || fld.offset > u16::MAX as u32 {
        return Err(bad(format!(
            "{name} has size {} at offset {}, zkstall reads {size}",
            fld.size, fld.offset
        )));
    }
    Ok(fld.offset as u16)
}

const _: () = assert!(FIELD_COUNT == Field::ALL.len());

/// Offsets of the recorded argument (0 for none) and of `ret` for one syscall.
fn syscall_offsets(tracefs: &Tracefs, sc: Syscall) -> Result<(u32, u32), TracefsError> {
    let enter_name = format!("sys_enter_{}", sc.name());
    let exit_name = format!("sys_exit_{}", sc.name());
    let enter = tracefs.format("syscalls", &enter_name)?;
    let exit = tracefs.format("syscalls", &exit_name)?;
    let bad =
        |tp: &str, what: String| TracefsError::Parse(tracefs.format_path("syscalls", tp), what);
    let (arg_name, kind) = sc.arg();
    let arg_off = match kind {
        ArgKind::None => 0,
        ArgKind::Fd | ArgKind::Addr => {
            let f = enter
                .field(arg_name)
                .ok_or_else(|| bad(&enter_name, format!("no field {arg_name}")))?;
            // The programs read 8 bytes: syscall tracepoints store every argument as a long.
            if f.size != 8 || f.offset == 0 {
                return Err(bad(
                    &enter_name,
                    format!("{arg_name} has size {} at {}", f.size, f.offset),
                ));
            }
            f.offset
        }
    };
    let ret = exit
        .field("ret")
        .ok_or_else(|| bad(&exit_name, "no field ret".into()))?;
    if ret.size != 8 || ret.offset == 0 {
        return Err(bad(
            &exit_name,
            format!("ret has size {} at {}", ret.size, ret.offset),
        ));
    }
    Ok((arg_off, ret.offset))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probes::btf::tests::Builder;
    use std::fs;

    fn write_tp(root: &std::path::Path, cat: &str, name: &str, body: &str) {
        let d = root.join("events").join(cat).join(name);
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("format"), body).unwrap();
    }

    const COMMON: &str = "\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\tfield:int __syscall_nr;\toffset:8;\tsize:4;\tsigned:1;\n";

    /// A fake tracefs with every syscall tracepoint (args at offset 24, ret at 32) except
    /// syncfs, block tracepoints, a classic sched_switch, and dirtying only under its
    /// pre-5.16 name.
    fn fake() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for sc in Syscall::ALL {
            if sc == Syscall::Syncfs {
                continue; // as on a kernel without it
            }
            let (arg, _) = sc.arg();
            let argline = if arg.is_empty() {
                String::new()
            } else {
                format!("\tfield:unsigned long {arg};\toffset:24;\tsize:8;\tsigned:0;\n")
            };
            write_tp(
                dir.path(),
                "syscalls",
                &format!("sys_enter_{}", sc.name()),
                &format!("{COMMON}{argline}"),
            );
            write_tp(
                dir.path(),
                "syscalls",
                &format!("sys_exit_{}", sc.name()),
                &format!("{COMMON}\tfield:long ret;\toffset:32;\tsize:8;\tsigned:1;\n"),
            );
        }
        let blk = "\tfield:dev_t dev;\toffset:8;\tsize:4;\tsigned:0;\n";
        for tp in [
            "block_rq_issue",
            "block_rq_complete",
            "block_rq_insert",
            "block_rq_requeue",
            "block_getrq",
        ] {
            write_tp(dir.path(), "block", tp, blk);
        }
        write_tp(
            dir.path(),
            "sched",
            "sched_switch",
            "\tfield:char prev_comm[16];\toffset:8;\tsize:16;\tsigned:0;\n\tfield:pid_t prev_pid;\toffset:24;\tsize:4;\tsigned:1;\n\tfield:long prev_state;\toffset:32;\tsize:8;\tsigned:1;\n\tfield:pid_t next_pid;\toffset:56;\tsize:4;\tsigned:1;\n",
        );
        write_tp(
            dir.path(),
            "sched",
            "sched_waking",
            "\tfield:char comm[16];\toffset:8;\tsize:16;\tsigned:0;\n\tfield:pid_t pid;\toffset:24;\tsize:4;\tsigned:1;\n",
        );
        write_tp(
            dir.path(),
            "writeback",
            "writeback_dirty_page",
            "\tfield:char name[32];\toffset:8;\tsize:32;\tsigned:0;\n\tfield:ino_t ino;\toffset:40;\tsize:8;\tsigned:0;\n",
        );
        dir
    }

    /// BTF with what the block programs read, except what `skip` names.
    fn fake_btf(skip: &str) -> Btf {
        let mut b = Builder::new();
        let u32t = b.int("unsigned int", 4);
        let u64t = b.int("long long unsigned int", 8);
        let i32t = b.int("int", 4);
        let void_ptr = b.ptr(0);
        let mut members: Vec<(&str, u32, u32)> = vec![
            ("q", void_ptr, 0),
            ("cmd_flags", u32t, 24),
            ("__data_len", u32t, 44),
            ("__sector", u64t, 48),
            ("bio", void_ptr, 56),
        ];
        members.retain(|(n, _, _)| *n != skip);
        b.structure("request", 300, &members);
        b.structure("request_queue", 100, &[("disk", void_ptr, 80)]);
        let mut g: Vec<(&str, u32, u32)> = vec![("major", i32t, 0), ("first_minor", i32t, 4)];
        g.retain(|(n, _, _)| *n != skip);
        b.structure("gendisk", 100, &g);
        b.structure(
            "task_struct",
            3000,
            &[
                ("flags", u32t, 44),
                ("pid", i32t, 1500),
                ("files", void_ptr, 2000),
            ],
        );
        b.enumeration(
            "req_flag_bits",
            &[("__REQ_SYNC", 12), ("__REQ_PREFLUSH", 19)],
        );
        let ptr_t = b.ptr(0);
        b.structure("files_struct", 200, &[("fdt", ptr_t, 32)]);
        b.structure("fdtable", 40, &[("max_fds", u32t, 0), ("fd", ptr_t, 8)]);
        b.structure("file", 200, &[("f_inode", ptr_t, 32)]);
        let u16t = b.int("short unsigned int", 2);
        b.structure("inode", 600, &[("i_mode", u16t, 0)]);
        if skip != "BPF_FUNC_get_current_task_btf" {
            b.enumeration("bpf_func_id", &[("BPF_FUNC_get_current_task_btf", 158)]);
        }
        // The tracepoints' function types.
        let proto = |b: &mut Builder, n: u16| {
            // A FUNC_PROTO with n params, built as an enum-sized record: the builder has no
            // FUNC_PROTO helper, so use the raw form through a typedef to a pointer to it.
            b.func_proto(n)
        };
        for (tp, n) in [
            ("block_rq_issue", 2),
            ("block_rq_complete", 4),
            ("block_rq_insert", 2),
            ("block_rq_requeue", 2),
            ("block_getrq", 2),
            ("sched_switch", 5),
            ("sched_waking", 2),
        ] {
            let fp = proto(&mut b, n);
            let p = b.ptr(fp);
            b.typedef(&format!("btf_trace_{tp}"), p);
        }
        Btf::parse(b.build()).unwrap()
    }

    #[test]
    fn offsets_come_from_the_format_files_and_missing_ones_disable_one_signal() {
        let dir = fake();
        let l = build(&Tracefs::at(dir.path()), None).unwrap();
        assert_eq!(l.config.arg_offset[Syscall::Fdatasync as usize], 24);
        assert_eq!(l.config.arg_offset[Syscall::Msync as usize], 24);
        assert_eq!(l.config.arg_offset[Syscall::Sync as usize], 0);
        assert_eq!(l.config.ret_offset, 32);
        assert!(l.has("fdatasync") && l.has("write") && !l.has("syncfs"));
        let syncfs = l.disabled.iter().find(|d| d.signal == "syncfs").unwrap();
        assert!(syncfs.reason.contains("not found"), "{}", syncfs.reason);
    }

    #[test]
    fn without_btf_block_is_off_and_sched_falls_back_to_the_classic_tracepoint() {
        let dir = fake();
        let l = build(&Tracefs::at(dir.path()), None).unwrap();
        assert!(!l.has("block"));
        let why = &l
            .disabled
            .iter()
            .find(|d| d.signal == "block")
            .unwrap()
            .reason;
        assert!(why.contains("no BTF"), "{why}");
        assert!(l.has("sched"));
        assert!(l.has_program("sched_switch") && !l.has_program("sched_switch_btf"));
        assert_eq!(
            l.config.stack_at_wake, 0,
            "no woken task pointer: stacks at the switch-out"
        );
        assert_eq!(l.config.field[Field::SwitchNextPid as usize], 56);
        assert!(
            l.disabled
                .iter()
                .any(|d| d.signal == "sched" && d.reason.contains("alternative")),
            "the fallback is reported: {:?}",
            l.disabled
        );
        // Dirtying is only there under its pre-5.16 name: that alternative is used.
        assert!(l.has_program("writeback_dirty_page") && !l.has_program("writeback_dirty_folio"));
        assert_eq!(l.config.field[Field::DirtyPageIno as usize], 40);
        // No jbd2 tracepoints in this fake (a module not loaded): that signal alone is off.
        for s in ["writeback", "throttle", "journal", "wakers", "reclaim"] {
            assert!(!l.has(s), "{s}");
            assert!(
                l.disabled.iter().any(|d| d.signal == s),
                "{s} is reported off"
            );
        }
    }

    #[test]
    fn with_btf_block_requests_are_keyed_by_pointer_and_read_at_btf_offsets() {
        let dir = fake();
        let btf = fake_btf("");
        let l = build(&Tracefs::at(dir.path()), Some(&btf)).unwrap();
        assert!(l.has("block"), "{:?}", l.disabled);
        assert!(
            l.has_program("block_getrq")
                || l.disabled.iter().any(|d| d.reason.contains("block_getrq"))
        );
        assert_eq!(l.config.kernel.rq_sector, 48);
        assert_eq!(l.config.kernel.disk_first_minor, 4);
        assert_eq!(l.config.kernel.task_pid, 1500);
        assert_eq!(
            l.config.kernel.rq_part, NO_OFFSET,
            "absent fields are marked"
        );
        assert_eq!(l.config.switch_has_state_arg, 1);
        assert!(l.has_program("sched_switch_btf") && !l.has_program("sched_switch"));
        // The woken task is known: D-sleep stacks are taken at the wakeup.
        assert!(l.has_program("sched_waking_btf"));
        assert_eq!(l.config.stack_at_wake, 1);
        assert_eq!(
            l.req_bits.preflush, 19,
            "flag bits follow this kernel's BTF"
        );
        assert_eq!(
            l.req_bits.fua,
            ReqBits::default().fua,
            "missing ones keep 6.x values"
        );
        // block_rq_merge has no tracepoint in this fake: only that hook is off.
        assert!(
            l.disabled
                .iter()
                .any(|d| d.signal == "block" && d.reason.contains("block_rq_merge"))
        );
    }

    #[test]
    fn other_io_keys_spread_over_the_cache_s_ways() {
        use zkstall_common::{OTHER_IO_WATCHED, OTHER_IO_WAYS, OtherIoKey};
        let mut used = std::collections::BTreeSet::new();
        for disk in [
            (8 << 20),
            (8 << 20) | 16,
            (7 << 20) | 3,
            (259 << 20),
            (253 << 20) | 1,
        ] {
            for blk_cgroup in [0, 1, 2, 0x1_0000_0001, OTHER_IO_WATCHED] {
                let w = OtherIoKey {
                    disk,
                    _pad: 0,
                    blk_cgroup,
                }
                .way();
                assert!(w < OTHER_IO_WAYS, "{disk} {blk_cgroup}: {w}");
                used.insert(w);
            }
        }
        assert!(used.len() >= OTHER_IO_WAYS as usize / 2, "{used:?}");
    }

    #[test]
    fn the_write_filter_reads_the_fd_table_only_where_the_kernel_has_its_helper() {
        let dir = fake();
        let btf = fake_btf("");
        let k = build(&Tracefs::at(dir.path()), Some(&btf))
            .unwrap()
            .config
            .kernel;
        assert_eq!(
            (
                k.task_files,
                k.files_fdt,
                k.fdt_max_fds,
                k.fdt_fd,
                k.file_inode,
                k.inode_mode
            ),
            (2000, 32, 0, 8, 32, 0)
        );
        // Before 5.11: no bpf_get_current_task_btf, so no filter (every write followed).
        let btf = fake_btf("BPF_FUNC_get_current_task_btf");
        let k = build(&Tracefs::at(dir.path()), Some(&btf))
            .unwrap()
            .config
            .kernel;
        assert_eq!(k.task_files, NO_OFFSET);
        assert_eq!(k.inode_mode, NO_OFFSET);
        assert_eq!(k.task_pid, 1500, "the rest stays");
    }

    #[test]
    fn a_missing_struct_field_turns_block_off_and_names_the_field() {
        let dir = fake();
        let btf = fake_btf("first_minor");
        let l = build(&Tracefs::at(dir.path()), Some(&btf)).unwrap();
        assert!(!l.has("block"));
        let why = &l
            .disabled
            .iter()
            .find(|d| d.signal == "block")
            .unwrap()
            .reason;
        assert!(why.contains("gendisk.first_minor"), "{why}");
    }
}
