//! What the node needs from a runtime's metadata: the signed extensions in
//! order, call indexes, storage value types, and the type registry to decode
//! events and storage with.
//!
//! Read from `state_getMetadata` (a SCALE `RuntimeMetadataPrefixed`), so the
//! same code follows the runtime: a newer Cere runtime that adds signed
//! extensions or moves pallets needs no code change, as long as each
//! extension is one [`super::extrinsic`] knows or carries no data.

use frame_metadata::{RuntimeMetadata, RuntimeMetadataPrefixed};
use parity_scale_codec::Decode;
use scale_info::{form::PortableForm, PortableRegistry, TypeDef};

use super::ChainError;

/// One signed extension as the metadata lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtensionMeta {
    /// For example `CheckNonce`.
    pub identifier: String,
    /// Type of the data carried in the extrinsic ("extra").
    pub ty: u32,
    /// Type of the data only signed ("additional signed").
    pub additional: u32,
}

#[derive(Debug, Clone)]
struct StorageEntry {
    name: String,
    value_ty: u32,
}

#[derive(Debug, Clone)]
struct Pallet {
    name: String,
    index: u8,
    calls_ty: Option<u32>,
    storage_prefix: Option<String>,
    storage: Vec<StorageEntry>,
}

/// A runtime's metadata, reduced to what anchoring uses.
#[derive(Debug, Clone)]
pub struct Metadata {
    pub registry: PortableRegistry,
    pub extrinsic_version: u8,
    pub extensions: Vec<ExtensionMeta>,
    pallets: Vec<Pallet>,
}

impl Metadata {
    /// Decode `state_getMetadata`'s bytes. Metadata versions 14 and 15 are read.
    pub fn decode(bytes: &[u8]) -> Result<Metadata, ChainError> {
        let prefixed = RuntimeMetadataPrefixed::decode(&mut &bytes[..])
            .map_err(|e| ChainError::Metadata(format!("not SCALE runtime metadata: {e}")))?;
        if prefixed.0 != frame_metadata::META_RESERVED {
            return Err(ChainError::Metadata(format!("bad metadata magic {:#x}", prefixed.0)));
        }
        // V14 and V15 name the fields alike but are distinct types.
        macro_rules! reduce {
            ($m:expr) => {{
                let m = $m;
                let pallets = m
                    .pallets
                    .iter()
                    .map(|p| {
                        let (storage_prefix, storage) = match &p.storage {
                            Some(s) => (Some(s.prefix.clone()), s.entries.iter().map(v14_entry).collect()),
                            None => (None, Vec::new()),
                        };
                        Pallet {
                            name: p.name.clone(),
                            index: p.index,
                            calls_ty: p.calls.as_ref().map(|c| c.ty.id),
                            storage_prefix,
                            storage,
                        }
                    })
                    .collect();
                let extensions = m
                    .extrinsic
                    .signed_extensions
                    .iter()
                    .map(|e| ExtensionMeta {
                        identifier: e.identifier.clone(),
                        ty: e.ty.id,
                        additional: e.additional_signed.id,
                    })
                    .collect();
                Ok(Metadata { registry: m.types, extrinsic_version: m.extrinsic.version, extensions, pallets })
            }};
        }
        match prefixed.1 {
            RuntimeMetadata::V14(m) => reduce!(m),
            RuntimeMetadata::V15(m) => reduce!(m),
            other => Err(ChainError::Metadata(format!(
                "metadata version {} is not supported (14 and 15 are)",
                other.version()
            ))),
        }
    }

    fn pallet(&self, name: &str) -> Result<&Pallet, ChainError> {
        self.pallets
            .iter()
            .find(|p| p.name == name)
            .ok_or_else(|| ChainError::Metadata(format!("the runtime has no pallet {name}")))
    }

    /// The two bytes that start a call: pallet index, then the call's index.
    pub fn call_index(&self, pallet: &str, call: &str) -> Result<[u8; 2], ChainError> {
        let (p, variant) = self.call_variant(pallet, call)?;
        Ok([p.index, variant.index])
    }

