//! SOAP 1.2 over HTTP as ONVIF devices speak it: a request envelope from a small template (values escaped), with a
//! WS-Security UsernameToken (PasswordDigest: base64(sha1(nonce + created + password))) when credentials are given;
//! the answer read with a size cap and parsed with `roxmltree`; a SOAP fault turned into a [`ProbeError`]
//! (`NotAuthorized`, or HTTP 401/403, is [`ProbeError::Unauthorized`]). Plain HTTP only, no redirects followed.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use sha1::{Digest, Sha1};

use super::{Credentials, ProbeError};

pub const SOAP_ENV: &str = "http://www.w3.org/2003/05/soap-envelope";
const WSSE: &str = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd";
const WSU: &str = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd";
const PASSWORD_DIGEST: &str =
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0#PasswordDigest";
const BASE64_BINARY: &str =
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-soap-message-security-1.0#Base64Binary";

/// The largest answer read from a device; a longer one is refused, so a device cannot make camhub buffer without end.
const MAX_ANSWER: usize = 1 << 20;

/// `text` with XML's five special characters escaped, for element content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// WS-Security's PasswordDigest: base64(sha1(nonce + created + password)), the nonce as raw bytes.
pub fn password_digest(nonce: &[u8], created: &str, password: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(nonce);
    sha.update(created.as_bytes());
    sha.update(password.as_bytes());
    BASE64.encode(sha.finalize())
}

/// A request: `body` (XML camhub wrote) in a SOAP 1.2 envelope, with a UsernameToken for `creds` made with a fresh
/// nonce and the current time.
pub fn envelope(body: &str, creds: Option<&Credentials>) -> String {
    let token = creds.map(|c| {
        let nonce: [u8; 16] = rand::random();
        username_token(c, &nonce, &crate::base::time::iso(std::time::SystemTime::now()))
    });
    envelope_with(body, token.as_deref())
}

fn envelope_with(body: &str, security: Option<&str>) -> String {
    let header = security.map(|s| format!("<s:Header>{s}</s:Header>")).unwrap_or_default();
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
         <s:Envelope xmlns:s=\"{SOAP_ENV}\">{header}<s:Body>{body}</s:Body></s:Envelope>"
    )
}

/// The `wsse:Security` header of a UsernameToken with a PasswordDigest.
fn username_token(creds: &Credentials, nonce: &[u8], created: &str) -> String {
    format!(
        "<wsse:Security s:mustUnderstand=\"1\" xmlns:wsse=\"{WSSE}\" xmlns:wsu=\"{WSU}\"><wsse:UsernameToken>\
         <wsse:Username>{user}</wsse:Username>\
         <wsse:Password Type=\"{PASSWORD_DIGEST}\">{digest}</wsse:Password>\
         <wsse:Nonce EncodingType=\"{BASE64_BINARY}\">{nonce}</wsse:Nonce>\
         <wsu:Created>{created}</wsu:Created></wsse:UsernameToken></wsse:Security>",
        user = escape(&creds.username),
        digest = password_digest(nonce, created, &creds.password),
        nonce = BASE64.encode(nonce),
    )
}

/// POSTs a request for `action` to a device service at `url` and returns the answer's text, or why not.
pub async fn call(
    http: &reqwest::Client,
    url: &url::Url,
    action: &str,
    body: &str,
    creds: Option<&Credentials>,
) -> Result<String, ProbeError> {
    let response = http
        .post(url.clone())
        .header("Content-Type", format!("application/soap+xml; charset=utf-8; action=\"{action}\""))
        .body(envelope(body, creds))
        .send()
        .await
        .map_err(from_reqwest)?;
    let status = response.status();
    let text = read_capped(response).await?;
    if let Some((unauthorized, reason)) = fault(&text) {
        return Err(if unauthorized {
            ProbeError::Unauthorized
        } else {
            ProbeError::Failed(format!("SOAP fault: {reason}"))
        });
    }
    match status.as_u16() {
        200..=299 => Ok(text),
        401 | 403 => Err(ProbeError::Unauthorized),
        code => Err(ProbeError::Failed(format!("HTTP {code}"))),
    }
}

