//! Extractors whose rejections are our JSON errors rather than axum's plain text.

use aniate_proto::error::ErrorCode;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use bytes::Bytes;
use http::request::Parts;
use serde::de::{DeserializeOwned, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Unexpected, Visitor};

use super::{AppState, error::ApiError};

/// A JSON body. Any content type is accepted (curl users forget the header); malformed JSON is
/// a 400, a well-formed body with a wrong or missing field a 422, an oversized body a 413.
/// Text with U+0000 in it is a 422 too: PostgreSQL cannot store it, so refusing it here keeps
/// both backends alike and keeps it out of every query. So is a struct sent as a JSON array,
/// which serde's derive would take as its fields in order ([`ObjectsOnly`]).
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(request, state).await.map_err(|rejection| {
            if rejection.status() == http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    ErrorCode::PayloadTooLarge,
                    format!(
                        "request body over the limit (content may be at most {} bytes)",
                        state.limits.max_content_bytes
                    ),
                )
            } else {
                ApiError::bad_request(format!("could not read the request body: {rejection}"))
            }
        })?;
        let malformed = |err: serde_json::Error| match err.classify() {
            serde_json::error::Category::Data => ApiError::invalid(format!("invalid request body: {err}")),
            _ => ApiError::bad_request(format!("malformed JSON: {err}")),
        };
        // One parse, into a tree: it checks the whole body, fields `T` ignores included (text in
        // them that is not UTF-8 is refused too); `T` is then read from the tree, where a struct
        // must be an object. A name given twice takes its last value, as in JavaScript.
        let tree: serde_json::Value = serde_json::from_slice(&bytes).map_err(malformed)?;
        if has_escaped_nul(&bytes) {
            return Err(ApiError::invalid("invalid request body: text may not contain the character U+0000"));
        }
        let value = T::deserialize(ObjectsOnly(tree))
            .map_err(|err| ApiError::invalid(format!("invalid request body: {err}")))?;
        Ok(ApiJson(value))
    }
}

/// A JSON value to read a request type from, where every struct must be a JSON object; serde's
/// derive would also take one from an array of its fields in order (so `[]` was a valid
/// all-optional patch), which no client means and the OpenAPI document does not allow. Everything
/// else reads as from the value itself.
struct ObjectsOnly(serde_json::Value);

impl<'de> serde::Deserializer<'de> for ObjectsOnly {
    type Error = serde_json::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.0 {
            serde_json::Value::Array(items) => visitor.visit_seq(ArrayAccess(items.into_iter())),
            serde_json::Value::Object(entries) => {
                visitor.visit_map(ObjectAccess { entries: entries.into_iter(), value: None })
            }
            scalar => scalar.deserialize_any(visitor),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.0 {
            serde_json::Value::Null => visitor.visit_none(),
            value => visitor.visit_some(ObjectsOnly(value)),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        let unexpected = match &self.0 {
            serde_json::Value::Object(_) => return self.deserialize_any(visitor),
            serde_json::Value::Array(_) => Unexpected::Seq,
            serde_json::Value::Null => Unexpected::Unit,
            serde_json::Value::Bool(value) => Unexpected::Bool(*value),
            serde_json::Value::Number(_) => Unexpected::Other("number"),
            serde_json::Value::String(text) => Unexpected::Str(text),
        };
        Err(serde::de::Error::invalid_type(unexpected, &visitor))
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        // The enums of request bodies are unit variants, spelled as strings.
        self.0.deserialize_enum(name, variants, visitor)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf unit unit_struct
        seq tuple tuple_struct map identifier ignored_any
    }
}

struct ArrayAccess(std::vec::IntoIter<serde_json::Value>);

impl<'de> SeqAccess<'de> for ArrayAccess {
    type Error = serde_json::Error;

