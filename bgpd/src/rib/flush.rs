//! Flush: the decision process over the dirty prefixes (RFC 4271 §9.1.2), Loc-RIB changes for
//! the FIB, and each peer's Adj-RIB-Out difference encoded as UPDATEs (§9.2).

use super::*;

impl Rib {
    /// Runs the decision process on everything changed since the last flush and returns the
    /// FIB changes and the UPDATEs for each peer.
    pub fn flush(&mut self) -> RibOutput {
        let mut out = RibOutput::default();
        let Rib {
            local_asn,
            peers,
            v4,
            v6,
            interner,
            track_fib,
            ..
        } = self;
        let fib = track_fib.then_some(&mut out.fib);
        flush_family(*local_asn, v4, peers, interner, fib);
        let fib = track_fib.then_some(&mut out.fib);
        flush_family(*local_asn, v6, peers, interner, fib);
        for (&id, peer) in peers.iter_mut() {
            let Some(session) = &peer.session else {
                continue;
            };
            let builder = UpdateBuilder::new(session.ctx);
            let ctx = session.ctx;
            let families = session.families.clone();
            let mut buf = BytesMut::new();
            encode_family::<Ipv4Net>(id, peer, &builder, &mut buf, &mut out.errors);
            encode_family::<Ipv6Net>(id, peer, &builder, &mut buf, &mut out.errors);
            if std::mem::take(&mut peer.send_eor) {
                for (afi, safi) in families {
                    let eor = Message::Update(Box::new(UpdateMsg::end_of_rib_marker(afi, safi)));
                    match eor.encode(&mut buf, &ctx) {
                        Ok(()) => out.end_of_rib.push((id, afi, safi)),
                        Err(e) => out.errors.push((id, e)),
                    }
                }
            }
            peer.counters.advertised = (peer.out4.len() + peer.out6.len()) as u64;
            if !buf.is_empty() {
                out.updates.push((id, buf.freeze()));
            }
        }
        interner.maybe_sweep();
        out
    }
}

/// The best route of a prefix after the decision process.
struct Best<'a> {
    attrs: &'a Arc<RouteAttrs>,
    source: Source,
}

impl<'a> Best<'a> {
    fn learned(path: &'a Path) -> Self {
        Best {
            attrs: &path.attrs,
            source: Source::Peer {
                id: path.peer,
                ibgp: path.has(flags::IBGP),
            },
        }
    }
}

/// Runs the decision process for one prefix and stores the result in the path flags.
fn decide(
    local_asn: u32,
    peers: &BTreeMap<PeerId, Peer>,
    paths: &mut Paths,
    originated: bool,
    scratch: &mut Vec<usize>,
) {
    let slice = paths.as_mut_slice();
    for p in slice.iter_mut() {
        p.flags &= !(flags::BEST | flags::MULTIPATH);
    }
    if originated {
        return;
    }
    if let [only] = slice {
        if only.has(flags::ELIGIBLE) {
            only.flags |= flags::BEST | flags::MULTIPATH;
        }
        return;
    }
    let eligible: Vec<usize> = (0..slice.len())
        .filter(|&i| slice[i].has(flags::ELIGIBLE))
        .collect();
    let cands: Vec<Candidate<'_>> = eligible
        .iter()
        .map(|&i| {
            let path = &slice[i];
            let info = peers.get(&path.peer).map(|p| &p.info);
            Candidate {
                attrs: &path.attrs.attrs,
                ibgp: path.has(flags::IBGP),
                peer_router_id: info.map_or(Ipv4Addr::UNSPECIFIED, |i| i.router_id),
                peer_address: info.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |i| i.address),
            }
        })
        .collect();
    let best = select(&cands, local_asn, scratch);
    drop(cands);
    for &m in scratch.iter() {
        slice[eligible[m]].flags |= flags::MULTIPATH;
    }
    if let Some(b) = best {
        slice[eligible[b]].flags |= flags::BEST;
    }
}