async fn read_capped(mut response: reqwest::Response) -> Result<String, ProbeError> {
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(from_reqwest)? {
        if bytes.len() + chunk.len() > MAX_ANSWER {
            return Err(ProbeError::Failed(format!("answer longer than {MAX_ANSWER} bytes")));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

fn from_reqwest(e: reqwest::Error) -> ProbeError {
    let e = e.without_url();
    if e.is_timeout() {
        // The client's limit is the scan's; the device is as good as unreachable.
        ProbeError::Unreachable("no answer in time".into())
    } else if e.is_connect() {
        ProbeError::Unreachable(error_chain(&e))
    } else {
        ProbeError::Failed(error_chain(&e))
    }
}

/// An error and its sources on one line (reqwest's own message alone says only "error sending request").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The fault an answer carries, if it is one: whether it refuses the credentials (`ter:NotAuthorized` among its
/// codes), and its reason.
fn fault(text: &str) -> Option<(bool, String)> {
    let doc = roxmltree::Document::parse(text).ok()?;
    let fault = doc.descendants().find(|n| n.has_tag_name((SOAP_ENV, "Fault")))?;
    let codes: Vec<&str> = fault
        .descendants()
        .filter(|n| n.has_tag_name((SOAP_ENV, "Value")))
        .filter_map(|n| n.text())
        .map(str::trim)
        .collect();
    let unauthorized = codes.iter().any(|c| c.rsplit(':').next() == Some("NotAuthorized"));
    let reason = fault
        .descendants()
        .find(|n| n.has_tag_name((SOAP_ENV, "Text")))
        .and_then(|n| n.text())
        .map(|t| t.trim().chars().take(200).collect())
        .unwrap_or_else(|| codes.join(" "));
    Some((unauthorized, reason))
}

/// The text of the first element named `(namespace, name)` under `node`, trimmed.
pub fn text_of<'a>(node: roxmltree::Node<'a, 'a>, namespace: &str, name: &str) -> Option<&'a str> {
    node.descendants().find(|n| n.has_tag_name((namespace, name))).and_then(|n| n.text()).map(str::trim)
}

/// Parses an answer, or says it is not XML.
pub fn parse(text: &str) -> Result<roxmltree::Document<'_>, ProbeError> {
    roxmltree::Document::parse(text).map_err(|e| ProbeError::Failed(format!("unreadable answer: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_is_the_username_token_profiles() {
        // The worked example of the ONVIF Application Programmer's Guide (5.12.2.1).
        let nonce = BASE64.decode("LKqI6G/AikKCQrN0zqZFlg==").expect("base64");
        assert_eq!(password_digest(&nonce, "2010-09-16T07:50:45Z", "userpassword"), "tuOSpGlFlIXsozq4HFNeeGeFLEI=");
    }

    #[test]
    fn envelopes_escape_what_they_carry_and_hold_the_token_only_with_credentials() {
        let creds = Credentials { username: "a<b&c".into(), password: "pw".into() };
        let text = envelope_with("<x/>", Some(&username_token(&creds, &[1; 16], "2026-01-01T00:00:00Z")));
        let doc = roxmltree::Document::parse(&text).expect("well-formed");
        assert_eq!(text_of(doc.root(), WSSE, "Username"), Some("a<b&c"));
        assert!(!text.contains(">pw<"), "the password itself is never sent: {text}");
        let plain = envelope("<x/>", None);
        assert!(!plain.contains("Security") && roxmltree::Document::parse(&plain).is_ok(), "{plain}");
    }

    #[test]
    fn faults_are_read_and_not_authorized_is_told_apart() {
        let fault_with = |subcode: &str| {
            format!(
                "<s:Envelope xmlns:s=\"{SOAP_ENV}\" xmlns:ter=\"http://www.onvif.org/ver10/error\"><s:Body><s:Fault>\
                 <s:Code><s:Value>s:Sender</s:Value><s:Subcode><s:Value>{subcode}</s:Value></s:Subcode></s:Code>\
                 <s:Reason><s:Text xml:lang=\"en\">Sender not authorized</s:Text></s:Reason></s:Fault></s:Body></s:Envelope>"
            )
        };
        assert_eq!(fault(&fault_with("ter:NotAuthorized")), Some((true, "Sender not authorized".into())));
        assert_eq!(fault(&fault_with("ter:ActionNotSupported")).map(|f| f.0), Some(false));
        assert_eq!(fault(&envelope("<x/>", None)), None);
        assert_eq!(escape("<'&\">"), "&lt;&apos;&amp;&quot;&gt;");
    }
}
