//! The fields of a chat request the gateway reads. Everything else is forwarded as is:
//! the body is parsed once, borrowed, and never re-serialised.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::error::Category;

use crate::RouterError;

/// `agent_type`, `model`, `stream`, and proof that `messages` is a non-empty array
/// (and whether any of them carries an image).
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
    messages: Messages,
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

    /// True when a message has an `image_url` content part.
    pub fn has_images(&self) -> bool {
        self.messages.images
    }
}

/// A non-empty JSON array of messages, read only for whether a content part is an
/// image; everything else in it is skipped without being copied.
#[derive(Debug)]
struct Messages {
    images: bool,
}

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
                let mut images = false;
                while let Some(message) = seq.next_element::<Scan<MessageImages>>()? {
                    images |= message.0;
                    count += 1;
                }
                if count == 0 {
                    return Err(de::Error::invalid_length(0, &self));
                }
                Ok(Messages { images })
            }
        }
        deserializer.deserialize_seq(NonEmptyArray)
    }
}

/// What a [`Scan`] looks for in one JSON value of any shape; values of shapes it does
/// not look into count as not found, so the body is passed on as the client wrote it.
trait Finder {
    /// Looks into an object.
    fn object<'de, A: MapAccess<'de>>(mut map: A) -> Result<bool, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(false)
    }
    /// Looks into an array.
    fn array<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<bool, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(false)
    }
    /// Looks at a string.
    fn text(_: &str) -> bool {
        false
    }
}

/// Whether one JSON value holds what `F` looks for.
struct Scan<F>(bool, std::marker::PhantomData<F>);

impl<'de, F: Finder> Deserialize<'de> for Scan<F> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct AnyValue<F>(std::marker::PhantomData<F>);
        impl<'de, F: Finder> Visitor<'de> for AnyValue<F> {
            type Value = Scan<F>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Scan<F>, A::Error> {
                Ok(Scan(F::object(map)?, std::marker::PhantomData))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Scan<F>, A::Error> {
                Ok(Scan(F::array(seq)?, std::marker::PhantomData))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Scan<F>, E> {
                Ok(Scan(false, std::marker::PhantomData))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Scan<F>, E> {
                Ok(Scan(false, std::marker::PhantomData))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Scan<F>, E> {
                Ok(Scan(false, std::marker::PhantomData))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Scan<F>, E> {
                Ok(Scan(false, std::marker::PhantomData))
            }
            fn visit_str<E>(self, text: &str) -> Result<Scan<F>, E> {
                Ok(Scan(F::text(text), std::marker::PhantomData))
            }
            fn visit_unit<E>(self) -> Result<Scan<F>, E> {
                Ok(Scan(false, std::marker::PhantomData))
            }
        }
        deserializer.deserialize_any(AnyValue(std::marker::PhantomData))
    }
}

/// A message with an image part in its `content`.
struct MessageImages;

impl Finder for MessageImages {
    fn object<'de, A: MapAccess<'de>>(mut map: A) -> Result<bool, A::Error> {
        let mut found = false;
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            if key == "content" {
                found |= map.next_value::<Scan<ImageParts>>()?.0;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

/// Content parts, one of which is an image.
struct ImageParts;

impl Finder for ImageParts {
    fn array<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<bool, A::Error> {
        let mut found = false;
        while let Some(part) = seq.next_element::<Scan<ImagePart>>()? {
            found |= part.0;
        }
        Ok(found)
    }
}

/// A content part whose `type` is `image_url`.
struct ImagePart;

impl Finder for ImagePart {
    fn object<'de, A: MapAccess<'de>>(mut map: A) -> Result<bool, A::Error> {
        let mut found = false;
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            if key == "type" {
                found |= map.next_value::<Scan<IsImageType>>()?.0;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

/// The string `image_url`.
struct IsImageType;

impl Finder for IsImageType {
    fn text(text: &str) -> bool {
        text == "image_url"
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

    #[test]
    fn image_parts_are_noticed_wherever_they_are() {
        let has = |body: &str| {
            ChatRequestHead::parse(body.as_bytes())
                .unwrap()
                .has_images()
        };
        let image = r#"{"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA"}}"#;
        let text = r#"{"type":"text","text":"image_url"}"#;
        assert!(has(&format!(
            r#"{{"messages":[{{"role":"user","content":[{text},{image}]}}]}}"#
        )));
        assert!(has(&format!(
            r#"{{"messages":[{{"content":"hi"}},{{"role":"user","content":[{image}],"name":"x"}}]}}"#
        )));
        // Escaped, it is still the same type.
        assert!(has(
            r#"{"messages":[{"content":[{"type":"image\u005furl","image_url":{}}]}]}"#
        ));
        assert!(!has(&format!(r#"{{"messages":[{{"content":[{text}]}}]}}"#)));
        assert!(!has(
            r#"{"messages":[{"content":"image_url"},1,null,[{"type":"image_url"}]]}"#
        ));
        assert!(!has(
            r#"{"messages":[{"role":"user","content":null,"type":"image_url"}]}"#
        ));
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = ChatRequestHead::parse(&bytes);
        }
    }
}
