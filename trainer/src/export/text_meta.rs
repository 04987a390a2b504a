//! What a character-level language model needs beside its graph to be evaluated on text: the
//! vocabulary (class id = position), the training window and the data split. `hlstmc train`
//! writes it into the ONNX file as one metadata property, [`KEY`], whose value is a JSON
//! object (`{"vocab": "...", "window": 100, "validation": 0.05, "test": 0.1, "max_chars":
//! null}`), so any ONNX tool can read it (ONNX Runtime: `custom_metadata_map`). `hlstmc eval
//! --text` reads it back.

use crate::Error;
use crate::config::Data;
use crate::data::Vocab;
use onnx_protobuf::{ModelProto, StringStringEntryProto};

/// The metadata property's key.
pub const KEY: &str = "hlstmc.text";

/// A character model's vocabulary, window and split, as the training config had them.
#[derive(Clone, Debug, PartialEq)]
pub struct TextMeta {
    pub vocab: Vocab,
    /// `data.window`: characters per training window.
    pub window: usize,
    /// `data.validation` and `data.test`: the split's fractions.
    pub validation: f64,
    pub test: f64,
    /// `data.max_chars`: the trainer used only the first this many characters of its file.
    pub max_chars: Option<usize>,
}

impl TextMeta {
    /// The metadata of a text config with its vocabulary; `None` for other data.
    pub fn of(data: &Data, vocab: &Vocab) -> Option<TextMeta> {
        match data {
            Data::Text {
                window,
                validation,
                test,
                max_chars,
                ..
            } => Some(TextMeta {
                vocab: vocab.clone(),
                window: *window,
                validation: *validation,
                test: *test,
                max_chars: *max_chars,
            }),
            _ => None,
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::json!({
            "vocab": self.vocab.as_string(),
            "window": self.window,
            "validation": self.validation,
            "test": self.test,
            "max_chars": self.max_chars,
        })
        .to_string()
    }

    pub fn from_json(text: &str) -> Result<TextMeta, Error> {
        let bad = |what: &str| Error::new(format!("metadata property {KEY}: {what}"));
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| bad(&format!("not JSON: {e}")))?;
        let vocab = v["vocab"]
            .as_str()
            .ok_or_else(|| bad("no string \"vocab\""))
            .and_then(|s| Vocab::from_chars(s).map_err(|e| bad(&e.to_string())))?;
        let window = v["window"]
            .as_u64()
            .filter(|&w| w > 0)
            .ok_or_else(|| bad("no positive integer \"window\""))? as usize;
        let fraction = |k: &str| {
            v[k].as_f64()
                .ok_or_else(|| bad(&format!("no number \"{k}\"")))
        };
        let max_chars = match &v["max_chars"] {
            serde_json::Value::Null => None,
            m => Some(
                m.as_u64()
                    .ok_or_else(|| bad("\"max_chars\" is not an integer"))?
                    as usize,
            ),
        };
        Ok(TextMeta {
            vocab,
            window,
            validation: fraction("validation")?,
            test: fraction("test")?,
            max_chars,
        })
    }

    /// Adds (or replaces) the property in `m`.
    pub fn write_to(&self, m: &mut ModelProto) {
        m.metadata_props.retain(|p| p.key != KEY);
        let mut p = StringStringEntryProto::new();
        p.key = KEY.into();
        p.value = self.to_json();
        m.metadata_props.push(p);
    }

    /// The property of `m`: `None` where it has none (a model from another tool, or exported
    /// before the property existed), an error where it is malformed.
    pub fn read_from(m: &ModelProto) -> Result<Option<TextMeta>, Error> {
        m.metadata_props
            .iter()
            .find(|p| p.key == KEY)
            .map(|p| TextMeta::from_json(&p.value))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let meta = TextMeta {
            vocab: Vocab::of("a \"quoted\"\nline\t\u{e9}"),
            window: 7,
            validation: 0.05,
            test: 0.1,
            max_chars: Some(1000),
        };
        let mut m = ModelProto::new();
        assert_eq!(TextMeta::read_from(&m).unwrap(), None);
        meta.write_to(&mut m);
        meta.write_to(&mut m);
        assert_eq!(m.metadata_props.len(), 1);
        assert_eq!(TextMeta::read_from(&m).unwrap(), Some(meta));
        for bad in [
            "{",
            r#"{"vocab": "ba", "window": 1, "validation": 0, "test": 0}"#,
        ] {
            assert!(TextMeta::from_json(bad).is_err(), "{bad}");
        }
    }
}
