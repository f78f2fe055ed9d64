//! The bench's floor: a program that looks up one map and returns, on every hook the
//! enabled signals use (`zkstall floor`). What a bystander loses to it is the price of the
//! hooks themselves on this kernel and machine, which no work inside zkstall's programs can
//! go below.

use aya::{
    Btf, Ebpf, EbpfLoader,
    programs::{BtfTracePoint, TracePoint},
};

use super::{HookKind, Layout, ProbeError, chain, layout::Hook, load_error};

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
        let hooks: Vec<&Hook> = layout.enabled.iter().flat_map(|s| &s.hooks).collect();
        let (classic, btf): (Vec<&Hook>, Vec<&Hook>) = hooks
            .into_iter()
            .partition(|h| h.kind == HookKind::TracePoint);
        let mut objects = vec![attach_classic(&classic)?];
        if let Some(first) = btf.first() {
            let kernel_btf = Btf::from_sys_fs().map_err(|e| attach_error(first, &e))?;
            for hook in &btf {
                objects.push(attach_btf(hook, &kernel_btf)?);
            }
        }
        Ok(Floor {
            _objects: objects,
            hooks: (classic.len(), btf.len()),
        })
    }
}

fn load_object() -> Result<Ebpf, ProbeError> {
    EbpfLoader::new()
        .load(FLOOR_OBJECT)
        .map_err(|e| load_error(&e))
}

fn attach_error(hook: &Hook, e: &(dyn std::error::Error + 'static)) -> ProbeError {
    ProbeError::Attach {
        program: "floor".into(),
        hook: format!("{}:{}", hook.category, hook.name),
        detail: chain(e),
    }
}

/// One object whose classic program is attached to every classic hook.
fn attach_classic(hooks: &[&Hook]) -> Result<Ebpf, ProbeError> {
    let mut obj = load_object()?;
    let tp: &mut TracePoint = obj
        .program_mut("floor_tp")
        .ok_or_else(|| ProbeError::Load("floor_tp missing from the floor object".into()))?
        .try_into()
        .map_err(|e: aya::programs::ProgramError| ProbeError::Load(chain(&e)))?;
    tp.load().map_err(|e| load_error(&e))?;
    for hook in hooks {
        tp.attach(hook.category, &hook.name)
            .map_err(|e| attach_error(hook, &e))?;
    }
    Ok(obj)
}

/// One object for one BTF hook: a tp_btf program is verified for one function.
fn attach_btf(hook: &Hook, btf: &Btf) -> Result<Ebpf, ProbeError> {
    let mut obj = load_object()?;
    let p: &mut BtfTracePoint = obj
        .program_mut("floor_btf")
        .ok_or_else(|| ProbeError::Load("floor_btf missing from the floor object".into()))?
        .try_into()
        .map_err(|e: aya::programs::ProgramError| attach_error(hook, &e))?;
    p.load(&hook.name, btf)
        .map_err(|e| attach_error(hook, &e))?;
    p.attach().map_err(|e| attach_error(hook, &e))?;
    Ok(obj)
}
