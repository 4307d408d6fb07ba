//! The typed objects: the kinds decoded into their own serde type (Istio,
//! cert-manager) rather than the [`super::Workload`] view or a Namespace.
//! Its name in `kinds::typed_kinds!` gives the kind its
//! [`super::Object`] variant, its decoding, its [`Judged`] impl and its
//! `kube::Resource` and `kinds::TableKind` impls, all read from its row in
//! `crate::kinds::TABLE`.

use crate::kinds::KindSet;

/// What a rule's check can take: a view of an [`super::Object`], with the
/// kinds it stands for. `rules::RULES` reads the kinds a rule judges from
/// the type its check takes.
pub trait Judged {
    const KINDS: KindSet;
    fn of(object: &super::Object) -> Option<&Self>;
}

/// The `kube::Resource` of a typed object, from its row: static, at the
/// newest version, as k8s-openapi types have it. Reads of an older served
/// version go through `Kind::api_resource`.
macro_rules! table_resource {
    ($t:ident = $path:path) => {
        impl TableKind for $path {
            const KIND: Kind = Kind::$t;
        }

        impl kube::Resource for $path {
            type DynamicType = ();
            type Scope = kube::core::NamespaceResourceScope;

            fn kind(_: &()) -> std::borrow::Cow<'_, str> {
                Kind::$t.as_str().into()
            }
            fn group(_: &()) -> std::borrow::Cow<'_, str> {
                Kind::$t.row().group.into()
            }
            fn version(_: &()) -> std::borrow::Cow<'_, str> {
                Kind::$t.row().versions[0].into()
            }
            fn plural(_: &()) -> std::borrow::Cow<'_, str> {
                Kind::$t.row().plural.into()
            }
            fn meta(&self) -> &ObjectMeta {
                &self.metadata
            }
            fn meta_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

/// [`super::Object`] with a variant per typed kind (named as the kind and
/// its type), and what each variant needs.
macro_rules! typed_objects {
    ($($t:ident = $path:path,)*) => {
        /// A judged object. One is built per review and never stored, so
        /// the size difference between variants costs nothing worth a box.
        #[derive(Debug, Clone)]
        #[allow(clippy::large_enum_variant)]
        pub enum Object {
            Workload(Workload),
            Namespace(NamespaceObject),
            $($t($path),)*
        }

        impl Object {
            pub fn kind(&self) -> Kind {
                match self {
                    Object::Workload(w) => w.kind,
                    Object::Namespace(_) => Kind::Namespace,
                    $(Object::$t(_) => Kind::$t,)*
                }
            }

            fn meta(&self) -> Option<&ObjectMeta> {
                match self {
                    Object::Workload(_) | Object::Namespace(_) => None,
                    $(Object::$t(o) => Some(&o.metadata),)*
                }
            }
        }

        $(
            table_resource!($t = $path);

            impl Judged for $path {
                const KINDS: KindSet = KindSet::of(Kind::$t);
                fn of(object: &Object) -> Option<&Self> {
                    match object {
                        Object::$t(o) => Some(o),
                        _ => None,
                    }
                }
            }
        )*

        /// Decodes a kind with its own type (neither a workload nor a
        /// Namespace).
        fn decode_typed(
            kind: Kind,
            source: impl ObjectSource,
            namespace: &str,
            name: &str,
        ) -> Result<Object, serde_json::Error> {
            $(if kind == Kind::$t {
                return placed(kind, source, namespace, name).map(Object::$t);
            })*
            Err(serde::de::Error::custom(format_args!(
                "{} has no type of its own",
                kind.as_str()
            )))
        }
    };
}
