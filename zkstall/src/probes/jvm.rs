//! HotSpot's USDT probes, attached per traced JVM: one uprobe per probe site of its
//! libjvm.so (found in /proc/PID/maps, read through /proc/PID/root so a JVM in a container
//! is read as it sees its files), scoped to that process, with an attach cookie naming the
//! USDT_SPECS slot that says which probe it is and where its arguments are. A JVM without
//! the probes (a build without DTrace support), or a kernel without attach cookies for
//! uprobes (before 5.15), leaves the JVM signal off for that process, and says why.

use std::{collections::HashMap, num::NonZeroU32, os::unix::fs::MetadataExt as _, path::PathBuf};

use aya::{
    maps::Array,
    programs::{
        UProbe,
        uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeLinkId, UProbeScope},
    },
};
use zkstall_common::{JvmProbe, USDT_MAX_ARGS, USDT_SPEC_SLOTS, UsdtArgSpec, UsdtSpec, names};

use super::{Probes, chain, usdt};

/// One HotSpot probe in a libjvm: (probe, USDT_SPECS slot, file offset).
type ProbeSite = (JvmProbe, u32, u64);

/// What the JVM signal holds: why it is off, the libjvm builds described in USDT_SPECS,
/// and each traced JVM's links.
#[derive(Default)]
pub struct JvmState {
    /// Why HotSpot's probes cannot be used at all here (None: the program is loaded).
    pub off: Option<String>,
    /// (device, inode) of a libjvm.so -> its probes: (probe, USDT_SPECS slot, file offset).
    files: HashMap<(u64, u64), Vec<ProbeSite>>,
    next_slot: u32,
    links: HashMap<u32, Vec<UProbeLinkId>>,
}

/// The libjvm.so process `pid` maps, as a path this process can open.
fn libjvm_of(pid: u32) -> Result<PathBuf, String> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .map_err(|e| format!("reading /proc/{pid}/maps: {e}"))?;
    let path = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| p.ends_with("/libjvm.so"))
        .ok_or("it maps no libjvm.so (not a HotSpot JVM)")?;
    Ok(PathBuf::from(format!("/proc/{pid}/root{path}")))
}

impl Probes {
    /// Loads the HotSpot probe program (once, at start; nothing is attached).
    pub(super) fn load_jvm(&mut self) {
        if std::env::var("ZKSTALL_SIGNALS_OFF")
            .unwrap_or_default()
            .split(',')
            .any(|s| s.trim() == "jvm")
        {
            self.jvm.off = Some("left out (ZKSTALL_SIGNALS_OFF)".into());
            return;
        }
        let r = match self.bpf.program_mut(names::JVM_USDT) {
            None => Err("the program is missing from the object".to_string()),
            Some(p) => match <&mut UProbe>::try_from(p) {
                Ok(u) => u.load().map_err(|e| chain(&e)),
                Err(e) => Err(chain(&e)),
            },
        };
        if let Err(e) = r {
            self.jvm.off = Some(format!("the uprobe program did not load: {e}"));
        }
    }

    /// Why HotSpot's probes are off on this host (None: available).
    pub fn jvm_off(&self) -> Option<&str> {
        self.jvm.off.as_deref()
    }

    /// Attaches HotSpot's probes to JVM `pid`; returns how many probe sites.
    pub fn attach_jvm(&mut self, pid: u32) -> Result<usize, String> {
        if let Some(off) = &self.jvm.off {
            return Err(off.clone());
        }
        let target = libjvm_of(pid)?;
        let meta = std::fs::metadata(&target).map_err(|e| format!("{}: {e}", target.display()))?;
        let key = (meta.dev(), meta.ino());
        if !self.jvm.files.contains_key(&key) {
            let sites = self.describe(&target)?;
            self.jvm.files.insert(key, sites);
        }
        let sites = self.jvm.files.get(&key).cloned().unwrap_or_default();
        let pid_nz = NonZeroU32::new(pid).ok_or("pid 0")?;
        let prog: &mut UProbe = self
            .bpf
            .program_mut(names::JVM_USDT)
            .ok_or("the program is missing from the object")?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| chain(&e))?;
        let mut links = Vec::new();
        for (probe, slot, offset) in &sites {
            match prog.attach(
                UProbeAttachPoint {
                    location: UProbeAttachLocation::AbsoluteOffset(*offset),
                    cookie: Some(*slot as u64),
                },
                &target,
                UProbeScope::OneProcess(pid_nz),
            ) {
                Ok(l) => links.push(l),
                Err(e) => {
                    for l in links {
                        let _ = prog.detach(l);
                    }
                    let (prov, name) = probe.note();
                    return Err(format!(
                        "attaching {prov}:{name} of {}: {}",
                        target.display(),
                        chain(&e)
                    ));
                }
            }
        }
        let n = links.len();
        self.jvm.links.insert(pid, links);
        Ok(n)
    }

    /// Detaches the probes of a JVM that exited (or is no longer traced).
    pub fn detach_jvm(&mut self, pid: u32) {
        let Some(links) = self.jvm.links.remove(&pid) else {
            return;
        };
        if let Some(p) = self.bpf.program_mut(names::JVM_USDT)
            && let Ok(prog) = <&mut UProbe>::try_from(p)
        {
            for l in links {
                let _ = prog.detach(l);
            }
        }
    }

    /// Reads a libjvm.so's probe notes into USDT_SPECS slots.
    fn describe(&mut self, target: &std::path::Path) -> Result<Vec<(JvmProbe, u32, u64)>, String> {
        let notes = usdt::probes(target).map_err(|e| e.to_string())?;
        let mut sites = Vec::new();
        let map = self
            .bpf
            .map_mut(names::USDT_SPECS)
            .ok_or("USDT_SPECS is missing from the object")?;
        let mut specs: Array<&mut aya::maps::MapData, UsdtSpec> =
            Array::try_from(map).map_err(|e| chain(&e))?;
        for probe in JvmProbe::ALL {
            let (prov, name) = probe.note();
            for n in notes
                .iter()
                .filter(|n| n.provider == prov && n.name == name)
            {
                if n.semaphore != 0 {
                    // A probe behind a semaphore would have to be enabled in the process's
                    // memory; HotSpot's have none.
                    continue;
                }
                let Some(args) = n.arg_specs() else {
                    continue;
                };
                if args.len() > USDT_MAX_ARGS + 1 || self.jvm.next_slot >= USDT_SPEC_SLOTS {
                    continue;
                }
                let mut spec = UsdtSpec {
                    probe: probe as u32,
                    nargs: args.len().min(USDT_MAX_ARGS) as u32,
                    args: [UsdtArgSpec::default(); USDT_MAX_ARGS],
                };
                for (slot, a) in spec.args.iter_mut().zip(args) {
                    *slot = a;
                }
                let slot = self.jvm.next_slot;
                specs
                    .set(slot, spec, 0)
                    .map_err(|e| format!("USDT_SPECS: {}", chain(&e)))?;
                self.jvm.next_slot += 1;
                sites.push((probe, slot, n.file_offset));
            }
        }
        if sites.is_empty() {
            return Err(format!(
                "{} has no HotSpot USDT probes (a JVM built without DTrace support)",
                target.display()
            ));
        }
        Ok(sites)
    }
}
