//! RFC 7606 UPDATE error handling, one test per rule.

use super::*;
use crate::wire::*;

const ORIGIN: &str = "40 01 01 00 ";
const AS_PATH: &str = "40 02 06 02 01 0000fde9 ";
const NEXT_HOP: &str = "40 03 04 0a000001 ";
const NLRI: &str = "18 c0a801";

/// An UPDATE body from attribute hex strings and NLRI hex.
fn body(attrs: &[&str], nlri: &str) -> String {
    let a = attrs.concat();
    format!("0000 {:04x} {a} {nlri}", hex(&a).len())
}

fn decode(attrs: &[&str]) -> UpdateMsg {
    update(&body(attrs, NLRI), &CTX4).expect("no session reset")
}

fn decode_err(attrs: &[&str]) -> DecodeError {
    update(&body(attrs, NLRI), &CTX4).expect_err("session reset")
}

/// Exactly one error, for `code`, with `action` and `reason`.
fn assert_one(u: &UpdateMsg, code: u8, action: ErrorAction, reason: AttrErrorReason) {
    assert_eq!(u.errors.len(), 1, "{:?}", u.errors);
    let e = &u.errors[0];
    assert_eq!((e.type_code, e.action, e.reason), (code, action, reason));
    assert_eq!(u.error_action(), Some(action));
    assert_eq!(u.nlri, vec![net4("192.168.1.0/24")], "NLRI still located");
}

#[test]
fn valid_update_has_no_errors() {
    let u = decode(&[ORIGIN, AS_PATH, NEXT_HOP]);
    assert!(u.errors.is_empty());
    assert_eq!(u.error_action(), None);
    assert!(!u.treat_as_withdraw());
}

#[test]
fn sec7_1_origin_bad_length_treat_as_withdraw() {
    let u = decode(&["40 01 02 0000 ", AS_PATH, NEXT_HOP]);
    assert_one(
        &u,
        attr_type::ORIGIN,
        ErrorAction::TreatAsWithdraw,
        AttrErrorReason::Length,
    );
    assert!(u.treat_as_withdraw());
    assert_eq!(u.attrs.origin, None);
    // Offending bytes kept for logging.
    assert_eq!(u.errors[0].data, hex("40 01 02 0000"));
}

#[test]
fn sec7_1_origin_undefined_value_treat_as_withdraw() {
    let u = decode(&["40 01 01 03 ", AS_PATH, NEXT_HOP]);
    assert_one(
        &u,
        attr_type::ORIGIN,
        ErrorAction::TreatAsWithdraw,
        AttrErrorReason::Value,
    );
}

#[test]
fn sec7_2_as_path_zero_length_segment_treat_as_withdraw() {
    let u = decode(&[ORIGIN, "40 02 02 02 00 ", NEXT_HOP]);
    assert_one(
        &u,
        attr_type::AS_PATH,
        ErrorAction::TreatAsWithdraw,
        AttrErrorReason::Value,
    );
}

#[test]
fn sec7_2_as_path_bad_segment_type_treat_as_withdraw() {
    let u = decode(&[ORIGIN, "40 02 06 05 01 0000fde9 ", NEXT_HOP]);
    assert_one(
        &u,
        attr_type::AS_PATH,
        ErrorAction::TreatAsWithdraw,
        AttrErrorReason::Value,
    );
}

#[test]
fn sec7_2_as_path_segment_overrun_treat_as_withdraw() {
    let u = decode(&[ORIGIN, "40 02 06 02 02 0000fde9 ", NEXT_HOP]);
    assert_one(
        &u,
        attr_type::AS_PATH,
        ErrorAction::TreatAsWithdraw,
        AttrErrorReason::Value,
    );
}

#[test]
fn sec7_2_as_path_two_octet_read_in_four_octet_session() {
    // A 2-octet path on a 4-octet session does not parse.
    let u = decode(&[ORIGIN, "40 02 04 02 01 fde9 ", NEXT_HOP]);
    assert_one(
        &u,
        attr_type::AS_PATH,
        ErrorAction::TreatAsWithdraw,
        AttrErrorReason::Value,
    );
    let ok = update(
        &body(&[ORIGIN, "40 02 04 02 01 fde9 ", NEXT_HOP], NLRI),
        &CTX2,
    )
    .unwrap();
    assert!(ok.errors.is_empty());
}

#[test]
fn sec7_3_next_hop_bad_length_treat_as_withdraw() {
    let u = decode(&[ORIGIN, AS_PATH, "40 03 05 0a00000100 "]);
    assert_one(
        &u,
        attr_type::NEXT_HOP,
        ErrorAction::TreatAsWithdraw,
        AttrErrorReason::Length,
    );
}

