//! Attaching the programs: TCX links pinned under the pin root
//! (`link_<program>_<iface>`), so they stay attached when the agent exits
//! or restarts, and are replaced without a gap: the new program's link is
//! attached *first* in the interface's TCX chain (it returns a final
//! verdict, so the old one no longer sees packets), then the old link is
//! released. `tc filter show` does not list TCX links: use `bpftool net`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use aya::programs::SchedClassifier;
use aya::programs::TcAttachType;
use aya::programs::links::{FdLink, LinkOrder, PinnedLink};
use aya::programs::tc::TcAttachOptions;

use crate::loader::{Datapath, DatapathError, Program, prog_err};

fn pin_err(
    path: PathBuf,
) -> impl FnOnce(Box<dyn std::error::Error + Send + Sync>) -> DatapathError {
    move |source| DatapathError::LinkPin { path, source }
}

impl Datapath {
    fn link_pin(&self, iface: &str, program: Program) -> Result<PathBuf, DatapathError> {
        Ok(self
            .pin_root()
            .pin_path(&format!("link_{}_{iface}", program.name()))?)
    }

    /// Attaches both pod programs to the host side of a pod veth.
    pub fn attach(&mut self, host_veth: &str) -> Result<(), DatapathError> {
        self.attach_programs(host_veth, &Program::POD)
    }

    /// Attaches host_ingress to the node's uplink (underlay device).
    pub fn attach_uplink(&mut self, iface: &str) -> Result<(), DatapathError> {
        self.attach_programs(iface, &[Program::HostIngress])
    }

    /// Attaches overlay_ingress to the node's `external` VXLAN device.
    pub fn attach_overlay(&mut self, iface: &str) -> Result<(), DatapathError> {
        self.attach_programs(iface, &[Program::OverlayIngress])
    }

    /// Attaches `programs` to `iface` in the calling thread's network
    /// namespace. Where a link of ours is pinned already: kept if it runs
    /// this very program (idempotent), else replaced without a gap (an agent
    /// restart or upgrade loads new program instances).
    pub fn attach_programs(
        &mut self,
        iface: &str,
        programs: &[Program],
    ) -> Result<(), DatapathError> {
        for &program in programs {
            let pin = self.link_pin(iface, program)?;
            let old: Option<FdLink> = PinnedLink::from_pin(&pin).ok().map(FdLink::from);
            let ours = self
                .program(program)?
                .info()
                .map_err(prog_err(program.name()))?
                .id();
            // Ours and live on this very interface (a pinned link outlives
            // a deleted interface, which may come back under its name).
            let live_here = SchedClassifier::query_tcx(iface, program.attach_type())
                .map(|(_, progs)| progs.iter().any(|p| p.id() == ours))
                .unwrap_or(false);
            if let Some(old) = &old {
                let info = old.info().map_err(|e| pin_err(pin.clone())(Box::new(e)))?;
                if info.program_id() == ours && live_here {
                    continue;
                }
            }
            let prog = self.program_mut(program)?;
            let id = prog
                .attach_with_options(
                    iface,
                    program.attach_type(),
                    TcAttachOptions::TcxOrder(LinkOrder::first()),
                )
                .map_err(prog_err(program.name()))?;
            let link = prog.take_link(id).map_err(prog_err(program.name()))?;
            let new = FdLink::try_from(link).map_err(|e| pin_err(pin.clone())(Box::new(e)))?;
            if old.is_some() {
                // Unpin the old link; it goes when `old` (our last fd) drops.
                std::fs::remove_file(&pin).map_err(|e| pin_err(pin.clone())(Box::new(e)))?;
            }
            drop(old);
            new.pin(&pin)
                .map_err(|e| pin_err(pin.clone())(Box::new(e)))?;
        }
        Ok(())
    }

    /// Ids of the programs attached to `iface` (TCX, both directions), ours or
    /// not, in the calling thread's network namespace.
    pub fn attached_program_ids(iface: &str) -> Result<Vec<u32>, DatapathError> {
        let mut ids = Vec::new();
        for at in [TcAttachType::Ingress, TcAttachType::Egress] {
            let (_, progs) =
                SchedClassifier::query_tcx(iface, at).map_err(prog_err("query_tcx"))?;
            ids.extend(progs.iter().map(|p| p.id()));
        }
        Ok(ids)
    }

    /// Detaches every program of ours from `iface` (removes the link pins).
    /// The kernel releases an unpinned link asynchronously; this waits (up
    /// to 2 s) until the interface no longer runs the programs.
    pub fn detach(&mut self, iface: &str) -> Result<(), DatapathError> {
        let mut gone = Vec::new();
        for program in Program::ALL {
            let pin = self.link_pin(iface, program)?;
            let Ok(link) = PinnedLink::from_pin(&pin).map(FdLink::from) else {
                continue;
            };
            let prog_id = link.info().map(|i| i.program_id()).ok();
            std::fs::remove_file(&pin).map_err(|e| pin_err(pin.clone())(Box::new(e)))?;
            drop(link);
            gone.extend(prog_id.map(|id| (program, id)));
        }
        if gone.is_empty() {
            return Err(DatapathError::NotAttached(iface.into()));
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let still = gone.iter().any(|(program, id)| {
                SchedClassifier::query_tcx(iface, program.attach_type())
                    .map(|(_, progs)| progs.iter().any(|p| p.id() == *id))
                    .unwrap_or(false) // the interface is gone: so are its links
            });
            if !still {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(DatapathError::DetachTimeout(iface.into()));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}