fn flush_family<P: RibPrefix>(
    local_asn: u32,
    table: &mut Table<P>,
    peers: &mut BTreeMap<PeerId, Peer>,
    interner: &mut Interner,
    mut fib: Option<&mut Vec<FibChange>>,
) {
    let mut dirty = std::mem::take(&mut table.dirty);
    dirty.sort_unstable();
    dirty.dedup();
    let mut scratch = Vec::new();
    for &p in &dirty {
        // One lookup per map and prefix: the decision, the FIB and the export share them.
        let orig = table.originated.get(&p);
        let before = if table.fib_before.is_empty() {
            Vec::new()
        } else {
            table.fib_before.remove(&p).unwrap_or_default()
        };
        let mut paths = table.dests.get_mut(&p);
        if let Some(paths) = paths.as_deref_mut() {
            decide(local_asn, peers, paths, orig.is_some(), &mut scratch);
        }
        if let Some(fib) = fib.as_deref_mut() {
            let after = paths.as_deref().map(Paths::installed).unwrap_or_default();
            if before != after {
                fib.push(FibChange {
                    prefix: p.into(),
                    next_hops: after,
                });
            }
        }
        let best = match orig {
            Some(attrs) => Some(Best {
                attrs,
                source: Source::Originated,
            }),
            None => paths.as_deref().and_then(Paths::best).map(Best::learned),
        };
        for (&id, peer) in peers.iter_mut() {
            let resend = peer.sync[P::IDX].resend;
            update_out(local_asn, id, peer, interner, p, best.as_ref(), resend);
        }
    }
    table.fib_before = Default::default();
    // Full walks for peers that came up or asked for a refresh; dirty prefixes are done.
    for (&id, peer) in peers.iter_mut() {
        let sync = std::mem::take(&mut peer.sync[P::IDX]);
        if !sync.full {
            continue;
        }
        // In table order (cheapest); encode_family sorts each UPDATE's prefixes.
        let originated = table.originated.iter().map(|(p, attrs)| {
            let best = Best {
                attrs,
                source: Source::Originated,
            };
            (*p, Some(best))
        });
        let learned = table
            .dests
            .iter()
            .filter(|(p, _)| !table.originated.contains_key(p))
            .map(|(p, paths)| (*p, paths.best().map(Best::learned)));
        for (p, best) in originated.chain(learned) {
            if dirty.binary_search(&p).is_ok() {
                continue;
            }
            update_out(local_asn, id, peer, interner, p, best.as_ref(), sync.resend);
        }
    }
    // Keep a small buffer for the next round; give back the one a full table needed.
    dirty.clear();
    if dirty.capacity() <= 4096 {
        table.dirty = dirty;
    }
}

/// Brings one peer's Adj-RIB-Out entry for `p` to what it should be, recording the change.
fn update_out<P: RibPrefix>(
    local_asn: u32,
    id: PeerId,
    peer: &mut Peer,
    interner: &mut Interner,
    p: P,
    best: Option<&Best<'_>>,
    resend: bool,
) {
    if !peer.session.as_ref().is_some_and(|s| s.has(P::AFI)) {
        return;
    }
    let desired = best.and_then(|b| desired(local_asn, id, peer, interner, p, b));
    match desired {
        Some(d) => {
            let prev = P::out_mut(peer).insert(p, d.clone());
            if resend || !prev.is_some_and(|c| Arc::ptr_eq(&d, &c)) {
                P::delta(peer).announce(p, &d);
            }
        }
        None => {
            if P::out_mut(peer).remove(&p).is_some() {
                P::delta(peer).withdrawn.push(p);
            }
        }
    }
}

/// What `peer` should have for `p` (memoized per source attribute set when the export policy
/// ignores prefixes).
fn desired<P: RibPrefix>(
    local_asn: u32,
    id: PeerId,
    peer: &mut Peer,
    interner: &mut Interner,
    p: P,
    b: &Best<'_>,
) -> Option<Arc<RouteAttrs>> {
    if matches!(b.source, Source::Peer { id: from, .. } if from == id) {
        return None;
    }
    let memo_ok = !peer.info.export.depends_on_prefix();
    let key = (Arc::as_ptr(b.attrs) as usize, b.source.kind());
    if memo_ok && let Some(m) = P::delta(peer).memo.get(&key) {
        return m.clone();
    }
    let session = peer.session.as_ref()?;
    let r = export::export(local_asn, &peer.info, session, p.into(), b.attrs, b.source)
        .map(|a| interner.intern(a));
    if memo_ok {
        P::delta(peer).memo.insert(key, r.clone());
    }
    r
}