#[test]
fn sec7_4_med_bad_length_treat_as_withdraw() {
    let u = decode(&[ORIGIN, AS_PATH, NEXT_HOP, "80 04 03 000064 "]);
    assert_one(
        &u,
        attr_type::MULTI_EXIT_DISC,
        ErrorAction::TreatAsWithdraw,
        AttrErrorReason::Length,
    );
}

#[test]
fn sec7_5_local_pref_bad_length_treat_as_withdraw() {
    let u = decode(&[ORIGIN, AS_PATH, NEXT_HOP, "40 05 02 0064 "]);
    assert_one(
        &u,
        attr_type::LOCAL_PREF,
        ErrorAction::TreatAsWithdraw,
        AttrErrorReason::Length,
    );
}

#[test]
fn sec7_6_atomic_aggregate_bad_length_attribute_discard() {
    let u = decode(&[ORIGIN, AS_PATH, NEXT_HOP, "40 06 01 00 "]);
    assert_one(
        &u,
        attr_type::ATOMIC_AGGREGATE,
        ErrorAction::AttributeDiscard,
        AttrErrorReason::Length,
    );
    assert!(!u.attrs.atomic_aggregate);
    assert!(!u.treat_as_withdraw());
}

#[test]
fn sec7_7_aggregator_bad_length_attribute_discard() {
    // 6 octets on a 4-octet session.
    let u = decode(&[ORIGIN, AS_PATH, NEXT_HOP, "c0 07 06 fde9 0a000001 "]);
    assert_one(
        &u,
        attr_type::AGGREGATOR,
        ErrorAction::AttributeDiscard,
        AttrErrorReason::Length,
    );
    assert_eq!(u.attrs.aggregator, None);
    assert_eq!(u.attrs.origin, Some(Origin::Igp));
}

#[test]
fn sec7_8_communities_not_multiple_of_4_treat_as_withdraw() {
    let u = decode(&[ORIGIN, AS_PATH, NEXT_HOP, "c0 08 05 fde9006400 "]);
    assert_one(
        &u,
        attr_type::COMMUNITIES,
        ErrorAction::TreatAsWithdraw,
        AttrErrorReason::Length,
    );
}

#[test]
fn sec7_8_communities_zero_length_treat_as_withdraw() {
    let u = decode(&[ORIGIN, AS_PATH, NEXT_HOP, "c0 08 00 "]);
    assert_one(
        &u,
        attr_type::COMMUNITIES,
        ErrorAction::TreatAsWithdraw,
        AttrErrorReason::Length,
    );
}

#[test]
fn sec7_9_originator_id_bad_length_treat_as_withdraw() {
    let u = decode(&[ORIGIN, AS_PATH, NEXT_HOP, "80 09 03 0a0000 "]);
    assert_one(
        &u,
        attr_type::ORIGINATOR_ID,
        ErrorAction::TreatAsWithdraw,
        AttrErrorReason::Length,
    );
}

#[test]
fn sec7_10_cluster_list_bad_length_treat_as_withdraw() {
    let u = decode(&[ORIGIN, AS_PATH, NEXT_HOP, "80 0a 06 0a000001 0a00 "]);
    assert_one(
        &u,
        attr_type::CLUSTER_LIST,
        ErrorAction::TreatAsWithdraw,
        AttrErrorReason::Length,
    );
}

#[test]
fn sec7_11_mp_reach_bad_next_hop_length_session_reset() {
    let e = decode_err(&["80 0e 0a 0002 01 05 0000000000 00 ", ORIGIN, AS_PATH]);
    assert!(matches!(e, DecodeError::OptionalAttribute { .. }), "{e:?}");
    assert_eq!(
        (e.code(), e.subcode()),
        (3, update_subcode::OPTIONAL_ATTRIBUTE_ERROR)
    );
    assert_eq!(e.data(), hex("80 0e 0a 0002 01 05 0000000000 00"));
}

#[test]
fn sec7_11_mp_reach_ipv6_with_ipv4_next_hop_session_reset() {
    let e = decode_err(&["80 0e 0a 0002 01 04 0a000001 00 00 ", ORIGIN, AS_PATH]);
    assert_eq!((e.code(), e.subcode()), (3, 9));
}

#[test]
fn sec7_11_mp_reach_unparseable_nlri_session_reset() {
    // Prefix length 129.
    let e = decode_err(&[
        "80 0e 16 0002 01 10 20010db8000000000000000000000001 00 81 ",
        ORIGIN,
        AS_PATH,
    ]);
    assert_eq!((e.code(), e.subcode()), (3, 9));
}

