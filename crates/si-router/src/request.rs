//! The fields of a chat request the gateway reads. Everything else is forwarded as is:
//! the body is parsed once, borrowed, and never re-serialised.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, IgnoredAny, SeqAccess, Visitor};
use serde_json::error::Category;

use crate::RouterError;

/// `agent_type`, `model`, `stream`, and proof that `messages` is a non-empty array.
#[derive(Debug, Deserialize)]
pub struct ChatRequestHead<'a> {
    /// The original's routing field: an agent name.
    #[serde(default, borrow)]
    pub agent_type: Option<Cow<'a, str>>,
    /// OpenAI's field: an agent name or a model id.
    #[serde(default, borrow)]
    pub model: Option<Cow<'a, str>>,
    /// Server-sent events wanted.
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(rename = "messages")]
    _messages: Messages,
}

impl<'a> ChatRequestHead<'a> {
    /// Reads the head of `body`, or says exactly where and why it is not a chat request.
    pub fn parse(body: &'a [u8]) -> Result<Self, RouterError> {
        // Derived struct impls also accept a JSON array of the fields in order.
        let first = body.iter().find(|b| !b.is_ascii_whitespace());
        if first.is_some_and(|b| *b != b'{') {
            return Err(RouterError::InvalidRequest(
                "request body is not a chat completion request: expected a JSON object".into(),
            ));
        }
        let mut deserializer = serde_json::Deserializer::from_slice(body);
        let head = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
            let field = e.path().to_string();
            let e = e.into_inner();
            RouterError::InvalidRequest(match e.classify() {
                Category::Syntax | Category::Eof | Category::Io => {
                    format!("request body is not valid JSON: {e}")
                }
                Category::Data if field == "." => {
                    format!("request body is not a chat completion request: {e}")
                }
                Category::Data => format!("request field `{field}` is invalid: {e}"),
            })
        })?;
        deserializer.end().map_err(|e| {
            RouterError::InvalidRequest(format!("request body is not valid JSON: {e}"))
        })?;
        Ok(head)
    }

    /// True when the caller asked for a stream.
    pub fn is_stream(&self) -> bool {
        self.stream.unwrap_or(false)
    }
}

/// A non-empty JSON array whose elements are not inspected here.
#[derive(Debug)]
struct Messages;

impl<'de> Deserialize<'de> for Messages {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NonEmptyArray;
        impl<'de> Visitor<'de> for NonEmptyArray {
            type Value = Messages;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a non-empty array of messages")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Messages, A::Error> {
                let mut count = 0usize;
                while seq.next_element::<IgnoredAny>()?.is_some() {
                    count += 1;
                }
                if count == 0 {
                    return Err(de::Error::invalid_length(0, &self));
                }
                Ok(Messages)
            }
        }
        deserializer.deserialize_seq(NonEmptyArray)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn err(body: &str) -> String {
        match ChatRequestHead::parse(body.as_bytes()) {
            Ok(head) => panic!("accepted {body}: {head:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn reads_routing_fields_and_ignores_the_rest() {
        let body = br#"{"model":"Clinical","messages":[{"role":"user","content":"hi"}],
                        "stream":true,"temperature":0.2,"agent_type":null}"#;
        let head = ChatRequestHead::parse(body).unwrap();
        assert_eq!(head.model.as_deref(), Some("Clinical"));
        assert_eq!(head.agent_type, None);
        assert!(head.is_stream());
        let head = ChatRequestHead::parse(br#"{"agent_type":"Chat","messages":[1]}"#).unwrap();
        assert_eq!(head.agent_type.as_deref(), Some("Chat"));
        assert!(!head.is_stream());
    }

    #[test]
    fn escaped_names_are_decoded() {
        let head =
            ChatRequestHead::parse(br#"{"agent_type":"Cl\u0069nical","messages":[{}]}"#).unwrap();
        assert_eq!(head.agent_type.as_deref(), Some("Clinical"));
    }

    #[test]
    fn errors_say_where_and_what() {
        assert!(err(r#"{"messages": [}"#).contains("not valid JSON"));
        assert!(err(r#"{"messages": [}"#).contains("line 1 column 15"));
        assert!(err(r#"{"model":"x"}"#).contains("missing field `messages`"));
        assert!(err(r#"{"messages":[]}"#).contains("non-empty array"));
        assert!(err(r#"{"messages":"hi"}"#).contains("non-empty array"));
        assert!(err(r#"{"messages":[{}],"stream":"yes"}"#).contains("stream"));
        assert!(err("[1,2]").contains("not a chat completion request"));
        assert!(err(r#"[null,null,null,[1]]"#).contains("expected a JSON object"));
        assert!(err("").contains("not valid JSON"));
        assert!(err(r#"{"messages":[{}]} trailing"#).contains("trailing characters"));
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = ChatRequestHead::parse(&bytes);
        }
    }
}