    fn call_variant(
        &self,
        pallet: &str,
        call: &str,
    ) -> Result<(&Pallet, &scale_info::Variant<PortableForm>), ChainError> {
        let p = self.pallet(pallet)?;
        let ty = p.calls_ty.ok_or_else(|| ChainError::Metadata(format!("pallet {pallet} has no calls")))?;
        let variant = self
            .variants(ty)?
            .iter()
            .find(|v| v.name == call)
            .ok_or_else(|| ChainError::Metadata(format!("pallet {pallet} has no call {call}")))?;
        Ok((p, variant))
    }

    /// Encode the call `pallet.call(args...)`, each argument converted to the
    /// call's argument type from the metadata (so layouts come from the runtime).
    pub fn encode_call(
        &self,
        pallet: &str,
        call: &str,
        args: &[scale_value::Value<()>],
    ) -> Result<Vec<u8>, ChainError> {
        let (p, variant) = self.call_variant(pallet, call)?;
        if variant.fields.len() != args.len() {
            return Err(ChainError::Metadata(format!(
                "{pallet}.{call} takes {} arguments, {} given",
                variant.fields.len(),
                args.len()
            )));
        }
        let mut out = vec![p.index, variant.index];
        for (field, arg) in variant.fields.iter().zip(args) {
            scale_value::scale::encode_as_type(arg, field.ty.id, &self.registry, &mut out).map_err(|e| {
                ChainError::Metadata(format!(
                    "{pallet}.{call} argument {:?}: {e}",
                    field.name.as_deref().unwrap_or("?")
                ))
            })?;
        }
        Ok(out)
    }

    /// The pallet's index.
    pub fn pallet_index(&self, pallet: &str) -> Result<u8, ChainError> {
        Ok(self.pallet(pallet)?.index)
    }

    /// The value type of a storage entry, and the pallet's storage prefix.
    pub fn storage_value_type(&self, pallet: &str, entry: &str) -> Result<(String, u32), ChainError> {
        let p = self.pallet(pallet)?;
        let prefix =
            p.storage_prefix.clone().ok_or_else(|| ChainError::Metadata(format!("{pallet} has no storage")))?;
        let e = p
            .storage
            .iter()
            .find(|e| e.name == entry)
            .ok_or_else(|| ChainError::Metadata(format!("{pallet} has no storage entry {entry}")))?;
        Ok((prefix, e.value_ty))
    }

    fn variants(&self, ty: u32) -> Result<&[scale_info::Variant<PortableForm>], ChainError> {
        match &self.resolve(ty)?.type_def {
            TypeDef::Variant(v) => Ok(&v.variants),
            _ => Err(ChainError::Metadata(format!("type {ty} is not an enum"))),
        }
    }

    pub fn resolve(&self, ty: u32) -> Result<&scale_info::Type<PortableForm>, ChainError> {
        self.registry.resolve(ty).ok_or_else(|| ChainError::Metadata(format!("type {ty} is not in the registry")))
    }

    /// Whether values of `ty` encode to no bytes (unit structs, empty tuples,
    /// `PhantomData` wrappers): extensions of such types need nothing from us.
    pub fn is_zero_sized(&self, ty: u32) -> Result<bool, ChainError> {
        Ok(match &self.resolve(ty)?.type_def {
            TypeDef::Composite(c) => {
                for f in &c.fields {
                    if !self.is_zero_sized(f.ty.id)? {
                        return Ok(false);
                    }
                }
                true
            }
            TypeDef::Tuple(t) => {
                for f in &t.fields {
                    if !self.is_zero_sized(f.id)? {
                        return Ok(false);
                    }
                }
                true
            }
            TypeDef::Array(a) => a.len == 0 || self.is_zero_sized(a.type_param.id)?,
            _ => false,
        })
    }
}

fn v14_entry(e: &frame_metadata::v14::StorageEntryMetadata<PortableForm>) -> StorageEntry {
    let value_ty = match &e.ty {
        frame_metadata::v14::StorageEntryType::Plain(t) => t.id,
        frame_metadata::v14::StorageEntryType::Map { value, .. } => value.id,
    };
    StorageEntry { name: e.name.clone(), value_ty }
}
