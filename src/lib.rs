//! meshgate: an admission webhook that keeps an Istio mesh zero-trust.
pub mod admission {
    pub mod resources;
}
pub mod posture {
    pub mod watched;
}