/// Encodes one family's gathered changes for a peer: withdrawals, then announcements.
fn encode_family<P: RibPrefix>(
    id: PeerId,
    peer: &mut Peer,
    builder: &UpdateBuilder,
    buf: &mut BytesMut,
    errors: &mut Vec<(PeerId, EncodeError)>,
) {
    let mut delta = std::mem::take(P::delta(peer));
    // Prefix order within each UPDATE: the same table gives the same messages.
    delta.withdrawn.sort_unstable();
    for (_, prefixes) in &mut delta.groups {
        prefixes.sort_unstable();
    }
    delta
        .groups
        .sort_unstable_by(|a, b| a.1.first().cmp(&b.1.first()));
    if !delta.withdrawn.is_empty()
        && let Err(e) = P::withdraw(builder, &delta.withdrawn, buf)
    {
        errors.push((id, e));
    }
    for (attrs, prefixes) in &delta.groups {
        let Some(nh) = attrs.next_hop else {
            continue;
        };
        let start = buf.len();
        if let Err(e) = P::announce(builder, &attrs.attrs, nh, prefixes, buf) {
            // Keep whole messages only, and forget what was not sent.
            buf.truncate(start);
            let out = P::out_mut(peer);
            for p in prefixes {
                out.remove(p);
            }
            errors.push((id, e));
        }
    }
    // Dropped rather than cleared: after a full table these buffers are large.
    drop(delta);
}

/// Splits concatenated BGP messages (each with its header) into one `Bytes` each.
pub(super) fn split_messages(mut all: Bytes) -> Vec<Bytes> {
    let mut out = Vec::new();
    while all.len() >= crate::wire::HEADER_LEN {
        let len = usize::from(u16::from_be_bytes([all[16], all[17]])).max(crate::wire::HEADER_LEN);
        out.push(all.split_to(len.min(all.len())));
    }
    out
}

/// Packed UPDATEs for `withdrawn` and for `announced` grouped by attribute set; returns the
/// number of announced routes encoded.
pub(super) fn encode_routes(
    ctx: Context,
    announced: &[(IpNet, &RouteAttrs)],
    withdrawn: &[IpNet],
    buf: &mut BytesMut,
) -> u64 {
    let b = UpdateBuilder::new(ctx);
    let (w4, w6) = split_families(withdrawn.iter().copied());
    if !w4.is_empty() {
        let _ = b.withdraw_ipv4(&w4, buf);
    }
    if !w6.is_empty() {
        let _ = b.withdraw_ipv6(&w6, buf);
    }
    let mut groups: Vec<(&RouteAttrs, Vec<IpNet>)> = Vec::new();
    let mut index: HashMap<*const RouteAttrs, usize> = HashMap::new();
    for &(prefix, attrs) in announced {
        let at = *index.entry(attrs as *const RouteAttrs).or_insert_with(|| {
            groups.push((attrs, Vec::new()));
            groups.len() - 1
        });
        groups[at].1.push(prefix);
    }
    let mut n = 0u64;
    for (attrs, prefixes) in &groups {
        let Some(nh) = attrs.next_hop else { continue };
        let (v4, v6) = split_families(prefixes.iter().copied());
        if !v4.is_empty() && b.announce_ipv4(&attrs.attrs, nh, &v4, buf).is_ok() {
            n += v4.len() as u64;
        }
        if !v6.is_empty() && b.announce_ipv6(&attrs.attrs, nh, &v6, buf).is_ok() {
            n += v6.len() as u64;
        }
    }
    n
}

pub(super) fn split_families(
    prefixes: impl Iterator<Item = IpNet>,
) -> (Vec<Ipv4Net>, Vec<Ipv6Net>) {
    let (mut v4, mut v6) = (Vec::new(), Vec::new());
    for p in prefixes {
        match p {
            IpNet::V4(p) => v4.push(p),
            IpNet::V6(p) => v6.push(p),
        }
    }
    (v4, v6)
}