    fn next_element_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<Option<S::Value>, Self::Error> {
        self.0.next().map(|item| seed.deserialize(ObjectsOnly(item))).transpose()
    }
}

struct ObjectAccess {
    entries: serde_json::map::IntoIter,
    /// The value of the key just read.
    value: Option<serde_json::Value>,
}

impl<'de> MapAccess<'de> for ObjectAccess {
    type Error = serde_json::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, Self::Error> {
        let Some((key, value)) = self.entries.next() else { return Ok(None) };
        self.value = Some(value);
        seed.deserialize(key.into_deserializer()).map(Some)
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, Self::Error> {
        let value = self.value.take().ok_or_else(|| serde::de::Error::custom("a value without a key"))?;
        seed.deserialize(ObjectsOnly(value))
    }
}

/// Whether a JSON document that parsed has a `\u0000` escape, the only way JSON spells U+0000
/// (a raw control character is not allowed in a JSON string). Escapes are skipped whole, so
/// `\\u0000` (a backslash, then `u0000`) is not one.
fn has_escaped_nul(json: &[u8]) -> bool {
    let mut idx = 0;
    while idx < json.len() {
        if json[idx] == b'\\' {
            if json[idx + 1..].starts_with(b"u0000") {
                return true;
            }
            idx += 2;
        } else {
            idx += 1;
        }
    }
    false
}

/// The `{slug}` of a path. A slug that cannot exist (bad characters) is a 404 like any
/// unknown one.
#[derive(Debug)]
pub struct SlugPath(pub String);

impl FromRequestParts<AppState> for SlugPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Path(slug) =
            Path::<String>::from_request_parts(parts, state).await.map_err(|_| ApiError::not_found("no such tool"))?;
        if !aniate_proto::tool::is_valid_slug(&slug) {
            return Err(ApiError::not_found("no such tool (slugs are a-z, 0-9 and -)"));
        }
        Ok(SlugPath(slug))
    }
}

/// A path parameter other than a slug (an id). One that cannot be decoded (bad percent-encoding,
/// not UTF-8) names nothing, so it is a JSON 404 like any unknown id, not axum's plain-text 400.
#[derive(Debug)]
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send> FromRequestParts<AppState> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        // No id has U+0000 in it, and PostgreSQL refuses it even in a lookup.
        if parts.uri.path().contains("%00") {
            return Err(ApiError::not_found("no such resource"));
        }
        let Path(value) =
            Path::<T>::from_request_parts(parts, state).await.map_err(|_| ApiError::not_found("no such resource"))?;
        Ok(ApiPath(value))
    }
}

/// A query string. One that does not fit (e.g. a parameter given twice) is a JSON 422 naming
/// the problem, not axum's plain-text 400.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned + Send> FromRequestParts<AppState> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Query(value) = Query::<T>::from_request_parts(parts, state)
            .await
            .map_err(|rejection| ApiError::invalid(format!("query string: {}", rejection.body_text())))?;
        Ok(ApiQuery(value))
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, PartialEq, serde::Deserialize)]
    struct Message {
        role: String,
        #[serde(default)]
        content: Option<String>,
    }

    #[derive(Debug, PartialEq, serde::Deserialize)]
    struct Request {
        #[serde(default)]
        name: Option<String>,
        #[serde(default)]
        messages: Vec<Message>,
        #[serde(default)]
        id: Option<i64>,
    }

    fn read(json: &str) -> Result<Request, serde_json::Error> {
        Request::deserialize(ObjectsOnly(serde_json::from_str(json).unwrap()))
    }

    #[test]
    fn structs_must_be_objects_at_any_depth() {
        let request = read(r#"{"name": "x", "messages": [{"role": "user", "content": null}], "id": 7, "extra": [1]}"#);
        let expected = Request {
            name: Some("x".into()),
            messages: vec![Message { role: "user".into(), content: None }],
            id: Some(7),
        };
        assert_eq!(request.unwrap(), expected);
        assert!(read("[]").unwrap_err().to_string().contains("invalid type: sequence"));
        assert!(read(r#"{"messages": [["user", "hi"]]}"#).is_err());
        assert!(read(r#"{"id": 1.5}"#).is_err());
        assert!(read("null").is_err());
    }

    #[test]
    fn escaped_nuls_are_found_and_escaped_backslashes_are_not_nuls() {
        assert!(has_escaped_nul(br#"{"a": "x\u0000y"}"#));
        assert!(has_escaped_nul(br#"{"a\u0000": 1}"#));
        assert!(has_escaped_nul(br#"["\\\u0000"]"#));
        assert!(!has_escaped_nul(br#"{"a": "x\\u0000y"}"#));
        assert!(!has_escaped_nul(br#"{"a": "\u0001 \n \"u0000"}"#));
        assert!(!has_escaped_nul(b"{}"));
    }
}
