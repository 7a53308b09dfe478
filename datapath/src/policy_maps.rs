//! The endpoint, policy and config maps on [`Datapath`]: endpoints by
//! address, each endpoint's policy swapped in as a whole (a new inner map
//! built completely, then one update of the outer map), node settings.

use std::collections::BTreeMap;

use aya::maps::{HashMap, MapData};

use crate::loader::{Datapath, DatapathError, found, map_err, removed};
use crate::policy::{
    Config, DpConfig, Endpoint, EndpointInfo, EndpointKey, EndpointPolicy, POLICY_RULES_FLAGS,
    POLICY_RULES_MAX, PolicyError, PolicyKey, PolicyValue,
};

impl Datapath {
    /// Node-wide settings (policy mode, routing, tracing).
    pub fn set_config(&mut self, config: &Config) -> Result<(), DatapathError> {
        self.config
            .set(0, config.raw(), 0)
            .map_err(map_err("config"))
    }

    pub fn config(&self) -> Result<DpConfig, DatapathError> {
        self.config.get(&0, 0).map_err(map_err("config"))
    }

    /// Registers a local endpoint under each of its addresses.
    pub fn upsert_endpoint(&mut self, ep: &Endpoint) -> Result<(), DatapathError> {
        if ep.id == 0 {
            return Err(PolicyError::EndpointZero.into());
        }
        if ep.addresses.is_empty() {
            return Err(DatapathError::InvalidEndpoint(
                ep.id,
                "no addresses; an endpoint is found by its addresses",
            ));
        }
        let info = EndpointInfo {
            id: ep.id,
            identity: ep.identity,
            ifindex: ep.ifindex,
            flags: 0,
        };
        for ip in &ep.addresses {
            self.endpoints
                .insert(EndpointKey::new(*ip), info, 0)
                .map_err(map_err("endpoints"))?;
        }
        Ok(())
    }

    /// Removes an endpoint's addresses and its policy; absent is fine.
    pub fn remove_endpoint(&mut self, ep: &Endpoint) -> Result<(), DatapathError> {
        for ip in &ep.addresses {
            removed(self.endpoints.remove(&EndpointKey::new(*ip))).map_err(map_err("endpoints"))?;
        }
        self.remove_policy(ep.id)
    }

    pub fn endpoint(&self, ip: std::net::IpAddr) -> Result<Option<EndpointInfo>, DatapathError> {
        found(self.endpoints.get(&EndpointKey::new(ip), 0)).map_err(map_err("endpoints"))
    }

    /// Replaces the whole policy of endpoint `endpoint_id`: a new inner map is
    /// created and filled, then swapped in by one update of the outer map. A
    /// packet sees the old policy or the new one, never a mix; the old inner
    /// map is freed by the kernel once no program uses it. On error nothing
    /// changed.
    pub fn set_policy(
        &mut self,
        endpoint_id: u32,
        policy: &EndpointPolicy,
    ) -> Result<(), DatapathError> {
        if endpoint_id == 0 {
            return Err(PolicyError::EndpointZero.into());
        }
        let entries = policy.entries()?;
        let mut inner: HashMap<MapData, PolicyKey, PolicyValue> =
            HashMap::create(POLICY_RULES_MAX, POLICY_RULES_FLAGS)
                .map_err(map_err("policy (inner)"))?;
        for (k, v) in &entries {
            inner.insert(k, v, 0).map_err(map_err("policy (inner)"))?;
        }
        self.policy
            .insert(endpoint_id, &inner, 0)
            .map_err(map_err("policy"))
    }

    /// Removes an endpoint's policy (it is then selected by none); absent is fine.
    pub fn remove_policy(&mut self, endpoint_id: u32) -> Result<(), DatapathError> {
        removed(self.policy.remove(&endpoint_id)).map_err(map_err("policy"))
    }

    /// The policy entries in force for an endpoint, read from its inner map.
    pub fn policy_entries(
        &self,
        endpoint_id: u32,
    ) -> Result<Option<BTreeMap<PolicyKey, PolicyValue>>, DatapathError> {
        let Some(inner) = self.policy_map(endpoint_id)? else {
            return Ok(None);
        };
        let mut out = BTreeMap::new();
        for kv in inner.iter() {
            let (k, v) = kv.map_err(map_err("policy (inner)"))?;
            out.insert(k, v);
        }
        Ok(Some(out))
    }

    /// A handle on the inner map in force for an endpoint (for inspection:
    /// it stays valid after a swap, showing the old version).
    pub fn policy_map(
        &self,
        endpoint_id: u32,
    ) -> Result<Option<HashMap<MapData, PolicyKey, PolicyValue>>, DatapathError> {
        found(self.policy.get(&endpoint_id, 0)).map_err(map_err("policy"))
    }
}
