//! Opaque cursors for paginated lists.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::domain::PageRequest;
use crate::error::Error;

/// Query parameters of a paginated list.
#[derive(Debug, Deserialize, IntoParams)]
pub struct PageQuery {
    /// The `next_cursor` of the previous page; omit for the first page.
    pub cursor: Option<String>,
    /// Items per page, 1 to 200 (default 50).
    pub limit: Option<u32>,
}

impl PageQuery {
    /// The store's page request, or a 400 for a cursor this server did not make.
    pub fn to_request(&self) -> Result<PageRequest, Error> {
        let limit = self.limit.unwrap_or(50);
        if !(1..=200).contains(&limit) {
            return Err(Error::invalid(format!(
                "limit {limit} is out of range; use 1 to 200"
            )));
        }
        let after = match &self.cursor {
            None => None,
            Some(cursor) => Some(decode(cursor).ok_or_else(|| {
                Error::invalid("the cursor is not one this server made; start again without it")
            })?),
        };
        Ok(PageRequest { after, limit })
    }
}

/// The cursor that continues after `last`.
pub fn encode(last: &uuid::Uuid) -> String {
    URL_SAFE_NO_PAD.encode(last.as_bytes())
}

fn decode(cursor: &str) -> Option<uuid::Uuid> {
    let bytes = URL_SAFE_NO_PAD.decode(cursor).ok()?;
    uuid::Uuid::from_slice(&bytes).ok()
}
