//! meshgate: an admission webhook that keeps an Istio mesh zero-trust.
//!
//! One direction of flow, shared by the webhook and the offline audit:
//!
//! ```text
//! AdmissionReview ─▶ admission::review ─▶ subject (typed object)
//!                                             │
//!   posture index ◀─ watch / files            ▼
//!   (namespaces, ...)        ─────────▶ rules (pure) ─▶ findings
//!                                             │
//!                    policy (modes, exemptions) ─▶ decision ─▶ response
//! ```
//!
//! `kinds` is the one table of the kinds meshgate knows (API facts, what
//! is watched and judged); `rules::RULES` the one table of the rules, each
//! row with the kinds it judges; `vocab` the shared words (rule ids, modes,
//! severities), a leaf every module may import; `istio::names` Istio's own
//! names. What adding a kind or a rule touches is listed in the book
//! (reference/development.md, "Tables and vocabulary").
//! `watch` opens one watch per kind and feeds its events, trimmed on
//! arrival, to the posture index and then the background audit (`feeds`
//! wires them in `serve`).
//! [`admission::Reviewer`] owns the whole decision, confirming a denial on
//! cached posture against the API server; `server` is thin plumbing around
//! it (read the body, call, answer, log, count), and `serve` wires the
//! process (metric registry, posture feeders, listeners, logging) above it. `audit` runs the
//! same [`policy::judge`] over manifest files; `background` runs it in `serve`
//! over every object already in the cluster, and exports the posture metrics;
//! `report` turns verdicts into bounded PolicyReports, written by the replica
//! `leader` elects; `events` tells findings to the cluster as Kubernetes
//! Events. `exemption` holds the exemption objects as types and index only:
//! `posture` watches them, `policy` applies them, `admission` bounds them,
//! `background` re-judges at their expiry and `report` writes their status.
//! No circle between these modules (`tests/house.rs`). `allocator` is the global allocator the binary installs;
//! `parallel` spreads the audit's parsing and judging over the cores.

// Library and binary code returns errors rather than panicking; tests may
// unwrap (clippy.toml). Set here, not in Cargo.toml's [lints], which would
// also cover every test, bench and example crate.
#![warn(clippy::unwrap_used, clippy::expect_used)]

pub mod admission;
pub mod allocator;
pub mod audit;
pub mod background;
pub mod catalogue;
pub mod certmanager;
pub mod cli;
pub mod config;
pub mod duration;
pub mod events;
pub mod exemption;
pub mod feeds;
pub mod injection;
pub mod istio;
pub mod kinds;
pub mod leader;
pub mod manifest;
pub mod metrics;
pub mod native;
pub mod parallel;
pub mod policy;
pub mod posture;
pub mod reminder;
pub mod report;
pub mod rules;
pub mod serve;
pub mod server;
pub mod strict;
pub mod subject;
pub mod uninstall;
pub mod vocab;
pub mod watch;