#[test]
fn sec7_12_mp_unreach_unparseable_nlri_session_reset() {
    let e = decode_err(&["80 0f 05 0002 01 40 20 "]);
    assert_eq!((e.code(), e.subcode()), (3, 9));
}

#[test]
fn sec7_14_ext_communities_bad_length_treat_as_withdraw() {
    let u = decode(&[ORIGIN, AS_PATH, NEXT_HOP, "c0 10 07 0002fde9000000 "]);
    assert_one(
        &u,
        attr_type::EXTENDED_COMMUNITIES,
        ErrorAction::TreatAsWithdraw,
        AttrErrorReason::Length,
    );
}

#[test]
fn rfc8092_sec6_large_communities_bad_length_treat_as_withdraw() {
    let u = decode(&[ORIGIN, AS_PATH, NEXT_HOP, "c0 20 08 0000fde9 00000001 "]);
    assert_one(
        &u,
        attr_type::LARGE_COMMUNITY,
        ErrorAction::TreatAsWithdraw,
        AttrErrorReason::Length,
    );
}

#[test]
fn rfc6793_sec6_malformed_as4_path_attribute_discard() {
    let attrs = [ORIGIN, "40 02 04 02 01 fde9 ", NEXT_HOP, "c0 11 02 02 00 "];
    let u = update(&body(&attrs, NLRI), &CTX2).unwrap();
    assert_one(
        &u,
        attr_type::AS4_PATH,
        ErrorAction::AttributeDiscard,
        AttrErrorReason::Value,
    );
    assert_eq!(u.attrs.as4_path, None);
}

#[test]
fn rfc6793_sec6_malformed_as4_aggregator_attribute_discard() {
    let attrs = [
        ORIGIN,
        "40 02 04 02 01 fde9 ",
        NEXT_HOP,
        "c0 12 06 fde9 0a000001 ",
    ];
    let u = update(&body(&attrs, NLRI), &CTX2).unwrap();
    assert_one(
        &u,
        attr_type::AS4_AGGREGATOR,
        ErrorAction::AttributeDiscard,
        AttrErrorReason::Length,
    );
}

// ---- RFC 7607: AS 0 ----

#[test]
fn rfc7607_as_zero_in_as_path_treat_as_withdraw() {
    let u = decode(&[ORIGIN, "40 02 0a 02 02 0000fde9 00000000 ", NEXT_HOP]);
    assert_one(
        &u,
        attr_type::AS_PATH,
        ErrorAction::TreatAsWithdraw,
        AttrErrorReason::AsZero,
    );
    assert!(u.treat_as_withdraw());
    // In an AS_SET too, and on a 2-octet session.
    let u = decode(&[ORIGIN, "40 02 06 01 01 00000000 ", NEXT_HOP]);
    assert_eq!(u.errors[0].reason, AttrErrorReason::AsZero);
    let u = update(
        &body(&[ORIGIN, "40 02 04 02 01 0000 ", NEXT_HOP], NLRI),
        &CTX2,
    )
    .unwrap();
    assert_eq!(u.errors[0].reason, AttrErrorReason::AsZero);
    assert!(u.treat_as_withdraw());
}

#[test]
fn rfc7607_as_zero_in_aggregator_attribute_discard() {
    let u = decode(&[ORIGIN, AS_PATH, NEXT_HOP, "c0 07 08 00000000 0a000001 "]);
    assert_one(
        &u,
        attr_type::AGGREGATOR,
        ErrorAction::AttributeDiscard,
        AttrErrorReason::AsZero,
    );
    assert!(!u.treat_as_withdraw());
    assert_eq!(u.attrs.aggregator, None);
}

#[test]
fn rfc7607_as_zero_in_as4_path_and_as4_aggregator_attribute_discard() {
    let attrs = [
        ORIGIN,
        "40 02 04 02 01 5ba0 ",
        NEXT_HOP,
        "c0 11 06 02 01 00000000 ",
    ];
    let u = update(&body(&attrs, NLRI), &CTX2).unwrap();
    assert_one(
        &u,
        attr_type::AS4_PATH,
        ErrorAction::AttributeDiscard,
        AttrErrorReason::AsZero,
    );
    assert_eq!(u.attrs.as4_path, None);
    let attrs = [
        ORIGIN,
        "40 02 04 02 01 fde9 ",
        NEXT_HOP,
        "c0 12 08 00000000 0a000001 ",
    ];
    let u = update(&body(&attrs, NLRI), &CTX2).unwrap();
    assert_one(
        &u,
        attr_type::AS4_AGGREGATOR,
        ErrorAction::AttributeDiscard,
        AttrErrorReason::AsZero,
    );
}

