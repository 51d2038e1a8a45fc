//! A small Microsoft Graph client: app-only bearer token, `@odata.nextLink` paging, 429/503
//! throttling honoured through `Retry-After` with bounded retries, a timeout per request, and
//! errors that name the application permission a call needs and the fix.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use super::token::transport_reason;

/// How often a throttled or unavailable request is retried.
const MAX_RETRIES: u32 = 4;
/// The longest wait honoured from one `Retry-After`.
const RETRY_CAP: Duration = Duration::from_secs(30);
/// The most pages followed for one list.
pub const MAX_PAGES: usize = 50;

/// Why a Graph call gave no answer; each says what to do.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GraphError {
    /// 403: the app lacks an application permission.
    #[error(
        "the app may not read {what}: Graph answered 403 {code} ({message}); fix: add the application permission {permission} to the app registration and grant admin consent in the customer's tenant"
    )]
    Denied {
        /// What the call reads.
        what: &'static str,
        /// The permission it needs.
        permission: &'static str,
        /// Graph's error code.
        code: String,
        /// Graph's message.
        message: String,
    },
    /// 403 for a report that needs a premium licence in the tenant.
    #[error(
        "Graph refused to read {what} because the tenant has no Entra ID P1/P2 licence ({code}); fix: license the tenant with Entra ID P1 or P2"
    )]
    NeedsPremium {
        /// What the call reads.
        what: &'static str,
        /// Graph's error code.
        code: String,
    },
    /// Still throttled after the retries.
    #[error(
        "Graph kept throttling requests for {what} (HTTP {status}) after {MAX_RETRIES} retries; fix: none needed, the next run tries again"
    )]
    Throttled {
        /// What the call reads.
        what: &'static str,
        /// 429 or 503.
        status: u16,
    },
    /// The object does not exist.
    #[error("{what} does not exist in the tenant ({code})")]
    NotFound {
        /// What the call reads.
        what: &'static str,
        /// Graph's error code.
        code: String,
    },
    /// Any other HTTP error.
    #[error("Graph answered HTTP {status} {code} for {what}: {message}")]
    Http {
        /// What the call reads.
        what: &'static str,
        /// The status.
        status: u16,
        /// Graph's error code.
        code: String,
        /// Graph's message.
        message: String,
    },
    /// No answer: DNS, TCP, TLS, timeout.
    #[error(
        "cannot reach Microsoft Graph for {what}: {reason}; fix: check that the server reaches the Graph endpoint of the tenant's cloud"
    )]
    Transport {
        /// What the call reads.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// The answer is not what the reference describes.
    #[error("Graph's answer for {what} is not understood: {reason}")]
    Malformed {
        /// What the call reads.
        what: &'static str,
        /// Why.
        reason: String,
    },
}

/// One Graph call: the relative path (with query) and what it needs.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    /// Below the version segment, such as `/subscribedSkus`.
    pub path: &'a str,
    /// What it reads, for messages.
    pub what: &'static str,
    /// The least-privileged application permission it needs.
    pub permission: &'static str,
}

/// The items of a collection, and whether the page cap cut it short.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    /// The items read.
    pub items: Vec<Value>,
    /// True when [`MAX_PAGES`] pages were read and Graph still offered a next one: the items
    /// are not the whole collection, and whoever judges them must say so.
    pub truncated: bool,
}

impl Listing {
    /// What a result says about a cut-short list, or `None` when it is complete.
    pub fn truncation_note(&self) -> Option<String> {
        self.truncated.then(|| {
            format!(
                "only the first {MAX_PAGES} pages ({} items) were read; Graph offered more",
                self.items.len()
            )
        })
    }
}

/// Graph for one tenant with one token.
pub struct GraphClient<'a> {
    http: &'a reqwest::Client,
    /// `https://graph.microsoft.com/v1.0`.
    base: String,
    token: SecretString,
    timeout: Duration,
}

impl<'a> GraphClient<'a> {
    /// A client for `base_url` (without the version) with `token`.
    pub fn new(
        http: &'a reqwest::Client,
        base_url: &str,
        token: SecretString,
        timeout: Duration,
    ) -> Self {
        Self {
            http,
            base: format!("{}/v1.0", base_url.trim_end_matches('/')),
            token,
            timeout,
        }
    }

    /// One object.
    pub async fn get(&self, call: Call<'_>) -> Result<Value, GraphError> {
        let url = format!("{}{}", self.base, call.path);
        self.fetch(&url, call).await
    }

