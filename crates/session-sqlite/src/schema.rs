//! The `sessions` table as diesel sees it; kept by hand in step with
//! `migrations/sqlite`, whose comments explain the column encodings.

diesel::table! {
    /// One row per session, active or revoked.
    sessions (id) {
        /// The session id's 16 bytes, big-endian, so bytewise order is UUID order.
        id -> Binary,
        /// The account id's 16 bytes.
        account_id -> Binary,
        /// The token hash's 32 bytes.
        token_hash -> Binary,
        /// Microseconds since the Unix epoch, UTC.
        created_at -> BigInt,
        /// Microseconds since the Unix epoch, UTC; NULL while active.
        revoked_at -> Nullable<BigInt>,
        /// As normalised at creation.
        user_agent -> Nullable<Text>,
        /// The address in its canonical text form.
        ip -> Nullable<Text>,
        /// As given at creation.
        label -> Nullable<Text>,
        /// Why it was revoked, set with `revoked_at`; NULL while active and
        /// for sessions revoked before reasons were recorded.
        revocation_reason -> Nullable<Text>,
        /// Who revoked it (an API key's name), set with `revoked_at`; NULL
        /// while active and for revocations no key made.
        revoked_by -> Nullable<Text>,
    }
}