#[test]
fn rfc6793_as4_path_from_four_octet_speaker_discarded() {
    let u = decode(&[ORIGIN, AS_PATH, NEXT_HOP, "c0 11 06 02 01 0000fde9 "]);
    assert_one(
        &u,
        attr_type::AS4_PATH,
        ErrorAction::AttributeDiscard,
        AttrErrorReason::As4FromNewSpeaker,
    );
    assert_eq!(u.attrs.as4_path, None);
}

#[test]
fn sec3_c_origin_flags_error_treat_as_withdraw() {
    // ORIGIN marked optional.
    let u = decode(&["c0 01 01 00 ", AS_PATH, NEXT_HOP]);
    assert_one(
        &u,
        attr_type::ORIGIN,
        ErrorAction::TreatAsWithdraw,
        AttrErrorReason::Flags,
    );
}

#[test]
fn sec3_c_med_flags_error_treat_as_withdraw() {
    // MED marked transitive.
    let u = decode(&[ORIGIN, AS_PATH, NEXT_HOP, "c0 04 04 00000064 "]);
    assert_one(
        &u,
        attr_type::MULTI_EXIT_DISC,
        ErrorAction::TreatAsWithdraw,
        AttrErrorReason::Flags,
    );
}

#[test]
fn sec3_c_aggregator_flags_error_attribute_discard() {
    // Flags errors follow the attribute's own malformed handling.
    let u = decode(&[ORIGIN, AS_PATH, NEXT_HOP, "40 07 08 0000fde9 0a000001 "]);
    assert_one(
        &u,
        attr_type::AGGREGATOR,
        ErrorAction::AttributeDiscard,
        AttrErrorReason::Flags,
    );
}

#[test]
fn sec3_c_mp_reach_flags_error_session_reset() {
    let e = decode_err(&["40 0e 05 0002 01 00 00 ", ORIGIN, AS_PATH]);
    assert_eq!(
        e,
        DecodeError::AttributeFlags(hex("40 0e 05 0002 01 00 00"))
    );
    assert_eq!(
        (e.code(), e.subcode()),
        (3, update_subcode::ATTRIBUTE_FLAGS_ERROR)
    );
}

#[test]
fn sec3_d_missing_origin_treat_as_withdraw() {
    let u = decode(&[AS_PATH, NEXT_HOP]);
    assert_one(
        &u,
        attr_type::ORIGIN,
        ErrorAction::TreatAsWithdraw,
        AttrErrorReason::Missing,
    );
    assert_eq!(u.errors[0].data, hex("01"));
}

#[test]
fn sec3_d_missing_as_path_treat_as_withdraw() {
    let u = decode(&[ORIGIN, NEXT_HOP]);
    assert_one(
        &u,
        attr_type::AS_PATH,
        ErrorAction::TreatAsWithdraw,
        AttrErrorReason::Missing,
    );
}

#[test]
fn sec3_d_missing_next_hop_treat_as_withdraw() {
    let u = decode(&[ORIGIN, AS_PATH]);
    assert_one(
        &u,
        attr_type::NEXT_HOP,
        ErrorAction::TreatAsWithdraw,
        AttrErrorReason::Missing,
    );
}

#[test]
fn sec3_d_next_hop_not_required_with_mp_reach_only() {
    let mp = "80 0e 0d 0001 01 04 0a000001 00 18 c0a801 ";
    let u = update(&body(&[mp, ORIGIN, AS_PATH], ""), &CTX4).unwrap();
    assert!(u.errors.is_empty(), "{:?}", u.errors);
    let u = update(&body(&[mp, AS_PATH], ""), &CTX4).unwrap();
    assert_eq!(u.error_action(), Some(ErrorAction::TreatAsWithdraw));
}

#[test]
fn sec3_e_withdraw_only_needs_no_attributes() {
    let u = update("0004 18c0a801 0000", &CTX4).unwrap();
    assert!(u.errors.is_empty());
    let u = update(&body(&["80 0f 07 0001 01 18 c0a801 "], ""), &CTX4).unwrap();
    assert!(u.errors.is_empty());
}

#[test]
fn sec3_g_duplicate_attribute_first_kept() {
    let u = decode(&[ORIGIN, AS_PATH, NEXT_HOP, "40 01 01 02 "]);
    assert_one(
        &u,
        attr_type::ORIGIN,
        ErrorAction::AttributeDiscard,
        AttrErrorReason::Duplicate,
    );
    assert_eq!(u.attrs.origin, Some(Origin::Igp));
    // Unknown attributes too.
    let u = decode(&[ORIGIN, AS_PATH, NEXT_HOP, "c0 63 01 01 ", "c0 63 01 02 "]);
    assert_one(
        &u,
        0x63,
        ErrorAction::AttributeDiscard,
        AttrErrorReason::Duplicate,
    );
    assert_eq!(u.attrs.unknown.len(), 1);
}

