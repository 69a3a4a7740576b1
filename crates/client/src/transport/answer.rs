//! Reading an answer: its head checked before the body, the body bounded, the signed
//! channel's headers read exactly once each.

use super::*;

/// Checks an answer's head before any of its body is read; returns its `Content-Length`.
pub(super) fn check_head(status: StatusCode, headers: &HeaderMap) -> Result<Option<usize>, Error> {
    if status.is_redirection() {
        return Err(Error::RedirectNotFollowed { status: status.as_u16() });
    }
    for coding in headers.get_all(header::CONTENT_ENCODING) {
        if !coding.to_str().is_ok_and(|c| c.trim().eq_ignore_ascii_case("identity")) {
            return Err(Error::MalformedResponse(
                "it has a Content-Encoding other than identity; coded answers are refused".into(),
            ));
        }
    }
    let length = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    match length {
        Some(n) if n > MAX_RESPONSE_BYTES as u64 => Err(Error::ResponseTooLarge { limit: MAX_RESPONSE_BYTES }),
        Some(n) => Ok(usize::try_from(n).ok()),
        None => Ok(None),
    }
}

/// Reads the body frame by frame, refusing it as soon as it passes [`MAX_RESPONSE_BYTES`].
/// Zeroized on drop: login and refresh answers carry the session's secrets. Room for the
/// declared length is taken at once, so the buffer is not moved while it grows (a move
/// would leave an unwiped copy behind).
pub(super) async fn read_body(mut body: Incoming, length: Option<usize>) -> Result<Zeroizing<Vec<u8>>, Error> {
    let mut out = Zeroizing::new(Vec::with_capacity(length.unwrap_or(0).min(MAX_RESPONSE_BYTES)));
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(hyper_failure)?.into_data() else { continue };
        if data.len() > MAX_RESPONSE_BYTES - out.len() {
            return Err(Error::ResponseTooLarge { limit: MAX_RESPONSE_BYTES });
        }
        out.extend_from_slice(&data);
    }
    Ok(out)
}

/// An answer read in full, not yet verified.
pub(super) struct Answer {
    pub(super) status: u16,
    pub(super) headers: HeaderMap,
    pub(super) body: Zeroizing<Vec<u8>>,
}

impl Answer {
    pub(super) fn into_response(self, outgoing: &Outgoing<'_>, now: u64) -> Result<Response, Error> {
        let verified_at = match &outgoing.signed {
            Some(signed) => Some(self.verify(signed)?),
            None => None,
        };
        Ok(Response {
            status: self.status,
            verified_at,
            directives: directives(&self.headers)?,
            date: header_date(&self.headers, header::DATE),
            retry_after: retry_after(&self.headers, now),
            body: self.body,
        })
    }

    /// SPEC section 5, "Signed responses": `X-Signature` over "FV1-RESPONSE", the status, our
    /// nonce, the body's hash and `X-Timestamp`. Returns the verified timestamp.
    pub(super) fn verify(&self, signed: &SignedWith<'_>) -> Result<u64, Error> {
        let status = self.status;
        let not_verified = |reason| Error::ResponseNotVerified { status, reason };
        let timestamp = single(&self.headers, &X_TIMESTAMP)
            .ok_or(not_verified("X-Timestamp appears more than once or is not visible ASCII"))?;
        let signature = single(&self.headers, &X_SIGNATURE)
            .ok_or(not_verified("X-Signature appears more than once or is not visible ASCII"))?;
        match (timestamp, signature) {
            (Some(timestamp), Some(signature)) => {
                signed
                    .secret
                    .verify_response(status, &signed.nonce, &self.body, timestamp, signature)
                    .map_err(|_| not_verified("its signature does not verify"))?;
                parse_timestamp(timestamp).map_err(|_| not_verified("its X-Timestamp is not Unix seconds"))
            }
            (None, None) => Err(self.unsigned_refusal().unwrap_or(not_verified("it carries no signature"))),
            _ => Err(not_verified("it carries only one of X-Timestamp and X-Signature")),
        }
    }

    /// An unsigned 4xx problem answer: the server refused before it knew the session or
    /// verified the signature (`docs/protocol.md` section 8.3).
    pub(super) fn unsigned_refusal(&self) -> Option<Error> {
        if !(400..500).contains(&self.status) {
            return None;
        }
        let problem: serde_json::Value = serde_json::from_slice(&self.body).ok()?;
        let code = ProblemCode::parse(problem.get("code")?.as_str()?)?;
        Some(Error::UnsignedRefusal { status: self.status, code })
    }
}

/// A header that may appear at most once: `Some(None)` when absent, `None` when repeated or
/// not visible ASCII.
pub(super) fn single<'h>(headers: &'h HeaderMap, name: &HeaderName) -> Option<Option<&'h str>> {
    let mut values = headers.get_all(name).iter();
    let Some(first) = values.next() else { return Some(None) };
    if values.next().is_some() {
        return None;
    }
    first.to_str().ok().map(Some)
}

/// `X-Fieldvault-Directives: <jws>[, <jws>]...`, as the server joins them.
pub(super) fn directives(headers: &HeaderMap) -> Result<Vec<String>, Error> {
    let mut out = Vec::new();
    for value in headers.get_all(X_DIRECTIVES) {
        let value = value
            .to_str()
            .map_err(|_| Error::MalformedResponse("its X-Fieldvault-Directives header is not visible ASCII".into()))?;
        out.extend(value.split(',').map(str::trim).filter(|d| !d.is_empty()).map(str::to_owned));
    }
    Ok(out)
}

/// An HTTP date header (RFC 9110 IMF-fixdate and the obsolete forms) as Unix seconds.
pub(super) fn header_date(headers: &HeaderMap, name: HeaderName) -> Option<u64> {
    let value = headers.get(name)?.to_str().ok()?;
    let at = httpdate::parse_http_date(value.trim()).ok()?;
    Some(at.duration_since(UNIX_EPOCH).ok()?.as_secs())
}

/// `Retry-After` as seconds from `now`: delay-seconds, or an HTTP date.
pub(super) fn retry_after(headers: &HeaderMap, now: u64) -> Option<u64> {
    let value = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return Some(value.parse().unwrap_or(u64::MAX));
    }
    header_date(headers, header::RETRY_AFTER).map(|at| at.saturating_sub(now))
}
