//! The kernel backend: the in-kernel WireGuard device over generic netlink (family
//! `wireguard`, see [`super::genl`] for the messages). Verified here only up to the kernel's
//! answer that the family is missing: this machine's kernel has no WireGuard module (docs).

use super::genl::{self, FAMILY_NAME};
use super::{DeviceSettings, DeviceState, PeerChange, WgError, WireGuardBackend};
use crate::netlink::{Msg, NLM_F_DUMP, Netlink, NetlinkError, attrs};

pub const NETLINK_GENERIC: i32 = 16;
const GENL_ID_CTRL: u16 = 0x10;
const CTRL_CMD_GETFAMILY: u8 = 3;
const CTRL_ATTR_FAMILY_ID: u16 = 1;
const CTRL_ATTR_FAMILY_NAME: u16 = 2;

/// Resolves a generic netlink family's id (`CTRL_CMD_GETFAMILY`). `Ok(None)`: the kernel
/// has no such family (ENOENT), e.g. `wireguard` without the module.
pub fn resolve_family(nl: &Netlink, name: &str) -> Result<Option<u16>, NetlinkError> {
    let mut body = vec![CTRL_CMD_GETFAMILY, 1, 0, 0];
    let mut n = name.as_bytes().to_vec();
    n.push(0);
    genl::nla(&mut body, CTRL_ATTR_FAMILY_NAME, &n);
    let mut msg = Msg::new(GENL_ID_CTRL, 0);
    msg.push(&body);
    let replies = match nl.request(&msg) {
        Ok(r) => r,
        Err(e) if e.errno() == Some(libc::ENOENT) => return Ok(None),
        Err(e) => return Err(e),
    };
    for r in replies {
        let Some(a) = r.payload.get(4..) else {
            continue;
        };
        for (kind, v) in attrs(a) {
            if kind == CTRL_ATTR_FAMILY_ID && v.len() == 2 {
                return Ok(Some(u16::from_ne_bytes([v[0], v[1]])));
            }
        }
    }
    Err(NetlinkError::Malformed(
        "CTRL_CMD_GETFAMILY reply without a family id",
    ))
}

/// A kernel WireGuard device in the calling thread's network namespace. One netlink socket
/// per call, so the backend can be shared across threads.
#[derive(Debug, Clone)]
pub struct KernelBackend {
    ifname: String,
    family: u16,
}

impl KernelBackend {
    /// Checks the kernel speaks WireGuard; the device itself is looked up on each call.
    pub fn open(ifname: &str) -> Result<Self, WgError> {
        let err = |source| WgError::Kernel {
            device: ifname.into(),
            op: "resolve the wireguard genetlink family",
            source,
        };
        let nl = Netlink::open(NETLINK_GENERIC).map_err(err)?;
        match resolve_family(&nl, FAMILY_NAME).map_err(err)? {
            Some(family) => Ok(Self {
                ifname: ifname.into(),
                family,
            }),
            None => Err(WgError::NoKernelWireGuard {
                device: ifname.into(),
            }),
        }
    }

    fn kernel(&self, op: &'static str) -> impl FnOnce(NetlinkError) -> WgError + '_ {
        move |source| WgError::Kernel {
            device: self.ifname.clone(),
            op,
            source,
        }
    }

    fn request(&self, op: &'static str, body: &[u8]) -> Result<(), WgError> {
        let nl = Netlink::open(NETLINK_GENERIC).map_err(self.kernel(op))?;
        let mut msg = Msg::new(self.family, 0);
        msg.push(body);
        nl.request(&msg).map(|_| ()).map_err(self.kernel(op))
    }
}

impl WireGuardBackend for KernelBackend {
    fn device_name(&self) -> &str {
        &self.ifname
    }

    fn kind(&self) -> &'static str {
        "kernel-genetlink"
    }

    fn device(&self) -> Result<DeviceState, WgError> {
        let op = "get device";
        let nl = Netlink::open(NETLINK_GENERIC).map_err(self.kernel(op))?;
        let mut msg = Msg::new(self.family, NLM_F_DUMP);
        msg.push(&genl::get_device(&self.ifname));
        let replies = nl.dump(&msg).map_err(self.kernel(op))?;
        let bodies: Vec<Vec<u8>> = replies.into_iter().map(|r| r.payload).collect();
        genl::parse_device(&bodies).map_err(|source| WgError::KernelReply {
            device: self.ifname.clone(),
            source,
        })
    }

    fn configure(&self, settings: &DeviceSettings<'_>) -> Result<(), WgError> {
        let body = genl::set_device(&self.ifname, settings);
        self.request("set device", &body)
    }

    fn apply(&self, changes: &[PeerChange]) -> Result<(), WgError> {
        for body in genl::set_peers(&self.ifname, changes) {
            self.request("set peers", &body)?;
        }
        Ok(())
    }
}
