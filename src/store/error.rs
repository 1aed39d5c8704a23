//! What a store call can fail with, typed by what the caller should do next: the
//! client's batch is wrong (refuse it), the store is unreachable (retry later) or its
//! data cannot be read back (repair). Callers `match` on these; none reads the text.

/// A store failure. The message (Display) names the client, batch, update or version
/// concerned and says what to do; [`crate::Error::Store`] adds where the store is.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A batch came from a client the store does not know.
    #[error("client \"{client}\" is not registered; register it first")]
    NotRegistered { client: String },

    /// A batch named an update id that is not in the catalog: nothing was applied.
    #[error("client \"{client}\" batch {sequence}: update \"{id}\" is not in the catalog")]
    UnknownUpdate { client: String, sequence: u64, id: String },

    /// A batch's sequence number does not fit the store's (signed 64-bit) column.
    #[error("client {client:?} batch {sequence}: the sequence number is too large")]
    SequenceTooLarge { client: String, sequence: u64 },

    /// A catalog version newer than the newest one was asked for.
    #[error("catalog version {version} does not exist; the newest is {newest}")]
    UnknownVersion { version: u64, newest: u64 },

    /// A catalog delta was asked for backwards.
    #[error("a delta runs from an older version to a newer one; {from} is newer than {to}")]
    ReversedDelta { from: u64, to: u64 },

    /// The store was written by a newer patchops: it is refused rather than misread.
    #[error("the store's schema version {current} is newer than this patchops supports ({newest}); upgrade patchops")]
    SchemaTooNew { current: i64, newest: i64 },

    /// The store could not be opened or reached, or a statement failed (connection,
    /// I/O, lock, constraint): the call had no effect and may be retried.
    #[error("{message}")]
    Unavailable {
        message: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },

    /// Stored data that cannot be read back (a time out of range, JSON that does not
    /// parse, a compliance row with an unknown state).
    #[error("{0}")]
    Corrupt(String),
}

impl StoreError {
    /// A failed statement or connection, with what was being done.
    pub fn unavailable(message: impl Into<String>, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        StoreError::Unavailable { message: message.into(), source: Some(Box::new(source)) }
    }

    /// This failure, at the store `location` (file path, or URL without password).
    pub fn at(self, location: impl Into<String>) -> crate::Error {
        crate::Error::Store { location: location.into(), error: self }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_client_batch_and_update_and_the_location_comes_first() {
        let e = StoreError::UnknownUpdate { client: "web-01".into(), sequence: 2, id: "KB9".into() }.at("/var/p.db");
        assert_eq!(e.to_string(), r#"store /var/p.db: client "web-01" batch 2: update "KB9" is not in the catalog"#);
        let e = StoreError::NotRegistered { client: "ghost".into() };
        assert_eq!(e.to_string(), r#"client "ghost" is not registered; register it first"#);
        let io = std::io::Error::other("connection refused");
        let e = StoreError::unavailable("cannot apply batch 3: connection refused", io);
        assert_eq!(std::error::Error::source(&e).unwrap().to_string(), "connection refused");
    }
}
