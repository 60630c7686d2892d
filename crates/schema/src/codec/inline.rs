//! Replaces named-type references (`"items": "EventType"`) with their definitions.
//!
//! apache-avro's serde writer (`write_avro_datum_ref`) looks references up in an empty name table,
//! and the body pre-check is simpler without one, so both work on a self-contained copy of the
//! schema. Recursive schemas cannot be inlined and are refused (none of ours is recursive).

use apache_avro::Schema;
use apache_avro::schema::{Name, Namespace, UnionSchema};
use std::collections::HashMap;

/// A copy of `schema` without `Schema::Ref`s, or a message naming the reference that failed.
pub(crate) fn inline_refs(schema: &Schema) -> Result<Schema, String> {
    inline(schema, &None, &mut HashMap::new())
}

fn inline(
    schema: &Schema,
    namespace: &Namespace,
    defined: &mut HashMap<Name, Schema>,
) -> Result<Schema, String> {
    Ok(match schema {
        Schema::Ref { name } => {
            let full = name.fully_qualified_name(namespace);
            defined.get(&full).cloned().ok_or_else(|| {
                format!(
                    "reference to {} is recursive or undefined",
                    full.fullname(None)
                )
            })?
        }
        Schema::Record(record) => {
            let full = record.name.fully_qualified_name(namespace);
            let mut record = record.clone();
            for field in &mut record.fields {
                field.schema = inline(&field.schema, &full.namespace, defined)?;
            }
            let out = Schema::Record(record);
            defined.insert(full, out.clone());
            out
        }
        Schema::Enum(e) => {
            defined.insert(e.name.fully_qualified_name(namespace), schema.clone());
            schema.clone()
        }
        Schema::Fixed(f) => {
            defined.insert(f.name.fully_qualified_name(namespace), schema.clone());
            schema.clone()
        }
        Schema::Array(array) => {
            let mut array = array.clone();
            *array.items = inline(&array.items, namespace, defined)?;
            Schema::Array(array)
        }
        Schema::Map(map) => {
            let mut map = map.clone();
            *map.types = inline(&map.types, namespace, defined)?;
            Schema::Map(map)
        }
        Schema::Union(union) => {
            let variants = union
                .variants()
                .iter()
                .map(|v| inline(v, namespace, defined))
                .collect::<Result<Vec<_>, _>>()?;
            Schema::Union(UnionSchema::new(variants).map_err(|e| e.to_string())?)
        }
        other => other.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_replaced_by_their_definition() {
        let schema = Schema::parse_str(
            r#"{"type":"record","name":"R","namespace":"n","fields":[
                {"name":"a","type":{"type":"enum","name":"E","symbols":["X","Y"]}},
                {"name":"b","type":{"type":"array","items":"E"}},
                {"name":"c","type":["null","n.E"]}]}"#,
        )
        .unwrap();
        let Schema::Record(r) = inline_refs(&schema).unwrap() else {
            panic!("not a record")
        };
        let Schema::Array(b) = &r.fields[1].schema else {
            panic!("b is not an array")
        };
        assert!(matches!(&*b.items, Schema::Enum(e) if e.symbols == ["X", "Y"]));
        let Schema::Union(c) = &r.fields[2].schema else {
            panic!("c is not a union")
        };
        assert!(matches!(&c.variants()[1], Schema::Enum(_)));
    }

    #[test]
    fn recursive_schemas_are_refused() {
        let schema = Schema::parse_str(
            r#"{"type":"record","name":"Node","fields":[
                {"name":"next","type":["null","Node"]}]}"#,
        )
        .unwrap();
        let err = inline_refs(&schema).unwrap_err();
        assert!(err.contains("Node"), "{err}");
    }
}
