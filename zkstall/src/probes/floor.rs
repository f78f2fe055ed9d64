//! The bench's floor: a program that looks up one map and returns, on every hook the
//! enabled signals use (`zkstall floor`). What a bystander loses to it is the price of the
//! hooks themselves on this kernel and machine, which no work inside zkstall's programs can
//! go below.

use aya::{
    Btf, Ebpf, EbpfLoader,
    programs::{BtfTracePoint, TracePoint},
};

use super::{HookKind, Layout, ProbeError, chain, load_error};

/// The floor object, built beside zkstall's own (zkstall-ebpf/src/floor.rs).
static FLOOR_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/zkstall-floor"));

/// The attached floor programs; dropping it detaches them.
pub struct Floor {
    _objects: Vec<Ebpf>,
    /// Hooks attached: (classic tracepoints, BTF tracepoints).
    pub hooks: (usize, usize),
}

impl Floor {
    /// Loads and attaches the floor on every hook of `layout`'s enabled signals.
    pub fn attach(layout: &Layout) -> Result<Floor, ProbeError> {
        super::raise_memlock_limit();
        let load = || {
            EbpfLoader::new()
                .load(FLOOR_OBJECT)
                .map_err(|e| load_error(&e))
        };
        let err = |hook: &super::layout::Hook, e: &(dyn std::error::Error + 'static)| {
            ProbeError::Attach {
                program: "floor".into(),
                hook: format!("{}:{}", hook.category, hook.name),
                detail: chain(e),
            }
        };
        let mut classic = load()?;
        let tp: &mut TracePoint = classic
            .program_mut("floor_tp")
            .ok_or_else(|| ProbeError::Load("floor_tp missing from the floor object".into()))?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| ProbeError::Load(chain(&e)))?;
        tp.load().map_err(|e| load_error(&e))?;
        let mut objects = Vec::new();
        let mut btf: Option<Btf> = None;
        let (mut n_tp, mut n_btf) = (0, 0);
        for hook in layout.enabled.iter().flat_map(|s| s.hooks.iter()) {
            match hook.kind {
                HookKind::TracePoint => {
                    let tp: &mut TracePoint = classic
                        .program_mut("floor_tp")
                        .and_then(|p| p.try_into().ok())
                        .ok_or_else(|| ProbeError::Load("floor_tp".into()))?;
                    tp.attach(hook.category, &hook.name)
                        .map_err(|e| err(hook, &e))?;
                    n_tp += 1;
                }
                HookKind::BtfTracePoint => {
                    if btf.is_none() {
                        btf = Some(Btf::from_sys_fs().map_err(|e| err(hook, &e))?);
                    }
                    let btf = btf.as_ref().ok_or_else(|| ProbeError::Load("BTF".into()))?;
                    // A tp_btf program is verified for one function: one object per hook.
                    let mut obj = load()?;
                    let p: &mut BtfTracePoint = obj
                        .program_mut("floor_btf")
                        .ok_or_else(|| ProbeError::Load("floor_btf missing".into()))?
                        .try_into()
                        .map_err(|e: aya::programs::ProgramError| err(hook, &e))?;
                    p.load(&hook.name, btf).map_err(|e| err(hook, &e))?;
                    p.attach().map_err(|e| err(hook, &e))?;
                    objects.push(obj);
                    n_btf += 1;
                }
            }
        }
        objects.push(classic);
        Ok(Floor {
            _objects: objects,
            hooks: (n_tp, n_btf),
        })
    }
}
