//! The events of a block (`System.Events`), decoded with the runtime's types.

use scale_value::{Composite, Primitive, Value, ValueDef};

use super::metadata::Metadata;
use super::ChainError;

/// One event, reduced to what anchoring checks.
#[derive(Debug, Clone)]
pub struct Event {
    /// `Some(i)`: emitted while applying extrinsic `i` of the block.
    pub extrinsic: Option<u32>,
    pub pallet: String,
    pub name: String,
    pub fields: Composite<u32>,
}

impl Event {
    /// A field's value by name (named fields) or position (unnamed).
    pub fn field(&self, name: &str, position: usize) -> Option<&Value<u32>> {
        match &self.fields {
            Composite::Named(f) => f.iter().find(|(n, _)| n == name).map(|(_, v)| v),
            Composite::Unnamed(f) => f.get(position),
        }
    }
}

/// Decode the SCALE bytes of `System.Events`.
pub fn decode(metadata: &Metadata, bytes: &[u8]) -> Result<Vec<Event>, ChainError> {
    let (_, ty) = metadata.storage_value_type("System", "Events")?;
    let mut input = bytes;
    let value = scale_value::scale::decode_as_type(&mut input, ty, &metadata.registry)
        .map_err(|e| ChainError::Events(e.to_string()))?;
    if !input.is_empty() {
        return Err(ChainError::Events(format!("{} bytes after the events", input.len())));
    }
    let records = match value.value {
        ValueDef::Composite(c) => c.into_values().collect::<Vec<_>>(),
        _ => return Err(ChainError::Events("System.Events is not a sequence".into())),
    };
    records.into_iter().map(record).collect()
}

fn record(value: Value<u32>) -> Result<Event, ChainError> {
    let bad = |what: &str| ChainError::Events(format!("event record: {what}"));
    let ValueDef::Composite(Composite::Named(fields)) = value.value else { return Err(bad("not a struct")) };
    let get = |name: &str| fields.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
    let phase = get("phase").ok_or_else(|| bad("no phase"))?;
    let extrinsic = match phase.value {
        ValueDef::Variant(v) if v.name == "ApplyExtrinsic" => {
            v.values.into_values().next().and_then(|i| as_u128(&i)).map(|i| i as u32)
        }
        _ => None,
    };
    let ValueDef::Variant(pallet) = get("event").ok_or_else(|| bad("no event"))?.value else {
        return Err(bad("event is not an enum"));
    };
    let inner = pallet.values.into_values().next().ok_or_else(|| bad("pallet event without a value"))?;
    let ValueDef::Variant(event) = inner.value else { return Err(bad("pallet event is not an enum")) };
    Ok(Event { extrinsic, pallet: pallet.name, name: event.name, fields: event.values })
}

/// An unsigned integer value.
pub fn as_u128(value: &Value<u32>) -> Option<u128> {
    match &value.value {
        ValueDef::Primitive(Primitive::U128(n)) => Some(*n),
        ValueDef::Composite(c) if c.len() == 1 => c.values().next().and_then(as_u128),
        _ => None,
    }
}

/// The bytes of a value made of `u8`s (an `AccountId32`, an `H256`, a `Vec<u8>`), however nested.
pub fn as_bytes(value: &Value<u32>) -> Option<Vec<u8>> {
    fn walk(value: &Value<u32>, out: &mut Vec<u8>) -> Option<()> {
        match &value.value {
            ValueDef::Primitive(Primitive::U128(n)) => {
                out.push(u8::try_from(*n).ok()?);
                Some(())
            }
            ValueDef::Composite(c) => {
                for v in c.values() {
                    walk(v, out)?;
                }
                Some(())
            }
            _ => None,
        }
    }
    let mut out = Vec::new();
    walk(value, &mut out)?;
    Some(out)
}