#[test]
fn sec3_g_duplicate_mp_reach_session_reset() {
    let mp = "80 0e 0d 0001 01 04 0a000001 00 18 c0a801 ";
    let e = update(&body(&[mp, mp, ORIGIN, AS_PATH], ""), &CTX4).unwrap_err();
    assert_eq!(
        (e.code(), e.subcode()),
        (3, update_subcode::MALFORMED_ATTRIBUTE_LIST)
    );
    let un = "80 0f 03 000201 ";
    let e = update(&body(&[un, un], ""), &CTX4).unwrap_err();
    assert_eq!((e.code(), e.subcode()), (3, 1));
}

#[test]
fn sec4_attribute_overruns_list_treat_as_withdraw() {
    // Last attribute claims 9 octets, only 4 remain; NLRI located by the
    // Total Path Attribute Length.
    let u = decode(&[ORIGIN, AS_PATH, NEXT_HOP, "c0 08 09 fde90064 "]);
    assert_one(
        &u,
        attr_type::COMMUNITIES,
        ErrorAction::TreatAsWithdraw,
        AttrErrorReason::Truncated,
    );
    assert_eq!(u.errors[0].data, hex("c0 08 09 fde90064"));
}

#[test]
fn sec4_fewer_than_three_octets_remain_treat_as_withdraw() {
    let u = decode(&[ORIGIN, AS_PATH, NEXT_HOP, "c0 08 "]);
    assert_one(
        &u,
        attr_type::COMMUNITIES,
        ErrorAction::TreatAsWithdraw,
        AttrErrorReason::Truncated,
    );
    // Extended Length needs four.
    let u = decode(&[ORIGIN, AS_PATH, NEXT_HOP, "d0 08 00 "]);
    assert_one(
        &u,
        attr_type::COMMUNITIES,
        ErrorAction::TreatAsWithdraw,
        AttrErrorReason::Truncated,
    );
}

#[test]
fn sec4_mp_reach_overrun_session_reset() {
    let e = decode_err(&[ORIGIN, AS_PATH, "80 0e 20 0001 01 04 "]);
    assert_eq!((e.code(), e.subcode()), (3, 9));
}

#[test]
fn sec3_a_withdrawn_length_overrun_session_reset() {
    let e = update("0010 18c0a801 0000", &CTX4).unwrap_err();
    assert_eq!(
        e,
        DecodeError::MalformedAttributeList("length inconsistent")
    );
    assert_eq!((e.code(), e.subcode()), (3, 1));
}

#[test]
fn sec3_a_total_attribute_length_overrun_session_reset() {
    let e = update("0000 0020 40 01 01 00", &CTX4).unwrap_err();
    assert_eq!((e.code(), e.subcode()), (3, 1));
}

#[test]
fn sec5_3_nlri_prefix_too_long_session_reset() {
    let e = update(&body(&[ORIGIN, AS_PATH, NEXT_HOP], "21 0a000001 00"), &CTX4).unwrap_err();
    assert!(matches!(e, DecodeError::InvalidNetworkField(_)));
    assert_eq!(
        (e.code(), e.subcode()),
        (3, update_subcode::INVALID_NETWORK_FIELD)
    );
}

#[test]
fn sec5_3_nlri_truncated_session_reset() {
    let e = update(&body(&[ORIGIN, AS_PATH, NEXT_HOP], "18 c0a8"), &CTX4).unwrap_err();
    assert_eq!((e.code(), e.subcode()), (3, 10));
    let e = update("0002 2001 0000", &CTX4).unwrap_err();
    assert_eq!((e.code(), e.subcode()), (3, 10));
}

#[test]
fn rfc4271_sec6_3_unrecognized_well_known_session_reset() {
    let e = decode_err(&[ORIGIN, AS_PATH, NEXT_HOP, "40 63 01 00 "]);
    assert_eq!(
        e,
        DecodeError::UnrecognizedWellKnownAttribute(hex("40 63 01 00"))
    );
    assert_eq!((e.code(), e.subcode()), (3, 2));
}

#[test]
fn several_errors_strongest_action_wins() {
    let u = decode(&[ORIGIN, AS_PATH, NEXT_HOP, "40 06 01 00 ", "80 04 02 0000 "]);
    assert_eq!(u.errors.len(), 2);
    assert_eq!(u.error_action(), Some(ErrorAction::TreatAsWithdraw));
}
