//! The manifest path of `meshgate audit` and `serve --state-from` on raw
//! text: parse → posture index → judge → every report format. Never a
//! panic; bad input is an error. Each manifest's origin points into the text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshgate::audit::{self, output};
use meshgate::config::Config;
use meshgate::manifest;
use meshgate::posture::files;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(manifests) = manifest::parse_text("fuzz.yaml", text) else {
        return;
    };
    let lines = text.lines().count().max(1);
    for m in &manifests {
        assert!(m.origin.document >= 1);
        assert!(
            (1..=lines + 1).contains(&m.origin.line),
            "line {} of a {lines}-line text",
            m.origin.line
        );
    }
    // The streamed parse (`--state-from`) sees the same manifests.
    let mut streamed = 0;
    manifest::visit_text("fuzz.yaml", text, &mut |_| {
        streamed += 1;
        Ok(())
    })
    .expect("the streamed parse agrees with parse_text");
    assert_eq!(streamed, manifests.len());
    let Ok(posture) = files::index(&manifests, "default") else {
        return;
    };
    let Ok(report) = audit::judge_manifests(&manifests, &posture, &Config::default(), "default")
    else {
        return;
    };
    let _ = output::text(&report, output::TextStyle::default());
    let json: serde_json::Value =
        serde_json::from_str(&output::json(&report)).expect("the JSON report is JSON");
    let _ = json;
    let _ = serde_json::from_str::<serde_json::Value>(&output::sarif(&report))
        .expect("the SARIF report is JSON");
});
