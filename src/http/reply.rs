//! Replies: JSON bodies and the error envelope every failure uses
//! (`{"error","request_id","validation_errors"?}`, SPEC §2).

use serde::Serialize;

use super::Response;

/// Message of the 404 for unknown routes and unknown servers (Wings' text).
pub const NOT_FOUND: &str = "The requested resource does not exist on this instance.";

/// A failed request: status, message, and for 400s the fields at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
    pub validation_errors: Vec<FieldError>,
    pub headers: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl ApiError {
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            validation_errors: Vec::new(),
            headers: Vec::new(),
        }
    }

    pub fn not_found() -> Self {
        ApiError::new(404, NOT_FOUND)
    }

    /// 400 for a malformed body, listing the fields at fault.
    pub fn validation(errors: Vec<FieldError>) -> Self {
        let summary = errors
            .iter()
            .map(FieldError::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        ApiError {
            status: 400,
            message: format!("The request body is invalid: {summary}."),
            validation_errors: errors,
            headers: Vec::new(),
        }
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// The envelope, carrying the request id so a log line can be found.
    pub fn into_response(self, request_id: &str) -> Response {
        #[derive(Serialize)]
        struct Envelope<'a> {
            error: &'a str,
            request_id: &'a str,
            #[serde(skip_serializing_if = "<[_]>::is_empty")]
            validation_errors: &'a [FieldError],
        }
        let body = Envelope {
            error: &self.message,
            request_id,
            validation_errors: &self.validation_errors,
        };
        let mut response = json(self.status, &body);
        response.headers.extend(self.headers);
        response
    }
}

impl FieldError {
    pub fn new(field: &str, message: &str) -> Self {
        FieldError {
            field: field.to_string(),
            message: message.to_string(),
        }
    }
}

/// The message, as the envelope's `error` says it; the status is the reply's.
impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// `url is required`: the field, then what is wrong with it.
impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.field, self.message)
    }
}

/// A JSON response.
pub fn json<T: Serialize + ?Sized>(status: u16, value: &T) -> Response {
    // Serializing our own types cannot fail; fall back to an empty object
    // rather than panicking in a worker.
    let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    Response::new(status)
        .header("Content-Type", "application/json")
        .bytes(body)
}

/// 204 No Content.
pub fn no_content() -> Response {
    Response::new(204)
}

/// Parses a JSON request body, mapping syntax errors to a 400 envelope.
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::validation(vec![FieldError::new(
            "body",
            &format!("is not valid JSON: {e}"),
        )])
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::Body;

    fn body_json(r: &Response) -> serde_json::Value {
        match &r.body {
            Body::Bytes(b) => serde_json::from_slice(b).unwrap(),
            _ => panic!("not a bytes body"),
        }
    }

    #[test]
    fn envelope_has_request_id_and_only_400s_list_fields() {
        let r = ApiError::not_found().into_response("abc");
        assert_eq!(r.status, 404);
        assert_eq!(
            body_json(&r),
            serde_json::json!({"error": NOT_FOUND, "request_id": "abc"})
        );
        let r =
            ApiError::validation(vec![FieldError::new("url", "is required")]).into_response("r1");
        assert_eq!(r.status, 400);
        let v = body_json(&r);
        assert_eq!(v["validation_errors"][0]["field"], "url");
        assert_eq!(v["validation_errors"][0]["message"], "is required");
        assert_eq!(v["request_id"], "r1");
    }

    #[test]
    fn errors_read_as_the_sentence_the_envelope_carries() {
        let e = ApiError::validation(vec![
            FieldError::new("url", "is required"),
            FieldError::new("token", "must be a single line"),
        ]);
        assert_eq!(
            e.to_string(),
            "The request body is invalid: url is required; token must be a single line."
        );
        assert_eq!(ApiError::not_found().to_string(), NOT_FOUND);
    }
}