    /// Every item of a collection, following `@odata.nextLink` for at most [`MAX_PAGES`]
    /// pages; a list cut short says so in [`Listing::truncated`].
    pub async fn list(&self, call: Call<'_>) -> Result<Listing, GraphError> {
        let mut url = format!("{}{}", self.base, call.path);
        let mut items = Vec::new();
        for _ in 0..MAX_PAGES {
            let page = self.fetch(&url, call).await?;
            match page.get("value") {
                Some(Value::Array(values)) => items.extend(values.iter().cloned()),
                _ => {
                    return Err(GraphError::Malformed {
                        what: call.what,
                        reason: "no value array".into(),
                    });
                }
            }
            match page.get("@odata.nextLink").and_then(Value::as_str) {
                // The bearer token only ever goes to the Graph host it was meant for.
                Some(next) if next.starts_with(&format!("{}/", self.base)) => url = next.to_owned(),
                Some(_) => {
                    return Err(GraphError::Malformed {
                        what: call.what,
                        reason: "@odata.nextLink points away from the Graph endpoint".into(),
                    });
                }
                None => {
                    return Ok(Listing {
                        items,
                        truncated: false,
                    });
                }
            }
        }
        tracing::warn!(
            what = call.what,
            pages = MAX_PAGES,
            items = items.len(),
            "graph list cut short at the page cap"
        );
        Ok(Listing {
            items,
            truncated: true,
        })
    }

    /// The first page only (for `$top=1` probes).
    pub async fn first_page(&self, call: Call<'_>) -> Result<Vec<Value>, GraphError> {
        let page = self.get(call).await?;
        match page.get("value") {
            Some(Value::Array(values)) => Ok(values.clone()),
            _ => Err(GraphError::Malformed {
                what: call.what,
                reason: "no value array".into(),
            }),
        }
    }

    async fn fetch(&self, url: &str, call: Call<'_>) -> Result<Value, GraphError> {
        let mut attempt = 0;
        loop {
            let response = self
                .http
                .get(url)
                .bearer_auth(self.token.expose_secret())
                .header("Accept", "application/json")
                .timeout(self.timeout)
                .send()
                .await
                .map_err(|e| GraphError::Transport {
                    what: call.what,
                    reason: transport_reason(&e),
                })?;
            let status = response.status().as_u16();
            if matches!(status, 429 | 503 | 504) {
                if attempt >= MAX_RETRIES {
                    return Err(GraphError::Throttled {
                        what: call.what,
                        status,
                    });
                }
                let wait = retry_after(response.headers())
                    .unwrap_or(Duration::from_secs(1 << attempt))
                    .min(RETRY_CAP);
                tracing::debug!(
                    what = call.what,
                    status,
                    wait_ms = wait.as_millis() as u64,
                    "graph throttled; waiting"
                );
                tokio::time::sleep(wait).await;
                attempt += 1;
                continue;
            }
            let body: Value = response.json().await.unwrap_or(Value::Null);
            if (200..300).contains(&status) {
                return Ok(body);
            }
            let code = body["error"]["code"].as_str().unwrap_or("").to_owned();
            let message = body["error"]["message"].as_str().unwrap_or("").to_owned();
            return Err(match status {
                403 if code.contains("NonPremium") => GraphError::NeedsPremium {
                    what: call.what,
                    code,
                },
                401 | 403 => GraphError::Denied {
                    what: call.what,
                    permission: call.permission,
                    code,
                    message,
                },
                404 => GraphError::NotFound {
                    what: call.what,
                    code,
                },
                _ => GraphError::Http {
                    what: call.what,
                    status,
                    code,
                    message,
                },
            });
        }
    }
}

/// `Retry-After` in seconds (Graph sends delta-seconds).
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_only() {
        let mut headers = reqwest::header::HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert(reqwest::header::RETRY_AFTER, "7".parse().expect("header"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(7)));
        headers.insert(
            reqwest::header::RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().expect("header"),
        );
        assert_eq!(retry_after(&headers), None);
    }

    #[test]
    fn a_denied_call_names_its_permission_and_the_fix() {
        let e = GraphError::Denied {
            what: "the directory audit log",
            permission: "AuditLog.Read.All",
            code: "Authorization_RequestDenied".into(),
            message: "Insufficient privileges to complete the operation.".into(),
        };
        let text = e.to_string();
        assert!(
            text.contains("AuditLog.Read.All") && text.contains("grant admin consent"),
            "{text}"
        );
    }
}
