use serde::Deserialize;
use serde_json::json;

use super::*;
use crate::istio::{DestinationRule, PeerAuthentication};

fn dr(spec: serde_json::Value) -> serde_json::Value {
    json!({"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
        "metadata": {"name": "r", "namespace": "shop"}, "spec": spec})
}

#[test]
fn derive_alone_reads_a_sequence_as_a_struct() {
    // What this module is for: plain serde_json takes the array.
    let plain: DestinationRule = serde_json::from_value(dr(
        json!({"host": "x", "trafficPolicy": [{"mode": "DISABLE"}]}),
    ))
    .unwrap();
    assert!(plain.spec.traffic_policy.is_some());
}

#[test]
fn sequences_for_structs_are_refused_at_every_depth() {
    for spec in [
        json!({"host": "x", "trafficPolicy": [{"tls": {"mode": "DISABLE"}}]}),
        json!({"host": "x", "trafficPolicy": {"tls": ["DISABLE"]}}),
        json!({"host": "x", "subsets": [{"name": "v1", "trafficPolicy": [{"tls": {"mode": "DISABLE"}}]}]}),
        json!({"host": "x", "trafficPolicy": {"portLevelSettings": [[{"number": 80}, {"mode": "DISABLE"}]]}}),
        json!({"host": "x", "trafficPolicy": {"portLevelSettings": [{"port": [80], "tls": {"mode": "DISABLE"}}]}}),
        json!(["x", {"tls": {"mode": "DISABLE"}}]),
    ] {
        let e = from_value::<DestinationRule>(dr(spec.clone())).unwrap_err();
        assert!(e.to_string().contains("expected an object"), "{spec}: {e}");
        let text = dr(spec.clone()).to_string();
        assert!(from_str::<DestinationRule>(&text).is_err(), "{spec}");
    }
    let pa = json!({"metadata": {"name": "default"}, "spec": {"mtls": [null]}});
    assert!(from_value::<PeerAuthentication>(pa.clone()).is_err());
    assert!(serde_json::from_value::<PeerAuthentication>(pa).is_ok());
    let yaml = "metadata: {name: default}\nspec:\n  portLevelMtls:\n    '8080': [PERMISSIVE]\n";
    assert!(from_yaml::<PeerAuthentication>(yaml).is_err());
}

#[test]
fn everything_else_decodes_as_before() {
    let spec = json!({"host": "x", "trafficPolicy": {"tls": {"mode": "ISTIO_MUTUAL"},
        "portLevelSettings": [{"port": {"number": 80}, "tls": {"mode": "ISTIO_MUTUAL"}}]},
        "subsets": [{"name": "v1", "labels": {"v": "1"}}]});
    let strict: DestinationRule = from_value(dr(spec.clone())).unwrap();
    let plain: DestinationRule = serde_json::from_value(dr(spec)).unwrap();
    assert_eq!(format!("{strict:?}"), format!("{plain:?}"));
    // Sequences of structs, tuples, raw values and enums are untouched.
    #[derive(Deserialize, Debug)]
    struct Holder<'a> {
        list: Vec<Inner>,
        pair: (u8, String),
        #[serde(borrow)]
        raw: &'a serde_json::value::RawValue,
        either: Either,
    }
    #[derive(Deserialize, PartialEq, Debug)]
    struct Inner {
        a: u8,
    }
    #[derive(Deserialize, PartialEq, Debug)]
    enum Either {
        Left { a: u8 },
    }
    let text = r#"{"list": [{"a": 1}], "pair": [2, "b"], "raw": [1, {"x": 2}], "either": {"Left": {"a": 3}}}"#;
    let h: Holder = from_str(text).unwrap();
    assert_eq!(h.list, [Inner { a: 1 }]);
    assert_eq!(h.pair, (2, "b".to_owned()));
    assert_eq!(h.raw.get(), r#"[1, {"x": 2}]"#);
    assert_eq!(h.either, Either::Left { a: 3 });
    let variant_as_seq = r#"{"list": [], "pair": [2, "b"], "raw": 1, "either": {"Left": [3]}}"#;
    assert!(from_str::<Holder>(variant_as_seq).is_err());
    // Trailing input is still an error.
    assert!(from_str::<Inner>(r#"{"a": 1} x"#).is_err());
}
